"""Errors: one class per kind of failure, each with the API's `code`, `message` and request id."""

from __future__ import annotations

from typing import Any

import httpx


class PenguinMailsError(Exception):
    """Base class of every error the SDK raises."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "error",
        details: list[dict[str, Any]] | None = None,
        request_id: str | None = None,
        headers: httpx.Headers | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details or []
        self.request_id = request_id
        self.headers = headers
        self.body = body

    def __str__(self) -> str:
        rid = f" (request {self.request_id})" if self.request_id else ""
        return f"{self.code}: {self.message}{rid}"


class ValidationError(PenguinMailsError):
    """400 / 422: the request was invalid; `details` names the fields."""


class AuthenticationError(PenguinMailsError):
    """401: missing, invalid, expired or revoked credentials."""


class PermissionError(PenguinMailsError):
    """403: the key or user lacks the scope (or the plan) for this operation."""


class NotFoundError(PenguinMailsError):
    """404: no such object (or another tenant's)."""


class ConflictError(PenguinMailsError):
    """409: conflicts with the current state (a duplicate, an idempotency key reused...)."""


class RateLimitError(PenguinMailsError):
    """429 after the retries: `retry_after` is how long to wait, in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class APIError(PenguinMailsError):
    """Any other error answer of the API (5xx after the retries, ...)."""


class APIConnectionError(PenguinMailsError):
    """The API could not be reached after the retries."""


class APITimeoutError(APIConnectionError):
    """No answer within the timeout, after the retries."""


class WebhookVerificationError(PenguinMailsError):
    """A webhook whose signature, timestamp or headers do not verify."""


_BY_STATUS: dict[int, type[PenguinMailsError]] = {
    400: ValidationError,
    422: ValidationError,
    401: AuthenticationError,
    403: PermissionError,
    404: NotFoundError,
    409: ConflictError,
}


def error_for(
    status: int, body: Any, headers: httpx.Headers, retry_after: float | None
) -> PenguinMailsError:
    err = body.get("error") if isinstance(body, dict) else None
    err = err if isinstance(err, dict) else {}
    kw: dict[str, Any] = {
        "status": status,
        "code": err.get("code") if isinstance(err.get("code"), str) else f"http_{status}",
        "details": err.get("details") if isinstance(err.get("details"), list) else [],
        "request_id": err.get("request_id") or headers.get("x-request-id"),
        "headers": headers,
        "body": body,
    }
    message = err.get("message") if isinstance(err.get("message"), str) else f"HTTP {status}"
    if status == 429:
        return RateLimitError(message, retry_after=retry_after, **kw)
    return _BY_STATUS.get(status, APIError)(message, **kw)
