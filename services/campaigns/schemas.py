"""Request and response models of the campaigns API, and the email address rule they share
with the bulk importer."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from libs.common.emails import EMAIL_SCHEMA, InvalidEmail, check_display_name, normalize_email
from libs.common.http import ResponseModel
from libs.common.schema_rules import (
    FREE_FORM_JSON,
    NON_EMPTY_TEXT,
    TAG_ITEM,
    any_of,
    exactly_one,
    json_storable,
    not_nullable,
    present,
    refuse_nul,
    storable_json,
)
from libs.common.timestamps import Timestamp
from services.campaigns.scheduling import DAY_NAMES, DayName

ContactStatus = Literal["active", "unsubscribed", "bounced", "complained"]
CampaignStatus = Literal["draft", "scheduled", "running", "paused", "completed", "cancelled"]

MAX_TAGS = 100
MAX_TAG_CHARS = 64
MAX_NAME_CHARS = 200
MAX_CUSTOM_FIELDS_BYTES = 16 * 1024
MAX_TEMPLATE_CHARS = 512 * 1024


def check_email(value: Any) -> str:
    """The address, trimmed and normalised (`libs.common.emails`, the rule of every service);
    raises ValueError naming what is wrong."""
    if not isinstance(value, str):
        raise ValueError("email must be a string")
    email = value.strip()
    if not email:
        raise ValueError("email is required")
    try:
        return normalize_email(email)
    except InvalidEmail as exc:
        raise ValueError(f"email is not a valid address: {exc}") from exc


def check_tags(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError("tags must be a list of strings")
    out: list[str] = []
    for tag in value:
        if not isinstance(tag, str) or not tag.strip():
            raise ValueError("each tag must be a non-empty string")
        tag = refuse_nul(tag.strip(), "a tag")
        if len(tag) > MAX_TAG_CHARS:
            raise ValueError(f"a tag is longer than {MAX_TAG_CHARS} characters")
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise ValueError(f"more than {MAX_TAGS} tags")
    return out


def check_custom_fields(value: Any) -> dict[str, Any]:
    custom_fields_json(value)
    return value if value is not None else {}


def custom_fields_json(value: Any) -> bytes:
    """The custom fields as JSON, after the size check that needs that serialisation anyway."""
    if value is None:
        return b"{}"
    if not isinstance(value, dict):
        raise ValueError("custom_fields must be a JSON object")
    encoded = storable_json(value)
    if len(encoded) > MAX_CUSTOM_FIELDS_BYTES:
        raise ValueError(f"custom_fields is larger than {MAX_CUSTOM_FIELDS_BYTES} bytes")
    return encoded


def check_name(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a string")
    value = refuse_nul(value.strip(), field)
    if len(value) > MAX_NAME_CHARS:
        raise ValueError(f"{field} is longer than {MAX_NAME_CHARS} characters")
    return value or None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- contacts


# The rule check_email applies, stated in the spec (`libs.common.emails.Email` does the same).
_EMAIL_FORMAT: Any = EMAIL_SCHEMA
# An address field checked by `check_email` (a before-validator), typed as the spec states it.
EmailText = Annotated[str, WithJsonSchema(EMAIL_SCHEMA)]


class ContactCreate(_Strict):
    email: str = Field(json_schema_extra=_EMAIL_FORMAT)
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    tags: list[str] = Field(
        default_factory=list, json_schema_extra={"items": TAG_ITEM, "maxItems": MAX_TAGS}
    )
    custom_fields: dict[str, Any] = Field(default_factory=dict, description=FREE_FORM_JSON)
    status: ContactStatus = "active"

    _email = field_validator("email", mode="before")(check_email)
    _tags = field_validator("tags", mode="before")(check_tags)
    _custom = field_validator("custom_fields", mode="before")(check_custom_fields)

    @field_validator("first_name", "last_name", "company", mode="before")
    @classmethod
    def _names(cls, value: Any, info: Any) -> str | None:
        return check_name(value, info.field_name)


def _email_not_nullable(schema: dict[str, Any]) -> None:
    not_nullable(schema)
    schema.update(_EMAIL_FORMAT)


def _tags_not_nullable(schema: dict[str, Any]) -> None:
    not_nullable(schema)
    schema.update(items=TAG_ITEM, maxItems=MAX_TAGS)


class ContactUpdate(_Strict):
    """PUT body: only the fields present change (`custom_fields` replaces the whole object)."""

    # Absent: unchanged; null is refused for these four (the spec says so: not nullable).
    email: str | None = Field(default=None, json_schema_extra=_email_not_nullable)
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    tags: list[str] | None = Field(
        default=None,
        json_schema_extra=_tags_not_nullable,
    )
    custom_fields: dict[str, Any] | None = Field(
        default=None, description=FREE_FORM_JSON, json_schema_extra=not_nullable
    )
    status: ContactStatus | None = Field(default=None, json_schema_extra=not_nullable)

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, value: Any) -> str | None:
        return None if value is None else check_email(value)

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> list[str] | None:
        return None if value is None else check_tags(value)

    @field_validator("custom_fields", mode="before")
    @classmethod
    def _custom(cls, value: Any) -> dict[str, Any] | None:
        return None if value is None else check_custom_fields(value)

    @field_validator("first_name", "last_name", "company", mode="before")
    @classmethod
    def _names(cls, value: Any, info: Any) -> str | None:
        return check_name(value, info.field_name)


class Contact(ResponseModel):
    id: UUID
    email: str
    first_name: str | None
    last_name: str | None
    company: str | None
    tags: list[str]
    custom_fields: dict[str, Any]
    status: ContactStatus
    created_at: datetime
    updated_at: datetime


class ImportRowError(ResponseModel):
    row: int
    email: str | None = None
    field: str | None = None
    message: str


class ImportReport(ResponseModel):
    received: int
    created: int
    updated: int
    failed: int
    errors: list[ImportRowError]


# ---------------------------------------------------------------- templates


def _check_source(value: str | None) -> str | None:
    if value is not None and len(value) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"longer than {MAX_TEMPLATE_CHARS} characters")
    return value


TEMPLATE_KEY_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
# A campaign's `content.template_id`: a template's id (a hyphenated uuid) or its key.
TEMPLATE_REF_PATTERN = (
    r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[A-Za-z][A-Za-z0-9_.-]{0,63})$"
)


class TemplateCreate(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=any_of(present("html", NON_EMPTY_TEXT), present("text", NON_EMPTY_TEXT)),
    )

    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    # A tenant-chosen name campaigns may use instead of the id (`welcome_template`).
    key: str | None = Field(default=None, pattern=TEMPLATE_KEY_PATTERN)
    subject: str = Field(min_length=1, max_length=998)
    html: str | None = None
    text: str | None = None
    # Sample values used by preview when no contact or data is given.
    variables: dict[str, Any] = Field(default_factory=dict, description=FREE_FORM_JSON)

    _json = field_validator("variables")(json_storable)

    _sources = field_validator("html", "text")(_check_source)

    @model_validator(mode="after")
    def _has_body(self) -> TemplateCreate:
        if not self.html and not self.text:
            raise ValueError("a template needs html or text")
        return self


class TemplateUpdate(_Strict):
    # name, subject and variables may be left out, never null (`update_template` refuses it).
    name: str | None = Field(
        default=None, min_length=1, max_length=MAX_NAME_CHARS, json_schema_extra=not_nullable
    )
    key: str | None = Field(default=None, pattern=TEMPLATE_KEY_PATTERN)
    subject: str | None = Field(
        default=None, min_length=1, max_length=998, json_schema_extra=not_nullable
    )
    html: str | None = None
    text: str | None = None
    variables: dict[str, Any] | None = Field(
        default=None, description=FREE_FORM_JSON, json_schema_extra=not_nullable
    )

    _json = field_validator("variables")(json_storable)

    _sources = field_validator("html", "text")(_check_source)


class Template(ResponseModel):
    id: UUID
    name: str
    key: str | None = None
    subject: str
    html: str | None
    text: str | None
    variables: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class PreviewRequest(_Strict):
    """Render with a stored contact, or with `data`; neither: the template's `variables`."""

    contact_id: UUID | None = None
    data: dict[str, Any] | None = Field(default=None, description=FREE_FORM_JSON)

    _json = field_validator("data")(json_storable)


class Preview(ResponseModel):
    subject: str
    html: str | None
    text: str | None


# ---------------------------------------------------------------- campaigns


class CampaignContent(_Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=any_of(
            present("html", NON_EMPTY_TEXT),
            present("text", NON_EMPTY_TEXT),
            present("template_id", NON_EMPTY_TEXT),
        ),
    )

    html: str | None = None
    text: str | None = None
    # A template's id, or its `key`. Inline html/text given beside it override that part.
    template_id: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=TEMPLATE_REF_PATTERN
    )

    _sources = field_validator("html", "text")(_check_source)

    @field_validator("template_id")
    @classmethod
    def _ref(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(UUID(value))
        except ValueError:
            pass
        if not re.fullmatch(TEMPLATE_KEY_PATTERN, value):
            raise ValueError("template_id must be a template id (uuid) or key")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> CampaignContent:
        if self.template_id is None and not self.html and not self.text:
            raise ValueError("content needs html, text or a template_id")
        return self


class FollowUp(_Strict):
    """A later step: sent `delay_days` after the previous step, to recipients who have not
    replied. Without a subject it is sent as a reply: `Re: <first subject>`."""

    delay_days: float = Field(gt=0, le=365, strict=True)
    subject: str | None = Field(default=None, min_length=1, max_length=998)
    content: CampaignContent


class RecipientsByContacts(_Strict):
    """The contacts named by id. (`contact_ids` and `tags` together: 422.)"""

    contact_ids: list[UUID] = Field(max_length=100_000)
    match: Literal["any", "all"] = "any"


class RecipientsByTags(_Strict):
    """The active contacts having any (`match: any`) or all (`match: all`) of the tags."""

    tags: list[str] = Field(
        min_length=1, json_schema_extra={"items": TAG_ITEM, "maxItems": MAX_TAGS}
    )
    match: Literal["any", "all"] = "any"

    _tags = field_validator("tags", mode="before")(check_tags)


# A recipients spec: exactly one of `contact_ids` or `tags`. Two models (each refusing the
# other's field) rather than one with a oneOf: the spec states "exactly one" as a union of
# plain objects, which every generator takes (openapi-python-client drops an object whose
# anyOf/oneOf sits inside another union).
Recipients = RecipientsByContacts | RecipientsByTags


class InlineRecipient(_Strict):
    """Seed 004's recipient: the contact is upserted by email; `personalization` is given to
    the template (beside the contact's fields, which it overrides) for this campaign."""

    email: EmailText
    personalization: dict[str, Any] = Field(default_factory=dict, description=FREE_FORM_JSON)

    _email = field_validator("email", mode="before")(check_email)
    _custom = field_validator("personalization", mode="before")(check_custom_fields)


MAX_INLINE_RECIPIENTS = 10_000
# Inline recipients: 1 to 10,000 (the spec's minItems/maxItems, found by the contract fuzz).
InlineRecipients = Annotated[
    list[InlineRecipient], Field(min_length=1, max_length=MAX_INLINE_RECIPIENTS)
]


class CampaignSettings(_Strict):
    track_opens: bool = Field(default=True, strict=True)
    track_clicks: bool = Field(default=True, strict=True)
    category: Literal["marketing", "transactional"] = "marketing"
    # false: no open pixel and no click tracking, whatever track_opens/track_clicks say.
    analytics_enabled: bool = Field(default=True, strict=True)
    # Accepted and stored; does nothing yet (docs/campaigns.md).
    ai_optimization: bool = Field(default=False, strict=True)


class Schedule(_Strict):
    timezone: str = "UTC"
    days: list[DayName] = Field(default_factory=lambda: list(DAY_NAMES), min_length=1)
    start_hour: int = Field(default=0, ge=0, le=23, strict=True)
    end_hour: int = Field(default=24, ge=1, le=24, strict=True)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r} (use an IANA name)") from exc
        return value

    @model_validator(mode="after")
    def _hours(self) -> Schedule:
        if self.end_hour <= self.start_hour:
            raise ValueError("end_hour must be after start_hour")
        self.days = [d for d in DAY_NAMES if d in self.days]
        return self


class Spacing(_Strict):
    min_seconds: int = Field(ge=0, le=86_400, strict=True)
    max_seconds: int = Field(ge=0, le=86_400, strict=True)

    @model_validator(mode="after")
    def _order(self) -> Spacing:
        if self.max_seconds < self.min_seconds:
            raise ValueError("max_seconds must be at least min_seconds")
        return self


class CampaignCreate(_Strict):
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    # Absent: the tenant's default sender (PUT /api/v1/sending/settings), taken at start.
    from_email: EmailText | None = None
    from_name: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    reply_to: EmailText | None = None
    subject: str | None = Field(default=None, min_length=1, max_length=998)
    content: CampaignContent
    recipients: Recipients | InlineRecipients = Field(
        description="A recipients spec (contact_ids or tags), or inline recipients"
        " `[{email, personalization}]` (upserted as contacts; 1 to 10,000)."
    )
    settings: CampaignSettings = Field(default_factory=CampaignSettings)
    follow_ups: list[FollowUp] = Field(default_factory=list, max_length=20)
    schedule: Schedule | None = None
    daily_cap: int | None = Field(default=None, ge=1, le=1_000_000, strict=True)
    spacing: Spacing | None = None
    scheduled_at: Timestamp | None = None

    _from_name = field_validator("from_name")(check_display_name)

    @field_validator("from_email", "reply_to", mode="before")
    @classmethod
    def _emails(cls, value: Any) -> str | None:
        return None if value is None else check_email(value)

    @field_validator("scheduled_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("scheduled_at needs a timezone (e.g. 2026-01-05T09:00:00Z)")
        return value

    @model_validator(mode="after")
    def _subject(self) -> CampaignCreate:
        if self.subject is None and self.content.template_id is None:
            raise ValueError("subject is required unless the content uses a template")
        return self


class CampaignUpdate(_Strict):
    """PUT body (draft campaigns only): the fields present replace the stored ones."""

    name: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_CHARS)
    from_email: EmailText | None = None
    from_name: str | None = Field(default=None, max_length=MAX_NAME_CHARS)
    reply_to: EmailText | None = None
    subject: str | None = Field(default=None, min_length=1, max_length=998)
    content: CampaignContent | None = None
    recipients: Recipients | InlineRecipients | None = None
    settings: CampaignSettings | None = None
    follow_ups: list[FollowUp] | None = Field(default=None, max_length=20)
    schedule: Schedule | None = None
    daily_cap: int | None = Field(default=None, ge=1, le=1_000_000, strict=True)
    spacing: Spacing | None = None
    scheduled_at: Timestamp | None = None

    _from_name = field_validator("from_name")(check_display_name)

    @field_validator("from_email", "reply_to", mode="before")
    @classmethod
    def _emails(cls, value: Any) -> str | None:
        return None if value is None else check_email(value)

    @field_validator("scheduled_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("scheduled_at needs a timezone (e.g. 2026-01-05T09:00:00Z)")
        return value


def _omitted_when_none() -> Any:
    # Stored JSON leaves unset parts out; the response does too rather than sending null.
    return Field(default=None, exclude_if=lambda v: v is None)


class StepContent(ResponseModel):
    """A step's frozen content: inline parts, or a template's parts copied in."""

    html: str | None = _omitted_when_none()
    text: str | None = _omitted_when_none()
    # A template's id, or the `key` it was named by (seed 004's `welcome_template`).
    template_id: str | None = _omitted_when_none()


class FollowUpStep(ResponseModel):
    delay_days: float
    subject: str | None
    content: StepContent


class RecipientSelection(ResponseModel):
    contact_ids: list[UUID] | None = _omitted_when_none()
    tags: list[str] | None = _omitted_when_none()
    # How `tags` combine; inline recipients (frozen to contact_ids) have none.
    match: Literal["any", "all"] = "any"


class Campaign(ResponseModel):
    id: UUID
    name: str
    status: CampaignStatus
    from_email: str | None
    from_name: str | None
    reply_to: str | None
    subject: str | None
    content: StepContent
    recipients: RecipientSelection
    settings: CampaignSettings
    follow_ups: list[FollowUpStep]
    schedule: Schedule | None
    daily_cap: int | None
    spacing: Spacing | None
    scheduled_at: datetime | None
    recipient_count: int
    started_at: datetime | None
    # When every recipient's first step had been handed to delivery (`campaign.sent`).
    sent_at: datetime | None = None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime


# ---------------------------------------------------------------- conversions


_UUID: dict[str, Any] = {"type": "string", "format": "uuid"}


class ConversionCreate(_Strict):
    """A goal a contact reached. Name the contact by `email` or `contact_id`. Idempotent: the
    same contact, goal and `occurred_at` is one conversion."""

    # What `_who` enforces, stated in the spec (found by the full contract fuzz).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            **exactly_one(("email", EMAIL_SCHEMA), ("contact_id", _UUID)),
            **any_of(
                {"not": present("currency", {"type": "string"})},
                present("value", {"type": "number"}),
            ),
        },
    )

    email: EmailText | None = None
    contact_id: UUID | None = None
    goal: str = Field(min_length=1, max_length=100)
    value: float | None = Field(default=None, ge=0, le=1_000_000_000, strict=True)
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    campaign_id: UUID | None = None
    occurred_at: Timestamp | None = None

    @field_validator("email", mode="before")
    @classmethod
    def _email(cls, value: Any) -> str | None:
        return None if value is None else check_email(value)

    @field_validator("occurred_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("occurred_at needs a timezone (e.g. 2026-01-05T09:00:00Z)")
        return value

    @model_validator(mode="after")
    def _who(self) -> ConversionCreate:
        if (self.email is None) == (self.contact_id is None):
            raise ValueError("give either email or contact_id")
        if self.currency is not None and self.value is None:
            raise ValueError("currency needs a value")
        return self


class Conversion(ResponseModel):
    id: UUID
    contact_id: UUID
    goal: str
    value: float | None
    currency: str | None
    campaign_id: UUID | None
    occurred_at: datetime
    created_at: datetime
    # False when this conversion had been recorded before (the same one is returned).
    created: bool


class RevenueAmount(ResponseModel):
    currency: str | None
    amount: float
    conversions: int


# ---------------------------------------------------------------- analytics


class MetricCounts(ResponseModel):
    """Events per kind (`total`) or distinct emails per kind (`unique`)."""

    sent: int
    delivered: int
    opened: int
    clicked: int
    replied: int
    bounced: int
    complained: int
    unsubscribed: int
    failed: int


class CampaignOverview(MetricCounts):
    """Seed 004's `overview`: distinct messages per outcome, in the period."""

    conversions: int


class ImportJob(ResponseModel):
    """An import job's progress (`POST /api/v1/contacts/imports`)."""

    id: UUID
    status: Literal["pending", "running", "completed"]
    total: int
    processed: int
    created: int
    updated: int
    failed: int
    errors: list[ImportRowError]
    created_at: datetime
    completed_at: datetime | None


class MetricRates(ResponseModel):
    """Ratios of unique counts, 0-1, rounded to 4 places (0 when the base is 0)."""

    delivery_rate: float
    open_rate: float
    click_rate: float
    click_to_open_rate: float
    reply_rate: float
    bounce_rate: float
    unsubscribe_rate: float
    complaint_rate: float


class DailyCounts(MetricCounts):
    date: str = Field(json_schema_extra={"format": "date"})


class EmailAnalytics(ResponseModel):
    model_config = ConfigDict(populate_by_name=True)

    period: str
    from_: datetime = Field(alias="from")
    to: datetime
    total: MetricCounts
    unique: MetricCounts
    rates: MetricRates
    daily: list[DailyCounts]


class RecipientStates(ResponseModel):
    total: int
    pending: int
    done: int
    replied: int
    stopped: int
    failed: int


class StepAnalytics(ResponseModel):
    step: int
    total: MetricCounts
    unique: MetricCounts
    rates: MetricRates


class CampaignAnalytics(ResponseModel):
    model_config = ConfigDict(populate_by_name=True)

    campaign_id: UUID
    status: CampaignStatus
    requested: int
    recipients: RecipientStates
    total: MetricCounts
    unique: MetricCounts
    rates: MetricRates
    steps: list[StepAnalytics]
    # The `period` asked for (`1d`..`90d`; null: lifetime) and its bounds.
    period: str | None = None
    from_: datetime | None = Field(default=None, alias="from")
    to: datetime | None = None
    overview: CampaignOverview
    conversions: int
    revenue: list[RevenueAmount]


class ContactTimelineEvent(ResponseModel):
    event_id: UUID
    type: str
    occurred_at: datetime
    message_id: str
    campaign_id: UUID | None
    step: int | None
    detail: dict[str, Any]


class ContactAnalytics(ResponseModel):
    contact_id: UUID
    email: str
    status: ContactStatus
    total: MetricCounts
    unique: MetricCounts
    last_activity_at: datetime | None
    timeline: list[ContactTimelineEvent]
