"""HTTP API of the inbox service: `/api/v1/inbox/*` behind the gateway's signed principal
(scope `read_inbox`; replying also `send_email`) and the public inbound hooks
`POST /hooks/esp/{provider}/inbound`, verified per provider instead of a principal.
(No `from __future__ import annotations`: FastAPI must resolve the route annotations that
name closure variables.)
"""

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from libs.common.app import create_app
from libs.common.http import ApiError, ErrorEnvelope, Forbidden, SuccessEnvelope, ok
from libs.common.pagination import ListParams, list_params, reject_unknown_query
from libs.common.principal import Principal, principal_dependency, require_scope
from libs.common.resources import Resources
from libs.common.timestamps import Timestamp
from services.inbox.classification import Classification
from services.inbox.providers import HookRequest
from services.inbox.repository import ThreadFilter
from services.inbox.schemas import (
    InboundReceipt,
    MessageOut,
    ReplyIn,
    ThreadDetail,
    ThreadOut,
    ThreadPatch,
)
from services.inbox.service import InboxService
from services.inbox.settings import InboxSettings

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (401, 403, 404, 409, 422)
}
ThreadParams = Annotated[
    ListParams,
    Depends(list_params(("last_message_at", "created_at"), default_sort="last_message_at")),
]
MessageParams = Annotated[ListParams, Depends(list_params(("created_at", "occurred_at")))]


def _service(request: Request) -> InboxService:
    service: InboxService = request.app.state.inbox
    return service


Service = Annotated[InboxService, Depends(_service)]


def build_routers(settings: InboxSettings) -> list[APIRouter]:
    current = principal_dependency(
        lambda: settings.principal_public_keys, audience=settings.service_name
    )
    Reader = Annotated[Principal, Depends(require_scope("read_inbox", current))]

    async def replier(p: Reader) -> Principal:
        if not p.has_scope("send_email"):
            raise Forbidden(
                "This operation requires the 'send_email' scope.", code="insufficient_scope"
            )
        return p

    Replier = Annotated[Principal, Depends(replier)]
    api = APIRouter(
        prefix="/api/v1/inbox",
        tags=["inbox"],
        responses=ERRORS,
        dependencies=[Depends(reject_unknown_query)],
    )

    @api.get("/threads", response_model=SuccessEnvelope[list[ThreadOut]])
    async def list_threads(
        p: Reader,
        svc: Service,
        params: ThreadParams,
        folder: Annotated[Literal["inbox", "unmatched"] | None, Query()] = None,
        campaign_id: Annotated[str | None, Query(max_length=100)] = None,
        contact_id: Annotated[str | None, Query(max_length=100)] = None,
        contact_email: Annotated[str | None, Query(max_length=320)] = None,
        classification: Annotated[Classification | None, Query()] = None,
        unread: Annotated[bool | None, Query()] = None,
        archived: Annotated[
            bool | None, Query(description="Default false; give true for archived threads.")
        ] = False,
        label: Annotated[str | None, Query(max_length=100)] = None,
        since: Annotated[
            Timestamp | None, Query(description="Last message at or after (RFC 3339).")
        ] = None,
        until: Annotated[Timestamp | None, Query(description="Last message before.")] = None,
    ) -> dict[str, Any]:
        f = ThreadFilter(
            folder=folder,
            campaign_id=campaign_id,
            contact_id=contact_id,
            contact_email=contact_email,
            classification=classification,
            unread=unread,
            archived=archived,
            label=label,
            since=since,
            until=until,
        )
        return (await svc.list_threads(p.tenant_id, p.mode, f, params)).envelope()

    @api.get("/threads/{thread_id}", response_model=SuccessEnvelope[ThreadDetail])
    async def get_thread(thread_id: str, p: Reader, svc: Service) -> dict[str, Any]:
        return ok(await svc.get_thread(p.tenant_id, p.mode, thread_id))

    @api.patch("/threads/{thread_id}", response_model=SuccessEnvelope[ThreadOut])
    async def update_thread(
        thread_id: str, body: ThreadPatch, p: Reader, svc: Service
    ) -> dict[str, Any]:
        return ok(await svc.update_thread(p.tenant_id, p.mode, thread_id, body.changes()))

    @api.post(
        "/threads/{thread_id}/reply",
        status_code=202,
        response_model=SuccessEnvelope[MessageOut],
    )
    async def reply(thread_id: str, body: ReplyIn, p: Replier, svc: Service) -> dict[str, Any]:
        return ok(
            await svc.reply(p.tenant_id, p.mode, thread_id, body.text, body.html, body.subject)
        )

    @api.get("/messages", response_model=SuccessEnvelope[list[MessageOut]])
    async def list_messages(
        p: Reader,
        svc: Service,
        params: MessageParams,
        thread_id: Annotated[str | None, Query(max_length=100)] = None,
        direction: Annotated[Literal["inbound", "outbound"] | None, Query()] = None,
        classification: Annotated[Classification | None, Query()] = None,
    ) -> dict[str, Any]:
        page = await svc.list_messages(
            p.tenant_id,
            p.mode,
            params,
            thread_id=thread_id,
            direction=direction,
            classification=classification,
        )
        return page.envelope()

    @api.get("/messages/{message_id}", response_model=SuccessEnvelope[MessageOut])
    async def get_message(message_id: str, p: Reader, svc: Service) -> dict[str, Any]:
        return ok(await svc.get_message(p.tenant_id, p.mode, message_id))

    @api.get(
        "/messages/{message_id}/raw",
        response_class=Response,
        # application/octet-stream (an .eml download): what every generated client reads.
        responses={
            200: {
                "content": {
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
                },
                "description": "The message as received (RFC 5322), as an .eml download.",
            }
        },
    )
    async def get_raw(message_id: str, p: Reader, svc: Service) -> Response:
        """The message as received (RFC 5322), kept 30 days."""
        raw = await svc.raw_message(p.tenant_id, p.mode, message_id)
        return Response(
            raw,
            media_type="application/octet-stream",
            headers={"Content-Disposition": f'attachment; filename="{message_id}.eml"'},
        )

    hooks = APIRouter(tags=["inbound"], responses=ERRORS)

    @hooks.post("/hooks/esp/{provider}/inbound", response_model=SuccessEnvelope[InboundReceipt])
    async def inbound(provider: str, request: Request, svc: Service) -> JSONResponse:
        """Inbound mail from an ESP (Postmark, Mailgun, SendGrid Inbound Parse, SES via SNS)."""
        body = await _bounded_body(request, settings.inbound_max_bytes)
        hook = HookRequest({k.lower(): v for k, v in request.headers.items()}, body)
        results = await svc.receive_hook(provider, hook)
        return JSONResponse(
            ok(
                {
                    "received": sum(1 for r in results if r.folder != "duplicate"),
                    "results": [
                        {
                            "inbox_message_id": r.inbox_message_id,
                            "thread_id": r.thread_id,
                            "folder": r.folder,
                            "classification": r.classification,
                        }
                        for r in results
                    ],
                }
            )
        )

    return [api, hooks]


async def _bounded_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(code="payload_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(code="payload_too_large")
    return bytes(body)


def create_api(settings: InboxSettings | None = None) -> FastAPI:
    settings = settings or InboxSettings()
    resources = Resources(settings, schema="inbox", vault=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with resources.lifespan(app):
            app.state.inbox = InboxService(settings, resources.pool, resources.vault)
            try:
                yield
            finally:
                await app.state.inbox.close()

    return create_app(
        settings,
        process="api",
        readiness=resources.readiness(),
        lifespan=lifespan,
        routers=build_routers(settings),
        title="PenguinMails inbox service",
    )
