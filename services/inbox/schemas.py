"""Request and response models of the inbox API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from libs.common.http import ResponseModel
from libs.common.schema_rules import any_of, not_nullable, present


class ThreadOut(ResponseModel):
    id: str
    folder: Literal["inbox", "unmatched"]
    subject: str
    contact_email: str | None
    contact_id: str | None
    campaign_id: str | None
    message_id: str | None = Field(description="The sent email the thread started from.")
    classification: str | None = Field(description="Of the latest inbound message.")
    read: bool
    archived: bool
    labels: list[str]
    message_count: int
    mode: str
    last_message_at: datetime
    created_at: datetime
    updated_at: datetime


class HeaderOut(ResponseModel):
    name: str
    value: str


class AttachmentOut(ResponseModel):
    filename: str | None
    content_type: str
    size: int
    content_id: str | None = None


class MessageOut(ResponseModel):
    id: str
    thread_id: str
    direction: Literal["inbound", "outbound"]
    classification: str | None
    message_id_header: str | None = Field(description="RFC 5322 Message-ID.")
    in_reply_to: str | None
    references: str | None
    from_email: str | None
    from_name: str | None
    to: str | None
    subject: str
    text: str | None
    html: str | None = Field(description="Sanitized HTML body.")
    headers: list[HeaderOut]
    attachments: list[AttachmentOut]
    parse_error: str | None
    has_raw: bool
    email_id: str | None = Field(description="Delivery's id of an outbound message.")
    status: str | None
    source: str | None
    occurred_at: datetime
    created_at: datetime


class ThreadDetail(ThreadOut):
    messages: list[MessageOut]


class ThreadPatch(BaseModel):
    # What `_something` enforces, stated in the spec: at least one field, read/archived
    # never null (labels: null clears them, as []).
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    read: bool | None = Field(default=None, strict=True, json_schema_extra=not_nullable)
    archived: bool | None = Field(default=None, strict=True, json_schema_extra=not_nullable)
    labels: list[str] | None = Field(default=None, max_length=20)

    @model_validator(mode="after")
    def _something(self) -> ThreadPatch:
        if not self.model_fields_set:
            raise ValueError("give read, archived or labels")
        for name in ("read", "archived"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} must be true or false")
        return self

    def changes(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.model_fields_set}
        if out.get("labels") is None and "labels" in out:
            out["labels"] = []
        return out


class ReplyIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        # What `_body` enforces, stated in the spec: text or html (or both).
        json_schema_extra=any_of(
            present("text", {"type": "string"}), present("html", {"type": "string"})
        ),
    )

    text: str | None = Field(default=None, max_length=2_000_000)
    html: str | None = Field(default=None, max_length=2_000_000)
    subject: str | None = Field(default=None, min_length=1, max_length=998)

    @model_validator(mode="after")
    def _body(self) -> ReplyIn:
        if self.text is None and self.html is None:
            raise ValueError("give text or html")
        return self


class InboundResult(ResponseModel):
    inbox_message_id: str | None
    thread_id: str | None
    folder: str
    classification: str | None


class InboundReceipt(ResponseModel):
    received: int
    results: list[InboundResult]
