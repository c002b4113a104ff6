"""The event catalog: every fact published on `pm.events`, and its CloudEvents-style envelope.

One pydantic model per event type carries the `data`; `Envelope` carries the attributes
(`id` UUIDv7, `type`, `source`, `time`, `subject`, `tenant_id`, `mode`, `data`,
`specversion`); `tenant_id` and `mode` are extension attributes.
The routing key of an event is its type. Types are never renamed once published: add
fields (optional, with defaults) or add a new type instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from uuid import UUID

import orjson
import uuid_utils
from pydantic import BaseModel, ConfigDict, Field, ValidationError

SPEC_VERSION: Literal["1.0"] = "1.0"


def new_event_id() -> UUID:
    """A time-ordered UUIDv7, so ids sort by creation time."""
    return UUID(bytes=uuid_utils.uuid7().bytes)


class EventData(BaseModel):
    """Base of every event's `data`. Subclasses set `event_type`.

    Public types also carry their catalog entry (`GET /api/v1/events/types`, webhooks, the
    event stream), one line each: `summary` (one sentence), `read_scope` (the API scope that
    may read the entity; set once on a family base such as `_EmailEvent`) and `example`
    (sample data, merged over the examples of its bases: give only what the base lacks).
    """

    model_config = ConfigDict(frozen=True, extra="allow")
    event_type: ClassVar[str]
    public: ClassVar[bool] = True  # may be delivered to customer webhooks
    # Published ahead of routine facts waiting in the same outbox: work items that drive a
    # pipeline, and cache invalidations with a deadline (see `outbox`, `priority`).
    urgent: ClassVar[bool] = False
    summary: ClassVar[str] = ""
    read_scope: ClassVar[str | None] = None
    example: ClassVar[dict[str, Any]] = {}

    @classmethod
    def example_data(cls) -> dict[str, Any]:
        """The catalog sample of this type's data: the `example`s along the class hierarchy,
        validated by the model (so a sample can never drift from the schema)."""
        merged: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("example", {}))
        return cls.model_validate(merged).model_dump(mode="json", by_alias=True)


class Envelope(BaseModel):
    """CloudEvents attributes around one event's data (the `data` is kept as a dict)."""

    model_config = ConfigDict(frozen=True)

    id: UUID = Field(default_factory=new_event_id)
    type: str
    source: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subject: str | None = None
    tenant_id: str
    # "test" for sandbox data (made with a pm_test_ key): never leaves for a real ESP,
    # Stripe or a live webhook endpoint.
    mode: Literal["live", "test"] = "live"
    specversion: Literal["1.0"] = SPEC_VERSION
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]

    def payload(self) -> EventData:
        """The typed data model of this event."""
        return EVENT_TYPES[self.type].model_validate(self.data)

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @property
    def routing_key(self) -> str:
        return self.type


class UnknownEventType(ValueError):
    pass


EVENT_TYPES: dict[str, type[EventData]] = {}


def priority(event_type: str) -> int:
    """The outbox priority of an event type: 1 for `urgent` types, else 0."""
    cls = EVENT_TYPES.get(event_type)
    return 1 if cls is not None and cls.urgent else 0


def register(cls: type[EventData]) -> type[EventData]:
    if cls.event_type in EVENT_TYPES:
        raise ValueError(f"event type {cls.event_type} registered twice")
    EVENT_TYPES[cls.event_type] = cls
    return cls


def make_event(
    data: EventData,
    *,
    tenant_id: str,
    source: str,
    subject: str | None = None,
    mode: Literal["live", "test"] = "live",
) -> Envelope:
    return Envelope(
        type=data.event_type,
        source=source,
        subject=subject,
        tenant_id=tenant_id,
        mode=mode,
        data=data.model_dump(mode="json", by_alias=True),
    )


def uuid7_text() -> str:
    """A UUIDv7 as text: `new_event_id`'s generator without the stdlib UUID object, ten times
    cheaper, for bulk writes that make tens of thousands of ids (asyncpg takes text for
    uuid columns)."""
    return str(uuid_utils.uuid7())


def stamp_events(
    template: Envelope, items: Iterable[tuple[str, Mapping[str, Any]]]
) -> Iterator[dict[str, Any]]:
    """Envelopes in `model_dump(mode="json")` form stamped from one validated `template`: per
    `(subject, data)` item a fresh id, that subject, and the template's data updated with
    `data` (JSON-ready values of the template's own fields).

    For bulk writes through `outbox.enqueue_copy`: a pydantic model per event would cost more
    than the event's row. A generator, so a COPY streams the events as they are made.
    """
    base = template.model_dump(mode="json")
    base_data = base["data"]
    for subject, data in items:
        yield {**base, "id": uuid7_text(), "subject": subject, "data": {**base_data, **data}}


def parse_event(raw: bytes | str) -> Envelope:
    """Parse and validate an envelope and its typed data; raises ValueError when invalid."""
    try:
        env = Envelope.model_validate_json(raw)
    except ValidationError as exc:
        raise ValueError(f"invalid event envelope: {exc.error_count()} error(s)") from exc
    if env.type not in EVENT_TYPES:
        raise UnknownEventType(f"unknown event type {env.type!r}")
    env.payload()  # validates data against the catalog model
    return env


# ---------------------------------------------------------------- email.* (delivery)


class _EmailEvent(EventData):
    read_scope = "read_analytics"
    example = {
        "message_id": "msg_0192f5a7c3d84e1b",
        "to": "recipient@example.com",
        "campaign_id": "cmp_0192f5a7b2c1",
        "contact_id": "ct_0192f5a7a001",
        "step": 1,
        "occurred_at": "2026-12-01T09:15:30Z",
        "contact_tags": ["customer"],
    }
    message_id: str
    to: str
    campaign_id: str | None = None
    contact_id: str | None = None
    step: int | None = None
    occurred_at: datetime | None = None
    # Tags of the contact at the time of the event: webhook endpoints filter on them.
    contact_tags: list[str] = Field(default_factory=list)


@register
class EmailRequested(EventData):
    """A send was asked for (campaign runner → delivery). Internal: not sent to webhooks."""

    event_type = "email.requested"
    public = False
    urgent = True
    request_id: str
    to: str
    from_: str = Field(alias="from")
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    template_id: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)
    campaign_id: str | None = None
    contact_id: str | None = None
    step: int | None = None
    category: Literal["marketing", "transactional"] = "marketing"
    track_opens: bool = True
    track_clicks: bool = True
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    # Display name and Reply-To of the sender (campaign settings).
    from_name: str | None = None
    reply_to: str | None = None
    # "test" for sandbox (pm_test_ key) campaigns: never reaches a real ESP.
    mode: Literal["live", "test"] = "live"
    # The producer already personalised subject/html/text (the campaign runner renders them):
    # delivery sends them verbatim and never evaluates them as a template again, so contact
    # data such as `{{ 7*7 }}` stays text.
    prerendered: bool = False

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)


@register
class EmailQueued(_EmailEvent):
    event_type = "email.queued"
    summary = "An email was accepted and waits to be sent."


@register
class EmailSent(_EmailEvent):
    event_type = "email.sent"
    summary = "An email was handed to the sending provider."
    example = {
        "provider": "postmark",
        "provider_message_id": "b7bc2f4a-5c2a-4d1e",
        "message_id_header": "<msg_0192f5a7c3d84e1b@acme.example.com>",
        "from_email": "Alice <alice@acme.example.com>",
        "subject": "Quick question",
    }
    provider: str
    provider_message_id: str | None = None
    # The RFC 5322 Message-ID the message went out with (replies reference it), its sender
    # and subject: the inbox threads replies and answers them from these.
    message_id_header: str | None = None
    from_email: str | None = None
    subject: str | None = None
    # The `email.requested` that asked for this message, when one did.
    request_id: str | None = None


@register
class EmailDelivered(_EmailEvent):
    event_type = "email.delivered"
    summary = "The recipient's mail server accepted the email."
    example = {"provider": "postmark"}
    provider: str | None = None


@register
class EmailOpened(_EmailEvent):
    event_type = "email.opened"
    summary = "The recipient opened the email (tracking pixel or provider report)."
    example = {"user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)",
               "ip": "203.0.113.10", "unique": True, "open_count": 1}  # fmt: skip
    user_agent: str | None = None
    ip: str | None = None
    unique: bool | None = None  # first open of this message
    open_count: int | None = None  # opens of this message so far, this one included


@register
class EmailClicked(_EmailEvent):
    event_type = "email.clicked"
    summary = "The recipient clicked a tracked link."
    example = {"url": "https://example.com/offer", "unique": True,
               "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)"}  # fmt: skip
    url: str
    user_agent: str | None = None
    ip: str | None = None
    unique: bool | None = None  # first click of this URL in this message


@register
class EmailReplied(_EmailEvent):
    event_type = "email.replied"
    summary = "The recipient replied to the email (a human reply; stops the sequence)."
    example = {
        "reply_snippet": "Thanks, let's talk next week.",
        "thread_id": "thr_0192f5a7d0e14c2a9b3e",
        "inbox_message_id": "imsg_0192f5a7d0e14c2a9b3f",
    }
    reply_snippet: str | None = None
    # The inbox thread and message holding the reply (GET /api/v1/inbox/threads/{id}).
    thread_id: str | None = None
    inbox_message_id: str | None = None


@register
class EmailAutoReplied(_EmailEvent):
    event_type = "email.auto_replied"
    summary = "An automatic answer (out of office, auto-responder) came back to the email."
    example = {
        "reply_snippet": "I am out of the office until Monday.",
        "thread_id": "thr_0192f5a7d0e14c2a9b3e",
        "inbox_message_id": "imsg_0192f5a7d0e14c2a9b3f",
    }
    reply_snippet: str | None = None
    thread_id: str | None = None
    inbox_message_id: str | None = None


@register
class EmailBounced(_EmailEvent):
    event_type = "email.bounced"
    summary = "The email bounced (hard: the address is suppressed)."
    example = {"bounce_type": "hard", "reason": "550 5.1.1 no such user"}
    bounce_type: Literal["hard", "soft"]
    reason: str | None = None


@register
class EmailComplained(_EmailEvent):
    event_type = "email.complained"
    summary = "The recipient marked the email as spam (the address is suppressed)."
    example = {"feedback_type": "abuse"}
    feedback_type: str | None = None


@register
class EmailUnsubscribed(_EmailEvent):
    event_type = "email.unsubscribed"
    summary = "The recipient unsubscribed (the address is suppressed)."
    example = {"method": "one_click"}
    method: Literal["link", "one_click", "reply", "manual", "provider"] = "link"


@register
class EmailFailed(_EmailEvent):
    event_type = "email.failed"
    summary = "The email could not be sent and will not be retried."
    example = {"provider": "postmark", "reason": "rejected by provider"}
    provider: str | None = None
    reason: str


# ---------------------------------------------------------------- inbox_message.* (inbox)


@register
class InboxMessageReceived(EventData):
    event_type = "inbox_message.received"
    summary = "An inbound message (reply, auto-reply, bounce, unmatched mail) reached the inbox."
    read_scope = "read_inbox"
    example = {
        "inbox_message_id": "imsg_0192f5a7d0e14c2a9b3f",
        "thread_id": "thr_0192f5a7d0e14c2a9b3e",
        "folder": "inbox",
        "classification": "human_reply",
        "from_email": "recipient@example.com",
        "subject": "Re: Quick question",
        "message_id": "msg_0192f5a7c3d84e1b",
        "campaign_id": "cmp_0192f5a7b2c1",
        "contact_id": "ct_0192f5a7a001",
        "occurred_at": "2026-12-01T10:02:11Z",
    }
    inbox_message_id: str
    thread_id: str
    folder: Literal["inbox", "unmatched"]
    classification: str
    from_email: str | None = None
    subject: str | None = None
    # The sent message it answers (delivery's id), when threading found one.
    message_id: str | None = None
    campaign_id: str | None = None
    contact_id: str | None = None
    occurred_at: datetime | None = None


@register
class InboxFeedbackReceived(EventData):
    """A bounce (RFC 3464 DSN) or an unsubscribe request arrived by mail for one of
    delivery's messages (inbox → delivery, which applies it as it applies ESP reports).
    Internal: webhooks receive delivery's `email.bounced` / `email.unsubscribed`."""

    event_type = "inbox_feedback.received"
    public = False
    kind: Literal["bounce", "unsubscribe"]
    message_id: str
    inbox_message_id: str
    bounce_type: Literal["hard", "soft"] | None = None
    reason: str | None = None


# ---------------------------------------------------------------- campaign.* (campaigns)


class _CampaignEvent(EventData):
    read_scope = "manage_campaigns"
    example = {"campaign_id": "cmp_0192f5a7b2c1", "name": "Welcome Series"}
    campaign_id: str
    name: str | None = None


class _CampaignContentEvent(_CampaignEvent):
    """A campaign's first-step content as it would be sent (a template's parts already merged
    with inline overrides): delivery's read model for `send-bulk` with a `campaign_id`."""

    subject: str | None = None
    html: str | None = None
    text: str | None = None
    template_id: str | None = None
    from_email: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    category: Literal["marketing", "transactional"] = "marketing"
    track_opens: bool = True
    track_clicks: bool = True


@register
class CampaignCreated(_CampaignContentEvent):
    event_type = "campaign.created"
    summary = "A campaign was created (with its content)."


@register
class CampaignUpdated(_CampaignContentEvent):
    """A draft campaign was changed (PUT)."""

    event_type = "campaign.updated"
    summary = "A draft campaign was changed."


@register
class CampaignSent(_CampaignEvent):
    """Every recipient's first step has been handed to delivery."""

    event_type = "campaign.sent"
    summary = "Every recipient's first step of a campaign was handed to delivery."
    example = {"recipients": 250}
    recipients: int = 0


@register
class CampaignStarted(_CampaignEvent):
    event_type = "campaign.started"
    summary = "A campaign started sending to its recipients."
    example = {"recipients": 250}
    recipients: int = 0


@register
class CampaignPaused(_CampaignEvent):
    event_type = "campaign.paused"
    summary = "A campaign was paused."


@register
class CampaignResumed(_CampaignEvent):
    event_type = "campaign.resumed"
    summary = "A paused campaign was resumed."


@register
class CampaignCompleted(_CampaignEvent):
    event_type = "campaign.completed"
    summary = "Every recipient of a campaign finished its sequence."


@register
class CampaignCancelled(_CampaignEvent):
    event_type = "campaign.cancelled"
    summary = "A campaign was cancelled before it completed."


# ---------------------------------------------------------------- contact.* (campaigns)


class _ContactEvent(EventData):
    read_scope = "manage_contacts"
    example = {"contact_id": "ct_0192f5a7a001", "email": "recipient@example.com",
               "contact_tags": ["customer"]}  # fmt: skip
    contact_id: str
    email: str
    # The contact's tags: webhook endpoints filter on them.
    contact_tags: list[str] = Field(default_factory=list)


@register
class ContactCreated(_ContactEvent):
    event_type = "contact.created"
    summary = "A contact was created."


@register
class ContactUpdated(_ContactEvent):
    event_type = "contact.updated"
    summary = "A contact's fields or tags changed."
    example = {"changed": ["tags"]}
    changed: list[str] = Field(default_factory=list)


@register
class ContactDeleted(_ContactEvent):
    event_type = "contact.deleted"
    summary = "A contact was deleted."


# ---------------------------------------------------------------- analytics (campaigns)


@register
class AnalyticsUpdated(EventData):
    """A campaign's counters changed (at most one per campaign per minute)."""

    event_type = "analytics.updated"
    summary = "A campaign's counters changed (at most once a minute per campaign)."
    read_scope = "read_analytics"
    example = {"campaign_id": "cmp_0192f5a7b2c1", "name": "Q4", "overview": {"sent": 10}}
    campaign_id: str
    name: str | None = None
    # Distinct messages per email event type so far (sent, delivered, opened, clicked, ...).
    overview: dict[str, int] = Field(default_factory=dict)


class _ConversionEvent(EventData):
    read_scope = "read_analytics"
    example = {
        "conversion_id": "cnv_0192f5a7c3d8",
        "contact_id": "ct_0192f5a7a001",
        "goal": "demo_booked",
        "campaign_id": "cmp_0192f5a7b2c1",
    }
    conversion_id: str
    contact_id: str
    email: str | None = None
    goal: str
    value: float | None = None
    currency: str | None = None
    campaign_id: str | None = None
    occurred_at: datetime | None = None
    contact_tags: list[str] = Field(default_factory=list)


@register
class GoalConverted(_ConversionEvent):
    """A contact reached a goal (POST /api/v1/conversions), attributed to a campaign."""

    event_type = "goal.converted"
    summary = "A contact reached a goal, attributed to the last campaign that reached them."


@register
class RevenueRecorded(_ConversionEvent):
    """A conversion with a value: `value` in `currency`."""

    event_type = "revenue.recorded"
    summary = "A conversion with a value was recorded (value in currency)."
    example = {"value": 499.0, "currency": "USD"}


# ---------------------------------------------------------------- sending_settings.* (delivery)


@register
class SendingSettingsUpdated(EventData):
    """The tenant's default sender changed (delivery → campaigns' read model). Internal: a
    configuration change, not a fact customers subscribe to."""

    event_type = "sending_settings.updated"
    public = False
    default_from: str | None = None
    default_from_name: str | None = None
    default_reply_to: str | None = None


# ---------------------------------------------------------------- contact_import.* (campaigns)


@register
class ContactImportRequested(EventData):
    """An import job was accepted (campaigns API → campaigns worker). Internal work item."""

    event_type = "contact_import.requested"
    public = False
    urgent = True
    import_id: str


@register
class ContactImportCompleted(EventData):
    """An import job finished: its totals (row errors: GET /api/v1/contacts/imports/{id})."""

    event_type = "contact_import.completed"
    summary = "A contact import job finished; its totals (row errors on the import)."
    read_scope = "manage_contacts"
    example = {"import_id": "imp_0192f5a7", "total": 3, "created": 2, "updated": 0, "failed": 1}
    import_id: str
    total: int
    created: int
    updated: int
    failed: int


# ---------------------------------------------------------------- keys / tenants / billing


@register
class ApiKeyCreated(EventData):
    event_type = "api_key.created"
    public = False
    key_id: str
    lookup_id: str
    mode: Literal["live", "test"]
    scopes: list[str]


@register
class ApiKeyRevoked(EventData):
    event_type = "api_key.revoked"
    public = False
    urgent = True
    key_id: str
    lookup_id: str


@register
class ApiKeyRegenerated(EventData):
    """A key got a new secret; the old one stays valid until `previous_valid_until` (or not
    at all when it is null). Caches of the old secret must be dropped."""

    event_type = "api_key.regenerated"
    public = False
    urgent = True
    key_id: str
    lookup_id: str
    previous_lookup_id: str
    previous_valid_until: datetime | None = None


@register
class TenantCreated(EventData):
    event_type = "tenant.created"
    public = False
    name: str
    plan: str


@register
class TenantPlanChanged(EventData):
    event_type = "tenant.plan_changed"
    public = False
    old_plan: str | None
    new_plan: str
    reason: str | None = None


@register
class WebhookEndpointDisabled(EventData):
    event_type = "webhook.endpoint_disabled"
    summary = "A webhook endpoint was disabled after failing for too long (or answering 410)."
    read_scope = "manage_webhooks"
    example = {"endpoint_id": "ep_0192f5a7", "url": "https://example.com/hooks",
               "reason": "the endpoint answered 410 Gone"}  # fmt: skip
    endpoint_id: str
    url: str
    reason: str


# ---------------------------------------------------------------- domain.* (delivery)


class _DomainEvent(EventData):
    read_scope = "manage_domains"
    example = {"domain_id": "dom_0192f5a7c3d84e1b", "name": "mail.example.com"}
    domain_id: str
    name: str  # ASCII (punycode) form


@register
class DomainCreated(_DomainEvent):
    event_type = "domain.created"
    summary = "A sending domain was added; its DNS records wait to be published and verified."


@register
class DomainVerified(_DomainEvent):
    """Every required record (DKIM, SPF) was found: live mail may use the domain."""

    event_type = "domain.verified"
    summary = "Every required DNS record of a sending domain was found: live mail may use it."


@register
class DomainVerificationFailed(_DomainEvent):
    """A verification found required records missing or wrong; live mail may not use it."""

    event_type = "domain.verification_failed"
    summary = "A verification found required records missing or wrong: live mail may not use it."
    example = {"failed_records": ["spf"], "status": "failed"}
    failed_records: list[str] = Field(default_factory=list)
    status: Literal["pending", "verified", "failed"] = "failed"


class DomainRecordChange(BaseModel):
    model_config = ConfigDict(frozen=True)

    purpose: str
    host: str
    previous: str
    current: str


@register
class DomainHealthChanged(_DomainEvent):
    """A published record vanished, changed or came back since the previous check."""

    event_type = "domain.health_changed"
    summary = "A published DNS record of a sending domain vanished, changed or came back."
    example = {
        "status": "failed",
        "changes": [
            {
                "purpose": "spf",
                "host": "mail.example.com",
                "previous": "verified",
                "current": "failed",
            }
        ],
    }
    status: Literal["pending", "verified", "failed"]
    changes: list[DomainRecordChange] = Field(default_factory=list)


@register
class DomainDeleted(_DomainEvent):
    event_type = "domain.deleted"
    summary = "A sending domain and its DKIM keys were deleted."


@register
class StripeEventReceived(EventData):
    """A Stripe event was stored by billing (webhook or reconciler); billing's worker applies
    it. Internal: the work item of billing's Stripe pipeline, not sent to webhooks."""

    event_type = "stripe_event.received"
    public = False
    urgent = True
    stripe_event_id: str
    stripe_event_type: str
    mode: Literal["live", "test"] = "live"


PUBLIC_EVENT_TYPES: tuple[str, ...] = tuple(t for t, m in EVENT_TYPES.items() if m.public)


def read_scope_of(event_type: str) -> str | None:
    """The API scope that may read events of this type (webhooks, the event stream); None for
    internal types, which never leave the platform."""
    cls = EVENT_TYPES.get(event_type)
    return cls.read_scope if cls is not None and cls.public else None
