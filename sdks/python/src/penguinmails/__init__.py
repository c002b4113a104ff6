"""penguinmails: the official Python client of the PenguinMails API (sync and async, on httpx)."""

from ._client import AsyncPenguinMails, PenguinMails
from ._core import (
    DEFAULT_BASE_URL,
    AsyncPage,
    AsyncPager,
    RequestOptions,
    SyncPage,
    __version__,
)
from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PenguinMailsError,
    PermissionError,
    RateLimitError,
    ValidationError,
    WebhookVerificationError,
)
from ._generated import types
from ._stream import AsyncEventStream, EventStream, StreamEvent
from ._webhooks import sign_webhook, verify_webhook

__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AsyncEventStream",
    "AsyncPage",
    "AsyncPager",
    "AsyncPenguinMails",
    "AuthenticationError",
    "ConflictError",
    "EventStream",
    "NotFoundError",
    "PenguinMails",
    "PenguinMailsError",
    "PermissionError",
    "RateLimitError",
    "RequestOptions",
    "StreamEvent",
    "SyncPage",
    "ValidationError",
    "WebhookVerificationError",
    "__version__",
    "sign_webhook",
    "types",
    "verify_webhook",
]
