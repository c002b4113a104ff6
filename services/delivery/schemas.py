"""Request and response models of the emails API (seed 004 shapes, issue 5 fields)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from libs.common.emails import Email
from libs.common.http import ResponseModel
from libs.common.schema_rules import FREE_FORM_JSON, any_of, json_storable, present

Category = Literal["marketing", "transactional"]
MAX_BULK = 10000


class Content(BaseModel):
    """Seed 004's nested body: html or text (or both)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=any_of(
            present("html", {"type": "string"}), present("text", {"type": "string"})
        ),
    )
    html: str | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Content:
        if self.html is None and self.text is None:
            raise ValueError("content needs html or text")
        return self


class Tracking(BaseModel):
    model_config = ConfigDict(extra="forbid")
    track_opens: bool = Field(default=True, strict=True)
    track_clicks: bool = Field(default=True, strict=True)


TEXT: dict[str, Any] = {"type": "string"}
# What `_has_body` takes as a body: html or text, at the top level or under `content` (null
# is the same as absent).
BODY_GIVEN: list[dict[str, Any]] = [
    present("html", TEXT),
    present("text", TEXT),
    # `Content` itself says "html or text" (openapi-python-client takes no anyOf nested here).
    present("content", {"$ref": "#/components/schemas/Content"}),
]
CAMPAIGN_GIVEN = present("campaign_id", {"type": "string", "minLength": 1})


def _both(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Both `present(...)` fragments hold."""
    return {
        "required": [*first["required"], *second["required"]],
        "properties": {**first["properties"], **second["properties"]},
    }


class _SendBase(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    # send-bulk with a campaign_id may leave subject and body to the campaign's content.
    content_from_campaign: ClassVar[bool] = False

    # Absent: the tenant's `default_from` (GET/PUT /api/v1/sending/settings).
    from_: Email | None = Field(default=None, alias="from")
    reply_to: Email | None = None
    subject: str = Field(min_length=1, max_length=998)
    # Seed 004 nests the body under `content`; the issue lists html/text at the top level.
    content: Content | None = None
    html: str | None = Field(default=None, max_length=2_000_000)
    text: str | None = Field(default=None, max_length=2_000_000)
    template_id: str | None = None
    tracking: Tracking = Field(default_factory=Tracking)
    category: Category = "marketing"
    tags: list[str] = Field(default_factory=list, max_length=10)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=20)

    @field_validator("metadata")
    @classmethod
    def _metadata_keys(cls, value: dict[str, str]) -> dict[str, str]:
        # `pm_*` keys are ours at the ESPs (pm_message_id maps webhooks back to a message).
        reserved = sorted(k for k in value if k.lower().startswith("pm_"))
        if reserved:
            raise ValueError(f"keys starting with pm_ are reserved: {', '.join(reserved)}")
        return value

    @model_validator(mode="after")
    def _has_body(self) -> _SendBase:
        if self.content is not None:
            self.html = self.html if self.html is not None else self.content.html
            self.text = self.text if self.text is not None else self.content.text
        if self.html is None and self.text is None:
            if self.content_from_campaign and getattr(self, "campaign_id", None):
                return self  # the campaign's content (checked against the read model)
            raise ValueError("give html or text (top level or under content)")
        return self


class SendEmailRequest(_SendBase):
    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, json_schema_extra=any_of(*BODY_GIVEN)
    )
    to: Email
    variables: dict[str, Any] = Field(default_factory=dict, description=FREE_FORM_JSON)
    campaign_id: str | None = None
    contact_id: str | None = None

    _json = field_validator("variables")(json_storable)


class BulkRecipient(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Email
    personalization: dict[str, Any] = Field(default_factory=dict, description=FREE_FORM_JSON)
    contact_id: str | None = None

    _json = field_validator("personalization")(json_storable)


class SendBulkRequest(_SendBase):
    """With a `campaign_id` and no html/text, the campaign's content (subject, body, sender,
    tracking) is sent; anything given in the body wins over it."""

    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        # A subject and (a body or a campaign), or a campaign and no body at all.
        # (Flat: openapi-python-client cannot take an anyOf nested in another's branch.)
        json_schema_extra=any_of(
            *(_both(present("subject", TEXT), given) for given in [*BODY_GIVEN, CAMPAIGN_GIVEN]),
            {**CAMPAIGN_GIVEN, "not": {"anyOf": BODY_GIVEN}},
        ),
    )
    content_from_campaign: ClassVar[bool] = True
    subject: str | None = Field(default=None, min_length=1, max_length=998)  # type: ignore[assignment]
    campaign_id: str | None = None
    recipients: list[BulkRecipient] = Field(min_length=1, max_length=MAX_BULK)
    # Messages are released in chunks of `batch_size`, chunk n at n * delay_between_batches
    # seconds after acceptance.
    batch_size: int = Field(default=100, ge=1, le=1000, strict=True)
    delay_between_batches: int = Field(default=0, ge=0, le=86400, strict=True)

    @model_validator(mode="after")
    def _subject(self) -> SendBulkRequest:
        # (html/text already merged with `content` by _has_body)
        if self.subject is None and not (
            self.campaign_id and self.html is None and self.text is None
        ):
            raise ValueError("subject is required unless the campaign's content is used")
        return self


class SendAccepted(ResponseModel):
    message_id: str
    status: Literal["queued"] = "queued"


class BulkAccepted(ResponseModel):
    batch_id: str
    accepted: int
    batches: int
    status: Literal["queued"] = "queued"


class TimelineEntry(ResponseModel):
    status: str
    occurred_at: datetime
    provider: str | None = None
    provider_message_id: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class Counts(ResponseModel):
    total: int
    unique: int


class EmailSummary(ResponseModel):
    id: str
    to: str
    from_: str = Field(serialization_alias="from")
    subject: str
    status: str
    category: str
    mode: str
    campaign_id: str | None
    contact_id: str | None
    batch_id: str | None
    provider: str | None
    provider_message_id: str | None
    attempts: int
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class EmailDetail(EmailSummary):
    # The RFC 5322 Message-ID the message goes out with (replies reference it).
    message_id_header: str
    opens: Counts
    clicks: Counts
    timeline: list[TimelineEntry]


class SuppressionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: Email


class SuppressionAdded(ResponseModel):
    email: str
    reason: Literal["manual"]


class Suppression(ResponseModel):
    email: str
    reason: str
    message_id: str | None
    created_at: datetime


class RoutingRuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    category: Category | None = None
    sending_domain: str | None = Field(default=None, max_length=253)
    primary_provider: Literal["postmark", "mailgun", "sendgrid", "ses", "smtp"]
    secondary_provider: Literal["postmark", "mailgun", "sendgrid", "ses", "smtp"] | None = None
    priority: int = Field(default=100, ge=0, le=10000, strict=True)


Provider = Literal["postmark", "mailgun", "sendgrid", "ses", "smtp"]


class RoutingRule(ResponseModel):
    id: str
    category: Category | None
    sending_domain: str | None
    primary_provider: Provider
    secondary_provider: Provider | None
    priority: int


class SendingCapIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Literal["mailbox", "domain"]
    value: str = Field(min_length=1, max_length=320)
    daily_limit: int = Field(ge=0, le=1_000_000, strict=True)


class SendingCap(ResponseModel):
    scope: Literal["mailbox", "domain"]
    value: str
    daily_limit: int


class SendingSettingsIn(BaseModel):
    """PUT body: the whole settings object (an absent field is cleared)."""

    model_config = ConfigDict(extra="forbid")
    default_from: Email | None = None
    default_from_name: str | None = Field(default=None, min_length=1, max_length=200)
    default_reply_to: Email | None = None


class SendingSettings(ResponseModel):
    default_from: str | None
    default_from_name: str | None
    default_reply_to: str | None
    # The sender a send without `from` gets in this mode right now (null: such a live send
    # is refused with 422 sender_required).
    effective_from: str | None
    updated_at: datetime | None


class BatchReport(ResponseModel):
    """A bulk send's progress: its messages counted by status."""

    id: str
    campaign_id: str | None
    total: int
    batch_size: int
    delay_between_batches: int
    created_at: datetime
    counts: dict[str, int]
