"""Request and response models of the webhooks API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, WithJsonSchema

from libs.common.http import ResponseModel
from libs.common.timestamps import Timestamp
from services.webhooks.payloads import PayloadVersion
from services.webhooks.signatures import SECRET_JSON_SCHEMA

Url = Annotated[str, Field(min_length=8, max_length=2048)]
EventPattern = Annotated[
    str,
    Field(
        min_length=1,
        max_length=100,
        description="An event type of the catalog (`GET /api/v1/events/types`) or a glob "
        "matching at least one (`email.*`, `*`); one that matches none is 422.",
    ),
]
FilterValue = Annotated[str, Field(min_length=1, max_length=200)]
RetryDelay = Annotated[float, Field(ge=0.1, le=86_400, strict=True)]
# The service checks the form (`signatures.secret_key`); the spec states the same patterns.
WebhookSecret = Annotated[SecretStr, WithJsonSchema(SECRET_JSON_SCHEMA)]

DeliveryStatus = Literal["pending", "sending", "retrying", "succeeded", "failed", "paused"]


class EndpointFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    campaign_ids: list[FilterValue] = Field(default_factory=list, max_length=100)
    contact_tags: list[FilterValue] = Field(default_factory=list, max_length=100)


class EndpointCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url
    description: str | None = Field(default=None, max_length=500)
    events: list[EventPattern] = Field(min_length=1, max_length=64)
    filters: EndpointFilters = Field(default_factory=EndpointFilters)
    enabled: bool = Field(default=True, strict=True)
    retry_schedule: list[RetryDelay] | None = Field(
        default=None,
        max_length=20,
        description="Seconds before each retry; attempts = 1 + len(retry_schedule).",
    )
    payload_version: PayloadVersion = Field(
        default="2026-12-01",
        description="Payload shape: `2026-12-01` (default; the entity nested as `data.email`,"
        " `data.campaign`, `data.contact`, ...) or `2026-11-21` (the flat catalog data).",
    )
    secret: WebhookSecret | None = Field(
        default=None,
        description="Your own secret, generated (`whsec_<base64>`) when omitted: either"
        " `whsec_` + base64 of 24 to 64 bytes (the key is the decoded bytes) or any printable"
        " string of 16 to 128 characters such as `your-webhook-secret-1` (the key is its UTF-8"
        " bytes; printable: no control characters and no whitespace at either end).",
    )


class EndpointUpdate(BaseModel):
    """Fields left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    url: Url | None = None
    description: str | None = Field(default=None, max_length=500)
    events: list[EventPattern] | None = Field(default=None, min_length=1, max_length=64)
    filters: EndpointFilters | None = None
    enabled: bool | None = Field(default=None, strict=True)
    retry_schedule: list[RetryDelay] | None = Field(default=None, max_length=20)
    payload_version: PayloadVersion | None = Field(
        default=None, description="Switch the payload shape; see docs/webhooks.md."
    )


class RotateSecret(BaseModel):
    model_config = ConfigDict(extra="forbid")

    secret: WebhookSecret | None = Field(
        default=None, description="Same two forms as at creation; generated when omitted."
    )


class TestSend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_type: str = Field(
        default="email.opened",
        max_length=100,
        description="A webhook event type of the catalog (`GET /api/v1/events/types`).",
    )


class Recover(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Timestamp
    until: Timestamp | None = None


# ------------------------------------------------------------------ responses


class EndpointFiltersOut(ResponseModel):
    campaign_ids: list[str]
    contact_tags: list[str]


class Endpoint(ResponseModel):
    id: str
    url: str
    description: str | None
    events: list[str]
    filters: EndpointFiltersOut
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    retry_schedule: list[float] | None
    payload_version: PayloadVersion = Field(
        description="The payload shape this endpoint receives (docs/webhooks.md)."
    )
    mode: Literal["live", "test"]
    created_at: datetime
    updated_at: datetime


class EndpointCreated(Endpoint):
    secret: str = Field(
        description="The signing secret (`whsec_...`, or the printable secret you chose)."
        " Shown once: store it."
    )


class SecretRotated(ResponseModel):
    id: str
    secret: str
    previous_secret_expires_at: datetime | None


class Attempt(ResponseModel):
    attempt: int
    attempted_at: datetime
    succeeded: bool
    status_code: int | None
    response_ms: float | None
    response_body: str | None
    error: str | None


class AttemptLogEntry(Attempt):
    trigger: str


class SampleSendResult(ResponseModel):
    delivery_id: str
    event_type: str
    payload: dict[str, Any]
    attempt: Attempt


class Delivery(ResponseModel):
    id: str
    endpoint_id: str
    event_id: str | None
    event_type: str
    status: DeliveryStatus
    test: bool
    trigger: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    completed_at: datetime | None


class DeliveryDetail(Delivery):
    payload: dict[str, Any]
    attempt_log: list[AttemptLogEntry]


class Recovered(ResponseModel):
    endpoint_id: str
    since: datetime
    until: datetime | None
    recovered: int
    delivery_ids: list[str]


class StatsWindow(ResponseModel):
    attempts: int
    deliveries: int
    succeeded: int
    failed: int
    success_rate: float | None
    error_rate: float | None
    avg_response_ms: float | None
    p95_response_ms: float | None


class EndpointStats(ResponseModel):
    model_config = ConfigDict(populate_by_name=True)

    endpoint_id: str
    health: Literal["healthy", "degraded", "failing"]
    enabled: bool
    failing_since: datetime | None
    last_24h: StatsWindow = Field(alias="24h")
    last_7d: StatsWindow = Field(alias="7d")
