"""Request and response models of the event catalog, the event stream and test triggers
(`/api/v1/events/*`), kept apart from the endpoint models in `schemas.py`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class EventPayload(BaseModel):
    """A webhook payload of version `2026-12-01`: the entity nested under its name."""

    id: str = Field(
        description="The delivery id on webhooks (`msg_...`), the event id on the stream."
    )
    type: str
    created: str = Field(json_schema_extra={"format": "date-time"})
    data: dict[str, Any]


class EventTypeInfo(BaseModel):
    type: str = Field(description="The event type, e.g. `email.opened`.")
    description: str
    scope: str = Field(description="The API key scope that may read events of this type.")
    payload_version: str = Field(description="The payload version of `sample`.")
    sample: EventPayload


class EventTrigger(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(
        min_length=1,
        max_length=100,
        description="A type of the event catalog (`GET /api/v1/events/types`), e.g. "
        "`email.delivered`; another string is 422.",
    )


class EventTriggered(BaseModel):
    id: str = Field(description="The event id (also its `id:` on the event stream).")
    type: str
    created: datetime
    mode: str
    data: dict[str, Any] = Field(description="The catalog sample that was emitted (flat).")
