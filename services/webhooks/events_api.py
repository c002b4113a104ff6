"""HTTP API of the event catalog, the event stream and test triggers (`/api/v1/events/*`),
served by the webhooks service beside the endpoints: the catalog is what webhooks deliver,
and the fan-out consumer feeds the stream. Thin: parse, call `EventsService`, shape.

Scopes: the catalog is readable with any key; the stream carries only the types whose read
scope the caller holds (from the catalog); a trigger needs the read scope of its type.
Who may call: `auth.py`; the router is declared at module level.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from libs.common.http import ErrorEnvelope, SuccessEnvelope, ok
from services.webhooks.auth import Caller
from services.webhooks.event_schemas import EventTrigger, EventTriggered, EventTypeInfo
from services.webhooks.events_service import EventsService, StreamRequest

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (401, 403, 409, 422)
}
_SSE_DOC = (
    "Server-Sent Events: `retry:` once (with `id:` of the newest stored event, the resume"
    " point before any event), then per event `id:` (the event id), `event:` (its"
    " type) and `data:` (its webhook payload of version 2026-12-01, JSON, `id` = the event"
    " id); comment lines (`: heartbeat`) every 15 s."
)


def _events(request: Request) -> EventsService:
    service: EventsService = request.app.state.events
    return service


def _split(values: list[str] | None) -> list[str]:
    return [v.strip() for raw in values or () for v in raw.split(",") if v.strip()]


Service = Annotated[EventsService, Depends(_events)]


router = APIRouter(prefix="/api/v1/events", tags=["events"], responses=ERRORS)

# An event id is a UUID: anything else is a 422 (the spec says so).
_EVENT_ID = {"format": "uuid"}


@router.get(
    "/types",
    response_model=SuccessEnvelope[list[EventTypeInfo]],
    summary="The event catalog: every type webhooks and the stream deliver",
)
async def list_event_types(p: Caller, svc: Service) -> dict[str, Any]:
    return ok(svc.catalog())


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": _SSE_DOC,
        },
    },
    summary="Live events (Server-Sent Events), resumable with Last-Event-ID",
)
async def stream_events(
    p: Caller,
    svc: Service,
    types: Annotated[list[str] | None, Query(max_length=64)] = None,
    campaign_ids: Annotated[list[str] | None, Query(max_length=100)] = None,
    contact_tags: Annotated[list[str] | None, Query(max_length=100)] = None,
    last_event_id_query: Annotated[
        str | None, Query(alias="last_event_id", max_length=64, json_schema_extra=_EVENT_ID)
    ] = None,
    last_event_id: Annotated[str | None, Header(max_length=64, json_schema_extra=_EVENT_ID)] = None,
) -> StreamingResponse:
    body = await svc.open_stream(
        p,
        StreamRequest(
            types=_split(types),
            campaign_ids=_split(campaign_ids),
            contact_tags=_split(contact_tags),
            last_event_id=last_event_id or last_event_id_query,
        ),
    )
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/trigger",
    status_code=202,
    response_model=SuccessEnvelope[EventTriggered],
    summary="Test mode: emit the catalog sample of a type to your webhooks and streams",
)
async def trigger_event(body: EventTrigger, p: Caller, svc: Service) -> dict[str, Any]:
    return ok(await svc.trigger(p, body.type))


__all__ = ["router"]
