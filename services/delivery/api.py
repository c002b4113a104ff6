"""HTTP API of the delivery service: the emails API (`/api/v1/emails...`, behind the gateway's
signed principal), and the unauthenticated-but-verified edges: open pixel and click redirect
(`/t/...`), unsubscribe page and RFC 8058 one-click (`/unsubscribe/...`) and ESP event
webhooks (`/hooks/esp/{provider}`). Inbound mail (`/hooks/esp/{provider}/inbound`) belongs to
the inbox service. Routers are declared at module level; who may call them is `auth.py`.
"""

import contextlib
import html
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from libs.common.app import create_app
from libs.common.http import SuccessEnvelope, ok
from libs.common.pagination import ListParams, list_params, reject_unknown_query
from libs.common.resources import Resources
from libs.common.tenancy import TenantScope
from libs.common.timestamps import Timestamp
from services.delivery.auth import Reader, Sender
from services.delivery.connectors.base import WebhookRequest
from services.delivery.domains import api as domains_api
from services.delivery.schemas import (
    BatchReport,
    BulkAccepted,
    EmailDetail,
    EmailSummary,
    RoutingRule,
    RoutingRuleIn,
    SendAccepted,
    SendBulkRequest,
    SendEmailRequest,
    SendingCap,
    SendingCapIn,
    SendingSettings,
    SendingSettingsIn,
    Suppression,
    SuppressionAdded,
    SuppressionIn,
)
from services.delivery.service import DeliveryService
from services.delivery.settings import DeliverySettings

# 43-byte transparent GIF.
PIXEL_GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00"
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
_NO_STORE = {"Cache-Control": "no-store, max-age=0", "Referrer-Policy": "no-referrer"}
StatusFilter = Literal[
    "queued",
    "sending",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "replied",
    "bounced",
    "complained",
    "unsubscribed",
    "failed",
]


def _service(request: Request) -> DeliveryService:
    svc: DeliveryService = request.app.state.delivery
    return svc


Service = Annotated[DeliveryService, Depends(_service)]
EmailParams = Annotated[ListParams, Depends(list_params(("created_at",), default_limit=25))]
SuppressionParams = Annotated[
    ListParams,
    Depends(
        list_params(
            ("email", "created_at"),
            default_sort="email",
            default_order="asc",
            default_limit=100,
            max_limit=1000,
        )
    ),
]


api = APIRouter(
    prefix="/api/v1/emails", tags=["emails"], dependencies=[Depends(reject_unknown_query)]
)


@api.post("/send", status_code=202, response_model=SuccessEnvelope[SendAccepted])
async def send_email(
    body: SendEmailRequest, p: Sender, svc: Service, response: Response
) -> dict[str, Any]:
    message_id, quota = await svc.send_single(TenantScope.of(p), body, p.plan)
    if quota is not None:
        response.headers.update(quota.headers())
    return ok(SendAccepted(message_id=message_id))


@api.post("/send-bulk", status_code=202, response_model=SuccessEnvelope[BulkAccepted])
async def send_bulk(
    body: SendBulkRequest, p: Sender, svc: Service, response: Response
) -> dict[str, Any]:
    batch_id, accepted, batches, quota = await svc.send_bulk(TenantScope.of(p), body, p.plan)
    if quota is not None:
        response.headers.update(quota.headers())
    return ok(BulkAccepted(batch_id=batch_id, accepted=accepted, batches=batches))


@api.get("", response_model=SuccessEnvelope[list[EmailSummary]])
async def list_emails(
    p: Reader,
    svc: Service,
    params: EmailParams,
    status: StatusFilter | None = None,
    campaign_id: str | None = None,
    batch_id: str | None = None,
    recipient: str | None = Query(default=None, max_length=320),
    created_after: Timestamp | None = None,
    created_before: Timestamp | None = None,
) -> dict[str, Any]:
    page = await svc.list_emails(
        TenantScope.of(p),
        params,
        status=status,
        campaign_id=campaign_id,
        batch_id=batch_id,
        recipient=recipient,
        created_from=created_after,
        created_to=created_before,
    )
    return page.envelope()


@api.get("/suppressions", response_model=SuccessEnvelope[list[Suppression]])
async def list_suppressions(
    p: Reader,
    svc: Service,
    params: SuppressionParams,
    reason: Literal["hard_bounce", "complaint", "unsubscribe", "manual"] | None = None,
    email: str | None = Query(default=None, max_length=320, description="Exact address."),
    created_after: Timestamp | None = None,
    created_before: Timestamp | None = None,
) -> dict[str, Any]:
    page = await svc.list_suppressions(
        p.tenant_id,
        params,
        reason=reason,
        email=email,
        created_after=created_after,
        created_before=created_before,
    )
    return page.envelope()


@api.post("/suppressions", status_code=201, response_model=SuccessEnvelope[SuppressionAdded])
async def add_suppression(body: SuppressionIn, p: Sender, svc: Service) -> dict[str, Any]:
    await svc.suppress(p.tenant_id, str(body.email))
    return ok({"email": str(body.email).lower(), "reason": "manual"})


@api.delete("/suppressions/{email}", status_code=204)
async def delete_suppression(email: str, p: Sender, svc: Service) -> Response:
    await svc.unsuppress(p.tenant_id, email)
    return Response(status_code=204)


@api.get("/routing-rules", response_model=SuccessEnvelope[list[RoutingRule]])
async def list_rules(p: Reader, svc: Service) -> dict[str, Any]:
    return ok(await svc.routing_rules(p.tenant_id))


@api.post("/routing-rules", status_code=201, response_model=SuccessEnvelope[RoutingRule])
async def add_rule(body: RoutingRuleIn, p: Sender, svc: Service) -> dict[str, Any]:
    return ok(await svc.add_routing_rule(p.tenant_id, body))


@api.delete("/routing-rules/{rule_id}", status_code=204)
async def delete_rule(rule_id: str, p: Sender, svc: Service) -> Response:
    await svc.delete_routing_rule(p.tenant_id, rule_id)
    return Response(status_code=204)


@api.get("/sending-caps", response_model=SuccessEnvelope[list[SendingCap]])
async def list_caps(p: Reader, svc: Service) -> dict[str, Any]:
    return ok(await svc.sending_caps(p.tenant_id))


@api.put("/sending-caps", response_model=SuccessEnvelope[SendingCap])
async def set_cap(body: SendingCapIn, p: Sender, svc: Service) -> dict[str, Any]:
    await svc.set_sending_cap(p.tenant_id, body)
    return ok(body)


@api.get("/batches/{batch_id}", response_model=SuccessEnvelope[BatchReport])
async def get_batch(batch_id: str, p: Reader, svc: Service) -> dict[str, Any]:
    """A bulk send's progress: its messages counted by status."""
    return ok(await svc.batch_report(TenantScope.of(p), batch_id))


@api.get("/{message_id}", response_model=SuccessEnvelope[EmailDetail])
async def get_email(message_id: str, p: Reader, svc: Service) -> dict[str, Any]:
    return ok(await svc.get_email(TenantScope.of(p), message_id))


sending = APIRouter(prefix="/api/v1/sending", tags=["sending"])


@sending.get("/settings", response_model=SuccessEnvelope[SendingSettings])
async def get_sending_settings(p: Sender, svc: Service) -> dict[str, Any]:
    """The default sender of sends (and campaigns) without `from`, in the key's mode."""
    return ok(await svc.get_sending_settings(TenantScope.of(p)))


@sending.put("/settings", response_model=SuccessEnvelope[SendingSettings])
async def put_sending_settings(body: SendingSettingsIn, p: Sender, svc: Service) -> dict[str, Any]:
    """Replace the default sender (absent fields are cleared); publishes
    `sending_settings.updated`."""
    return ok(await svc.put_sending_settings(TenantScope.of(p), body))


edges = APIRouter(include_in_schema=True, tags=["tracking"])


@edges.get("/t/o/{token}")
async def open_pixel(token: str, request: Request, svc: Service) -> Response:
    await svc.track_open(token, request.headers.get("user-agent"), _client_ip(request))
    return Response(PIXEL_GIF, media_type="image/gif", headers=_NO_STORE)


@edges.get("/t/c/{token}")
async def click(token: str, request: Request, svc: Service) -> Response:
    url = await svc.track_click(token, request.headers.get("user-agent"), _client_ip(request))
    return RedirectResponse(url, status_code=302, headers=_NO_STORE)


@edges.get("/unsubscribe/{token}")
async def unsubscribe_page(token: str, svc: Service) -> HTMLResponse:
    # GET never unsubscribes: mail scanners prefetch links.
    email = await svc.check_unsubscribe(token)
    return HTMLResponse(
        _PAGE.format(
            body=(
                f"<p>Stop emails to <b>{html.escape(email)}</b>?</p>"
                '<form method="post"><button type="submit">Unsubscribe</button></form>'
            )
        ),
        headers=_NO_STORE,
    )


@edges.post("/unsubscribe/{token}")
async def unsubscribe(token: str, request: Request, svc: Service) -> HTMLResponse:
    body = (await request.body())[:1024]
    method = "one_click" if b"List-Unsubscribe=One-Click" in body else "link"
    await svc.unsubscribe(token, method)
    return HTMLResponse(_PAGE.format(body="<p>You are unsubscribed.</p>"), headers=_NO_STORE)


@edges.post("/hooks/esp/{provider}")
async def esp_webhook(provider: str, request: Request, svc: Service) -> JSONResponse:
    applied = await svc.provider_webhook(provider, await _webhook_request(request))
    return JSONResponse(ok({"applied": applied}))


ROUTERS = [api, sending, domains_api.api, edges]

_PAGE = (
    "<!doctype html><html><head><meta charset='utf-8'><title>Unsubscribe</title>"
    "<meta name='robots' content='noindex'></head><body>{body}</body></html>"
)


def _client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _webhook_request(request: Request) -> WebhookRequest:
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}
    return WebhookRequest(headers=headers, body=body, url=str(request.url))


def create_api(settings: DeliverySettings | None = None) -> FastAPI:
    settings = settings or DeliverySettings()
    resources = Resources(settings, schema="delivery", redis=True, vault=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with resources.lifespan(app):
            app.state.delivery = DeliveryService(
                settings, resources.pool, resources.redis, resources.vault
            )
            try:
                yield
            finally:
                await app.state.delivery.close()

    return create_app(
        settings,
        process="api",
        readiness=resources.readiness(),
        lifespan=lifespan,
        routers=ROUTERS,
        title="PenguinMails delivery service",
    )
