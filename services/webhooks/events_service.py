"""Domain logic of `/api/v1/events/*`: the catalog, opening a stream (checks first, so a bad
request gets an error envelope before any byte of the stream), and test triggers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from libs.common import outbox
from libs.common.events import EVENT_TYPES, make_event, read_scope_of
from libs.common.http import ApiError, Forbidden, ValidationFailed, register_error_code
from libs.common.principal import Principal
from services.webhooks import repository as repo
from services.webhooks.payloads import catalog, deliverable_types, sample_data
from services.webhooks.settings import WebhooksSettings
from services.webhooks.stream import (
    ReaderLimits,
    StreamHub,
    filter_from,
    read_stream,
    readable_types,
    unknown_patterns,
)

register_error_code(
    "event_stream_cursor_expired",
    409,
    "The Last-Event-ID is unknown or older than the stream keeps (24 hours at least).",
)
register_error_code(
    "test_mode_required", 403, "This operation works with test-mode (pm_test_) keys only."
)

SOURCE = "/services/webhooks"


@dataclass(frozen=True)
class StreamRequest:
    types: list[str] = field(default_factory=list)
    campaign_ids: list[str] = field(default_factory=list)
    contact_tags: list[str] = field(default_factory=list)
    last_event_id: str | None = None


class EventsService:
    def __init__(self, pool: asyncpg.Pool, hub: StreamHub, settings: WebhooksSettings) -> None:
        self.pool = pool
        self.hub = hub
        self.limits = ReaderLimits(
            heartbeat_seconds=settings.events_stream_heartbeat_seconds,
            max_seconds=settings.events_stream_max_seconds,
        )
        self._catalog = catalog()

    def catalog(self) -> list[dict[str, Any]]:
        return self._catalog

    async def open_stream(self, p: Principal, req: StreamRequest) -> AsyncIterator[bytes]:
        bad = unknown_patterns(req.types)
        if bad:
            raise ValidationFailed(
                details=[
                    {"field": "query.types", "message": f"{t!r} matches no event type"} for t in bad
                ]
            )
        types = readable_types(p.scopes, req.types)
        if not types:
            needed = sorted({str(read_scope_of(t)) for t in deliverable_types()})
            raise Forbidden(
                "No requested event type is readable with this key's scopes; the catalog"
                f" (GET /api/v1/events/types) names each type's scope ({', '.join(needed)}).",
                code="insufficient_scope",
            )
        resume: uuid.UUID | None = None
        if req.last_event_id:
            try:
                resume = uuid.UUID(req.last_event_id)
            except ValueError as exc:
                raise ValidationFailed(
                    details=[{"field": "header.last-event-id", "message": "not an event id"}]
                ) from exc
        # Subscribe before reading the cursor: whatever commits in between is queued.
        sub = self.hub.subscribe(p.tenant_id, p.mode)
        last_id = req.last_event_id
        try:
            if resume is not None:
                seq = await repo.stream_seq_of(self.pool, p.tenant_id, p.mode, resume)
                if seq is None:
                    raise ApiError(
                        "This Last-Event-ID is unknown or expired; reconnect without it (events"
                        " missed meanwhile are in each webhook endpoint's delivery log).",
                        code="event_stream_cursor_expired",
                    )
                cursor = seq
            else:
                # The head's event id opens the stream as `id:`: a client reconnecting before
                # its first event resumes from there and misses nothing committed meanwhile.
                cursor, last_id = await repo.stream_head_event(self.pool, p.tenant_id, p.mode)
        except BaseException:
            self.hub.unsubscribe(sub)
            raise
        wanted = filter_from(types, req.campaign_ids, req.contact_tags)
        return read_stream(self.pool, self.hub, sub, cursor, wanted, self.limits, last_id)

    async def trigger(self, p: Principal, event_type: str) -> dict[str, Any]:
        if p.mode != "test":
            raise Forbidden(
                "Triggering sample events needs a test-mode (pm_test_) key.",
                code="test_mode_required",
            )
        scope = read_scope_of(event_type)
        if scope is None:
            raise ValidationFailed(
                details=[{"field": "body.type", "message": "not a type of the event catalog"}]
            )
        if not p.has_scope(scope):
            raise Forbidden(
                f"Triggering {event_type} requires the '{scope}' scope.",
                code="insufficient_scope",
            )
        data = EVENT_TYPES[event_type].model_validate(sample_data(event_type))
        event = make_event(data, tenant_id=p.tenant_id, source=SOURCE, mode="test")
        async with self.pool.acquire() as conn, conn.transaction():
            await outbox.enqueue(conn, event)
        return {
            "id": str(event.id),
            "type": event.type,
            "created": event.time,
            "mode": event.mode,
            "data": event.data,
        }
