"""The connector contract every ESP implements, and the values connectors exchange.

Seed 003's pattern: identification (`id`, `name`, `category`), lifecycle (`connect`,
`disconnect`, `health_check`), `execute_action` ("send" a batch of messages), and
`on_webhook` (verify and normalise a provider's event webhook). A connector never decides
about retries or routing: it classifies each outcome (accepted, retryable, permanent) and
the send pipeline acts on it.
"""

from __future__ import annotations

import abc
import email.utils
import functools
import hmac
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import httpx
import orjson

from libs.common.emails import format_address
from services.delivery.domains.dkim import DkimSigner

# "unknown": the request may have reached the provider and no answer came (read timeout,
# connection dropped after sending): never resent, the message fails as outcome unknown.
Outcome = Literal["accepted", "retryable", "permanent", "unknown"]


SLOT = re.compile("\x1e([a-z0-9_]+)\x1f")


def slot(name: str) -> str:
    """The marker a batch template holds where a per-recipient value goes."""
    return f"\x1e{name}\x1f"


@functools.lru_cache(maxsize=1024)
def _domain_of(address: str) -> str:
    """The lower-cased domain of a From address (`Name <a@b>` or `a@b`); a batch asks it of
    every message, with the same few senders."""
    return email.utils.parseaddr(address)[1].rpartition("@")[2].lower()


def fill_slots(template: str, fmt: Callable[[str], str]) -> str:
    """Replace every slot with the provider's substitution syntax, e.g. `%recipient.x%`."""
    return SLOT.sub(lambda m: fmt(m.group(1)), template)


@dataclass(frozen=True)
class BatchTemplate:
    """A message as a template with per-recipient substitutions, for batch APIs
    (Mailgun recipient-variables, SendGrid personalizations). `html`/`text`/`subject` hold
    `slot(name)` markers; `values` the recipient's strings (already HTML-escaped for slots
    used in HTML, which are named `h_<name>`); `headers` may hold slots too."""

    key: tuple[str, ...]
    subject: str
    html: str | None
    text: str | None
    values: Mapping[str, str]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OutgoingEmail:
    """One rendered message, ready for a provider."""

    message_id: str
    tenant_id: str
    to: str
    from_: str
    subject: str
    html: str | None
    text: str | None
    headers: Mapping[str, str]  # Message-ID, List-Unsubscribe, List-Unsubscribe-Post, ...
    category: str
    tags: Sequence[str] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    reply_to: str | None = None
    template: BatchTemplate | None = None
    # Set for connectors that sign themselves (SMTP): the sender's verified domain key.
    dkim: DkimSigner | None = None

    @property
    def from_domain(self) -> str:
        return _domain_of(self.from_)

    @property
    def tenant_metadata(self) -> dict[str, str]:
        """The tenant's metadata without `pm_*` keys (ours at the ESP, e.g. pm_message_id;
        the API refuses them, this keeps older stored messages from overriding ours)."""
        return {k: v for k, v in self.metadata.items() if not k.lower().startswith("pm_")}

    @property
    def from_parts(self) -> tuple[str, str]:
        """(display name, address) of `from_` (a bare address or `Name <address>`)."""
        name, address = email.utils.parseaddr(self.from_)
        return name, address or self.from_

    @property
    def from_header(self) -> str:
        """The From header value, rebuilt with `formataddr` (quoting, RFC 2047, no CR/LF)."""
        name, address = self.from_parts
        return format_address(name, address) if name else address


@dataclass(frozen=True)
class SendResult:
    message_id: str
    outcome: Outcome
    provider_message_id: str | None = None
    reason: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class HealthStatus:
    healthy: bool
    detail: str = ""


@dataclass(frozen=True)
class NormalizedEvent:
    """A provider webhook event in our terms."""

    status: Literal[
        "delivered", "bounced", "complained", "opened", "clicked", "unsubscribed", "replied"
    ]
    event_key: str  # provider's id of this event (dedup of webhook retries)
    message_id: str | None = None  # ours, when the provider echoes our metadata
    provider_message_id: str | None = None
    recipient: str | None = None
    occurred_at: datetime | None = None
    bounce_type: Literal["hard", "soft"] | None = None
    reason: str | None = None
    url: str | None = None
    in_reply_to: str | None = None
    snippet: str | None = None


@dataclass(frozen=True)
class WebhookRequest:
    """What a connector needs to verify and parse a webhook delivery."""

    headers: Mapping[str, str]  # lower-case names
    body: bytes
    url: str

    def json_object(self, provider: str) -> dict[str, Any]:
        """The body as a JSON object, else WebhookRejected (answered 401, nothing applied)."""
        try:
            body = orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise WebhookRejected(f"{provider} webhook: body is not JSON") from exc
        if not isinstance(body, dict):
            raise WebhookRejected(f"{provider} webhook: body is not an object")
        return body


class WebhookRejected(Exception):
    """The webhook's signature, credentials or shape is wrong: answer 401, apply nothing."""


class ProviderError(Exception):
    """The provider call failed before any per-message outcome was known."""


class Connector(abc.ABC):
    """An ESP. `credentials` come from Vault; `client` is the process's shared HTTP client."""

    id: str
    name: str
    category: Literal["esp"] = "esp"
    batch_limit: int = 1

    def __init__(self, credentials: Mapping[str, Any], client: httpx.AsyncClient) -> None:
        self.credentials = dict(credentials)
        self.client = client

    async def connect(self) -> None:  # noqa: B027  (optional hook)
        """Connectors over HTTP keep no connection of their own (the client pools)."""

    async def disconnect(self) -> None:  # noqa: B027  (optional hook)
        """Nothing to release for HTTP connectors."""

    async def health_check(self) -> HealthStatus:
        return HealthStatus(True, "no health endpoint used")

    async def execute_action(self, action: str, params: Mapping[str, Any]) -> Any:
        if action == "send":
            return await self.send(list(params["messages"]))
        raise ValueError(f"{self.id}: unknown action {action!r}")

    @abc.abstractmethod
    async def send(self, messages: list[OutgoingEmail]) -> list[SendResult]:
        """Send up to `batch_limit` messages; one result per message, in order."""

    async def on_webhook(self, request: WebhookRequest) -> list[NormalizedEvent]:
        """Verify and normalise an event webhook; raise `WebhookRejected` when forged."""
        raise WebhookRejected(f"{self.id} has no event webhooks")

    def replay_token(self, request: WebhookRequest) -> tuple[str, int] | None:
        """(token, seconds) for providers whose signature does not cover the payload: the
        caller refuses a verified delivery whose token was seen within `seconds`."""
        return None


def all_results(
    messages: Sequence[OutgoingEmail], outcome: Outcome, reason: str, retry_after: float | None
) -> list[SendResult]:
    return [
        SendResult(m.message_id, outcome, reason=reason, retry_after=retry_after) for m in messages
    ]


def classify_status(status: int) -> Outcome:
    """Retryable: throttling (429), server errors, auth problems on our side (a fixed
    credential makes them succeed later); permanent: every other 4xx (validation)."""
    if status == 429 or status >= 500 or status in (401, 403, 408):
        return "retryable"
    return "permanent"


def retry_after_seconds(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(raw)
        return max(0.0, parsed.timestamp() - datetime.now(parsed.tzinfo).timestamp())


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


# The request never (completely) left: the provider cannot have acted on it.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteError,
             httpx.WriteTimeout, httpx.UnsupportedProtocol)  # fmt: skip


def network_failure(messages: Sequence[OutgoingEmail], exc: Exception) -> list[SendResult]:
    """Retry what never reached the provider; an unanswered request may have been accepted,
    and resending it could mail the recipient twice (at most once wins)."""
    if isinstance(exc, _NOT_SENT):
        return all_results(messages, "retryable", f"network: {type(exc).__name__}", None)
    return all_results(messages, "unknown", f"provider_outcome_unknown: {type(exc).__name__}", None)


class HttpApiConnector(Connector):
    """A provider reached over its HTTP API at `base_url` (the real provider's in production,
    a local fake in tests)."""

    def __init__(self, credentials: Mapping[str, Any], client: httpx.AsyncClient, base_url: str):
        super().__init__(credentials, client)
        self.base_url = base_url.rstrip("/")
