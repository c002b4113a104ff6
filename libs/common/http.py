"""The HTTP contract shared by the gateway and every service.

Owns the success and error envelopes (DESIGN.md §4), the error-code registry that
`docs/errors.md` documents, the `ApiError` family, the exception handlers that turn every
failure into an error envelope, and the request id that ties a response to its logs.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Generic, Literal, TypeVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.common.schema_rules import NUL_MESSAGE

__all__ = [
    "ERROR_CODES",
    "REQUEST_ID_HEADER",
    "ApiError",
    "BadRequest",
    "Conflict",
    "Deleted",
    "ErrorBody",
    "ErrorDetail",
    "ErrorEnvelope",
    "Forbidden",
    "InvalidJson",
    "NotFound",
    "Pagination",
    "RateLimited",
    "RequestIdMiddleware",
    "ResponseMeta",
    "ResponseModel",
    "ServiceUnavailable",
    "SuccessEnvelope",
    "Unauthorized",
    "UnhandledErrorMiddleware",
    "ValidationFailed",
    "error_response",
    "install_error_handlers",
    "new_request_id",
    "nul_in_request",
    "ok",
    "register_error_code",
    "request_id_var",
]

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-Id"

# The current request's id; read by error envelopes and log lines.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pm_request_id", default=None
)

T = TypeVar("T")


# --- error-code registry ---------------------------------------------------------------------

ERROR_CODES: dict[str, tuple[int, str]] = {}
"""Every error code a response may carry: code → (HTTP status, meaning). Documented in
`docs/errors.md`; extend it with `register_error_code`, never edit a published code."""

_CODE_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


def register_error_code(code: str, status: int, meaning: str) -> None:
    """Add `code` to the registry. Registering the same code twice must agree exactly,
    because clients branch on codes and a code's status never changes once published."""
    if not _CODE_PATTERN.fullmatch(code):
        raise ValueError(f"error code {code!r} is not snake_case")
    if not 400 <= status <= 599:
        raise ValueError(f"error code {code!r}: status {status} is not a 4xx/5xx status")
    existing = ERROR_CODES.get(code)
    if existing is not None and existing != (status, meaning):
        raise ValueError(f"error code {code!r} is already registered as {existing}")
    ERROR_CODES[code] = (status, meaning)


register_error_code("bad_request", 400, "The request is malformed.")
register_error_code("invalid_json", 400, "The request body is not valid JSON.")
register_error_code("unauthorized", 401, "Authentication is missing or invalid.")
register_error_code("forbidden", 403, "The caller may not perform this action.")
register_error_code("not_found", 404, "The requested resource does not exist.")
register_error_code("method_not_allowed", 405, "The HTTP method is not supported on this path.")
register_error_code("not_acceptable", 406, "No representation matches the Accept header.")
register_error_code("conflict", 409, "The request conflicts with the current state.")
register_error_code("payload_too_large", 413, "The request body is too large.")
register_error_code(
    "unsupported_media_type", 415, "The request body's media type is not supported."
)
register_error_code("validation_error", 422, "The request failed validation.")
register_error_code("rate_limited", 429, "Too many requests.")
register_error_code("internal_error", 500, "An unexpected error occurred.")
register_error_code("bad_gateway", 502, "An upstream service answered with an error.")
register_error_code("service_unavailable", 503, "The service is temporarily unavailable.")
register_error_code("gateway_timeout", 504, "An upstream service did not answer in time.")

# Statuses that Starlette/FastAPI raise as HTTPException, mapped to our codes.
_HTTP_STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


# --- envelopes -------------------------------------------------------------------------------


def _is_none(value: Any) -> bool:
    return value is None


def _omitted_when_none() -> Any:
    # Unset page fields are left out rather than sent as null, in `ok()` and response models.
    return Field(default=None, exclude_if=_is_none)


class Pagination(BaseModel):
    """Page information for list responses: limit/offset, cursor, or both."""

    limit: int | None = _omitted_when_none()
    offset: int | None = _omitted_when_none()
    total: int | None = _omitted_when_none()
    next_cursor: str | None = _omitted_when_none()
    has_more: bool | None = _omitted_when_none()


class ResponseMeta(BaseModel):
    request_id: str | None
    # A string, not a datetime, so the value `ok()` wrote is not re-serialized differently.
    timestamp: str = Field(json_schema_extra={"format": "date-time"})
    pagination: Pagination | None = _omitted_when_none()


class SuccessEnvelope(BaseModel, Generic[T]):
    """`{"success": true, "data": ..., "meta": {...}}`; use `SuccessEnvelope[Model]` as a
    route's `response_model`."""

    success: Literal[True] = True
    data: T
    meta: ResponseMeta


STRICT_RESPONSE_FIELDS = True
"""Outside production, a response model refuses a field it does not declare (a 500 in tests
and dev), so a model can never silently drop what the service layer produces; production
leaves the extra field out instead. `create_app` sets it from the settings' environment."""


class ResponseModel(BaseModel):
    """Base of every response model (every `data` a route answers with)."""

    @model_validator(mode="before")
    @classmethod
    def _declares_every_field(cls, data: Any) -> Any:
        if STRICT_RESPONSE_FIELDS and isinstance(data, Mapping):
            known = _known_fields(cls)
            unknown = [k for k in data if k not in known]
            if unknown:
                raise ValueError(f"{cls.__name__} does not declare {sorted(unknown)}")
        return data


def _known_fields(cls: type[BaseModel]) -> frozenset[str]:
    known: frozenset[str] | None = cls.__dict__.get("_pm_known_fields")
    if known is None:
        names = set(cls.model_fields)
        for info in cls.model_fields.values():
            names |= {a for a in (info.alias, info.validation_alias) if isinstance(a, str)}
        known = frozenset(names)
        type.__setattr__(cls, "_pm_known_fields", known)
    return known


class Deleted(ResponseModel):
    """What a DELETE answers with when it answers with a body."""

    id: str
    deleted: Literal[True] = True


class ErrorDetail(BaseModel):
    """One problem with the request; `field` is a dotted location such as `body.email`."""

    model_config = ConfigDict(frozen=True)

    field: str | None = None
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)
    request_id: str | None = None


class ErrorEnvelope(BaseModel):
    """`{"success": false, "error": {...}}`; document it with
    `responses={404: {"model": ErrorEnvelope}}`."""

    success: Literal[False] = False
    error: ErrorBody


def _utc_timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ok(
    data: Any,
    *,
    request_id: str | None = None,
    pagination: Pagination | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The success envelope around `data` (models, datetimes, UUIDs become JSON values)."""
    meta: dict[str, Any] = {
        "request_id": request_id if request_id is not None else request_id_var.get(),
        "timestamp": _utc_timestamp(),
    }
    if pagination is not None:
        page = pagination if isinstance(pagination, Pagination) else Pagination(**pagination)
        meta["pagination"] = page.model_dump()
    return {"success": True, "data": jsonable_encoder(data), "meta": meta}


# --- errors ----------------------------------------------------------------------------------


class ApiError(Exception):
    """An error the client should see. The status comes from the code's registry entry, so a
    code always travels with the same status; the message defaults to the code's meaning."""

    code: str = "internal_error"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        details: Iterable[ErrorDetail | Mapping[str, Any]] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        resolved = code or type(self).code
        if resolved not in ERROR_CODES:
            # Fail loudly: an unregistered code would be missing from docs/errors.md.
            raise ValueError(f"error code {resolved!r} is not registered")
        status, meaning = ERROR_CODES[resolved]
        self.code = resolved
        self.status_code: int = status
        self.message: str = message or meaning
        self.details: list[ErrorDetail] = [
            d if isinstance(d, ErrorDetail) else ErrorDetail.model_validate(d) for d in details
        ]
        self.headers: dict[str, str] | None = dict(headers) if headers else None
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class BadRequest(ApiError):
    code = "bad_request"


class InvalidJson(ApiError):
    code = "invalid_json"


class Unauthorized(ApiError):
    code = "unauthorized"


class Forbidden(ApiError):
    code = "forbidden"


class NotFound(ApiError):
    code = "not_found"


class Conflict(ApiError):
    code = "conflict"


class ValidationFailed(ApiError):
    code = "validation_error"


class RateLimited(ApiError):
    code = "rate_limited"


class ServiceUnavailable(ApiError):
    code = "service_unavailable"


def _envelope_response(
    status: int,
    code: str,
    message: str,
    details: Sequence[ErrorDetail] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    request_id = request_id_var.get()
    body = ErrorEnvelope(
        error=ErrorBody(code=code, message=message, details=list(details), request_id=request_id)
    )
    response_headers = dict(headers or {})
    if request_id is not None:
        response_headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=response_headers)


def error_response(error: ApiError) -> JSONResponse:
    """The envelope response for `error`; for middlewares that answer without raising."""
    return _envelope_response(
        error.status_code, error.code, error.message, error.details, error.headers
    )


def _dotted(loc: Sequence[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    broken_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if broken_json is not None:
        reason = (broken_json.get("ctx") or {}).get("error", "JSON decode error")
        position = broken_json.get("loc", ("body",))[-1]
        return error_response(
            InvalidJson(
                details=[ErrorDetail(field="body", message=f"{reason} (at character {position})")]
            )
        )
    details = [ErrorDetail(field=_dotted(e.get("loc", ())), message=str(e["msg"])) for e in errors]
    return error_response(ValidationFailed(details=details))


async def _http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = _HTTP_STATUS_CODES.get(status) or ("internal_error" if status >= 500 else "bad_request")
    meaning = ERROR_CODES[code][1]
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    # Keep a message the raiser wrote on purpose; replace Starlette's bare status phrase.
    detail = exc.detail if isinstance(exc.detail, str) else ""
    message = detail if detail and detail != phrase else meaning
    headers = exc.headers
    if status == 405:
        # Starlette's Allow names the methods of the first route matching the path only
        # (`GET /contacts` before `POST /contacts`): list every route's for this path.
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return _envelope_response(status, code, message, headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    from fastapi.routing import iter_route_contexts
    from starlette.routing import compile_path

    methods: set[str] = set()
    template: str | None = None
    # Included routers are flattened lazily: walk the effective routes, as FastAPI routes.
    # The first route matching the path fixes its template (`/contacts/import`, not
    # `/contacts/{contact_id}`): the methods are those of every route with that template.
    for route in iter_route_contexts(getattr(request.app, "routes", [])):
        route_methods = getattr(route, "methods", None)
        if not route_methods or not route.path:
            continue
        if template is None:
            regex, _, _ = compile_path(route.path)
            if not regex.match(request.url.path):
                continue
            template = route.path
        if route.path == template:
            methods |= set(route_methods)
    order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    return [m for m in order if m in methods] + sorted(methods - set(order))


# A dependency that is down or restarting (Postgres refusing connections or shutting down,
# Redis or the broker gone) is a 503 the client may retry, not a 500: found by `make chaos`
# (a Postgres restart under load answered 500 from every route that opened a connection).
_DEPENDENCY_DOWN_MODULES = ("asyncpg", "redis", "aiormq", "aio_pika", "pamqp", "hvac")
_DEPENDENCY_DOWN_NAMES = (
    "CannotConnectNowError",  # asyncpg: the server is starting up or shutting down
    "TooManyConnectionsError",  # asyncpg: every connection slot of the server is taken
    "AdminShutdownError",
    "ConnectionDoesNotExistError",
    "ConnectionFailureError",
    "InterfaceError",  # asyncpg: pool closing or connection lost
    "ConnectionError",  # redis
    "TimeoutError",
    "AMQPConnectionError",
    "ChannelInvalidStateError",
    "VaultDown",
)


def dependency_unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or its cause) says a dependency is unreachable rather than a bug."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if isinstance(current, (ConnectionError, TimeoutError)):  # refused, reset, timed out
            return True
        module = type(current).__module__.partition(".")[0]
        if module in _DEPENDENCY_DOWN_MODULES and any(
            cls.__name__ in _DEPENDENCY_DOWN_NAMES for cls in type(current).__mro__
        ):
            return True
        current, seen = current.__cause__ or current.__context__, seen + 1
    return False


# Postgres text and jsonb cannot hold U+0000 (SQLSTATE 22021 character_not_in_repertoire for
# text, 22P05 untranslatable_character for jsonb): a NUL anywhere in a filter, a body field or
# a free-form JSON object is the client's error, refused where the database refuses it rather
# than by a check on every field of every route. Found by the contract fuzz
# (`GET /emails?recipient=%00` answered 500).
_TEXT_CANNOT_HOLD_SQLSTATES = frozenset({"22021", "22P05"})
NUL_REFUSED = f"Text {NUL_MESSAGE}."


# A NUL in JSON text: the escape `\u0000` after an even run of backslashes (`\\u0000` is
# a backslash and the letters u0000). Raw JSON cannot hold a literal NUL byte.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def nul_in_request(
    query: Iterable[tuple[str, str]], body: bytes | None, media_type: str
) -> ErrorDetail | None:
    """Where a request's text holds U+0000, which no stored text may (the gateway refuses it
    for every route before forwarding): the first query parameter, or the JSON body."""
    for name, value in query:
        if "\x00" in name or "\x00" in value:
            return ErrorDetail(field=f"query.{name.replace(chr(0), '')}", message=NUL_REFUSED)
    json_body = body or b"" if "json" in media_type or not media_type else b""
    # The substring test first: a body without the escape (almost every one) costs one scan.
    if b"\\u0000" in json_body and _JSON_NUL.search(json_body):
        return ErrorDetail(field="body", message=NUL_REFUSED)
    return None


def _text_cannot_hold(exc: BaseException) -> bool:
    """Whether `exc` (or its cause) is Postgres refusing a character of the request's text."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 5:
        if getattr(current, "sqlstate", None) in _TEXT_CANNOT_HOLD_SQLSTATES:
            return True
        current, seen = current.__cause__ or current.__context__, seen + 1
    return False


async def _unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    if _text_cannot_hold(exc):
        return error_response(ValidationFailed(details=[ErrorDetail(message=NUL_REFUSED)]))
    if dependency_unavailable(exc):
        logger.warning(
            "dependency unavailable in %s %s: %s: %s",
            request.method,
            request.url.path,
            type(exc).__name__,
            exc,
        )
        return _envelope_response(
            503,
            "service_unavailable",
            ERROR_CODES["service_unavailable"][1],
            headers={"Retry-After": "1"},
        )
    logger.error(
        "unhandled error in %s %s",
        request.method,
        request.url.path,
        exc_info=exc,
    )
    return _envelope_response(500, "internal_error", ERROR_CODES["internal_error"][1])


class UnhandledErrorMiddleware:
    """Turns an exception that no handler took into a 500 `internal_error` envelope.

    Starlette answers such exceptions in its outermost middleware, i.e. outside the
    request-id middleware, so the response would lose its `X-Request-Id`; catching them
    here, innermost, keeps the request id and lets access logs and metrics see the 500.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                # Too late to change the response; let the server close the connection.
                raise
            response = await _unhandled_error_handler(Request(scope), exc)
            await response(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Make every failure of `app` an error envelope. Call before adding other middlewares so
    the catch-all sits innermost."""
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    # Safety net for failures in outer middlewares, which the catch-all cannot see.
    app.add_exception_handler(Exception, _unhandled_error_handler)
    app.add_middleware(UnhandledErrorMiddleware)


# --- request id ------------------------------------------------------------------------------

_REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")
_REQUEST_ID_HEADER_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")


def new_request_id() -> str:
    return f"req_{uuid.uuid4().hex}"


class RequestIdMiddleware:
    """Adopts the caller's `X-Request-Id` when it is safe to log and echo, else makes one;
    exposes it as `request_id_var` and returns it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = self._incoming(scope) or new_request_id()

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            request_id_var.reset(token)

    @staticmethod
    def _incoming(scope: Scope) -> str | None:
        for name, value in scope.get("headers", ()):
            if name == _REQUEST_ID_HEADER_KEY:
                candidate = value.decode("latin-1")
                return candidate if _REQUEST_ID_PATTERN.fullmatch(candidate) else None
        return None
