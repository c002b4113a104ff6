"""HTTP API of the webhooks service: customer endpoints, secrets, test sends, the delivery log,
retry and recover, stats and health. Thin: parse, call `EndpointService`, shape the envelope.
Every route needs the `manage_webhooks` scope (`auth.py`). The router is declared at module
level; settings come from the app (`app.state.settings`).
"""

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request

from libs.common.app import create_app
from libs.common.http import Deleted, ErrorEnvelope, SuccessEnvelope, ValidationFailed, ok
from libs.common.pagination import ListParams, list_params, reject_unknown_query
from libs.common.principal import Principal
from libs.common.resources import Resources
from libs.common.tenancy import TenantScope
from libs.common.timestamps import Timestamp
from services.webhooks.address_guard import parse_networks
from services.webhooks.auth import Scoped
from services.webhooks.events_api import router as events_router
from services.webhooks.events_service import EventsService
from services.webhooks.schemas import (
    Delivery,
    DeliveryDetail,
    DeliveryStatus,
    Endpoint,
    EndpointCreate,
    EndpointCreated,
    EndpointStats,
    EndpointUpdate,
    Recover,
    Recovered,
    RotateSecret,
    SampleSendResult,
    SecretRotated,
    TestSend,
)
from services.webhooks.secret_store import SecretStore
from services.webhooks.service import AttemptContext, EndpointService
from services.webhooks.settings import WebhooksSettings
from services.webhooks.stream import StreamHub
from services.webhooks.transport import WebhookTransport

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (401, 403, 404, 409, 422)
}
EndpointParams = Annotated[ListParams, Depends(list_params(("created_at",), default_limit=20))]
DeliveryParams = Annotated[ListParams, Depends(list_params(("created_at",), default_limit=50))]


def _service(request: Request) -> EndpointService:
    service: EndpointService = request.app.state.webhooks
    return service


Service = Annotated[EndpointService, Depends(_service)]


def _caller(p: Principal) -> TenantScope:
    return TenantScope.of(p)


def _utc(value: datetime | None, field: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValidationFailed(details=[{"field": field, "message": "give a timezone (e.g. Z)"}])
    return value.astimezone(UTC) if value is not None else None


router = APIRouter(
    prefix="/api/v1/webhooks",
    tags=["webhooks"],
    responses=ERRORS,
    dependencies=[Depends(reject_unknown_query)],
)


@router.post(
    "",
    status_code=201,
    response_model=SuccessEnvelope[EndpointCreated],
    summary="Create an endpoint (the secret is shown once)",
)
async def create_endpoint(body: EndpointCreate, p: Scoped, svc: Service) -> dict[str, Any]:
    spec = {
        **body.model_dump(exclude={"secret", "filters"}),
        "campaign_ids": body.filters.campaign_ids,
        "contact_tags": body.filters.contact_tags,
        "secret": body.secret.get_secret_value() if body.secret else None,
    }
    return ok(await svc.create(_caller(p), spec))


@router.get("", response_model=SuccessEnvelope[list[Endpoint]], summary="List endpoints")
async def list_endpoints(
    p: Scoped,
    svc: Service,
    params: EndpointParams,
    enabled: bool | None = None,
    url: Annotated[str | None, Query(max_length=2048, description="Exact URL.")] = None,
) -> dict[str, Any]:
    return (await svc.list(_caller(p), params, enabled=enabled, url=url)).envelope()


@router.get("/{endpoint_id}", response_model=SuccessEnvelope[Endpoint], summary="Get an endpoint")
async def get_endpoint(endpoint_id: str, p: Scoped, svc: Service) -> dict[str, Any]:
    return ok(await svc.get(_caller(p), endpoint_id))


@router.patch(
    "/{endpoint_id}",
    name="patch_endpoint",
    response_model=SuccessEnvelope[Endpoint],
    summary="Update an endpoint (omitted fields are kept)",
)
@router.put(
    "/{endpoint_id}",
    response_model=SuccessEnvelope[Endpoint],
    summary="Update an endpoint (omitted fields are kept)",
)
async def update_endpoint(
    endpoint_id: str, body: EndpointUpdate, p: Scoped, svc: Service
) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name in body.model_fields_set:
        value = getattr(body, name)
        if name == "filters":
            if value is not None:
                changes["campaign_ids"] = value.campaign_ids
                changes["contact_tags"] = value.contact_tags
        elif value is not None or name in ("description", "retry_schedule"):
            changes[name] = value
    return ok(await svc.update(_caller(p), endpoint_id, changes))


@router.delete(
    "/{endpoint_id}",
    response_model=SuccessEnvelope[Deleted],
    summary="Delete an endpoint, its secret and its log",
)
async def delete_endpoint(endpoint_id: str, p: Scoped, svc: Service) -> dict[str, Any]:
    await svc.delete(_caller(p), endpoint_id)
    return ok({"id": endpoint_id, "deleted": True})


@router.post(
    "/{endpoint_id}/rotate-secret",
    response_model=SuccessEnvelope[SecretRotated],
    summary="New secret; the old one signs 24 h more",
)
async def rotate_secret(
    endpoint_id: str, p: Scoped, svc: Service, body: RotateSecret | None = None
) -> dict[str, Any]:
    supplied = body.secret.get_secret_value() if body and body.secret else None
    return ok(await svc.rotate_secret(_caller(p), endpoint_id, supplied))


@router.post(
    "/{endpoint_id}/test",
    response_model=SuccessEnvelope[SampleSendResult],
    summary="Send a sample event now; returns the attempt",
)
async def send_test(
    endpoint_id: str, p: Scoped, svc: Service, body: TestSend | None = None
) -> dict[str, Any]:
    event_type = body.event_type if body else "email.opened"
    return ok(await svc.send_test(_caller(p), endpoint_id, event_type))


@router.get(
    "/{endpoint_id}/deliveries",
    response_model=SuccessEnvelope[list[Delivery]],
    summary="The delivery log",
)
async def list_deliveries(
    endpoint_id: str,
    p: Scoped,
    svc: Service,
    params: DeliveryParams,
    status: DeliveryStatus | None = None,
    event_type: Annotated[str | None, Query(max_length=100)] = None,
    created_after: Timestamp | None = None,
    created_before: Timestamp | None = None,
) -> dict[str, Any]:
    page = await svc.deliveries(
        _caller(p),
        endpoint_id,
        status=status,
        event_type=event_type,
        created_after=_utc(created_after, "query.created_after"),
        created_before=_utc(created_before, "query.created_before"),
        params=params,
    )
    return page.envelope()


@router.get(
    "/{endpoint_id}/deliveries/{delivery_id}",
    response_model=SuccessEnvelope[DeliveryDetail],
    summary="A delivery and its attempts",
)
async def get_delivery(
    endpoint_id: str, delivery_id: str, p: Scoped, svc: Service
) -> dict[str, Any]:
    return ok(await svc.delivery(_caller(p), endpoint_id, delivery_id))


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=SuccessEnvelope[DeliveryDetail],
    summary="Send a finished delivery again (fresh retry cycle, same id)",
)
async def retry_delivery(
    endpoint_id: str, delivery_id: str, p: Scoped, svc: Service
) -> dict[str, Any]:
    return ok(await svc.retry(_caller(p), endpoint_id, delivery_id))


@router.post(
    "/{endpoint_id}/recover",
    status_code=202,
    response_model=SuccessEnvelope[Recovered],
    summary="Re-send every failed delivery created since a time",
)
async def recover(endpoint_id: str, body: Recover, p: Scoped, svc: Service) -> dict[str, Any]:
    since = _utc(body.since, "body.since")
    assert since is not None
    return ok(await svc.recover(_caller(p), endpoint_id, since, _utc(body.until, "body.until")))


@router.get(
    "/{endpoint_id}/stats",
    response_model=SuccessEnvelope[EndpointStats],
    summary="Success and error rates, latency, health",
)
async def stats(endpoint_id: str, p: Scoped, svc: Service) -> dict[str, Any]:
    return ok(await svc.stats(_caller(p), endpoint_id))


def create_api(settings: WebhooksSettings | None = None) -> FastAPI:
    settings = settings or WebhooksSettings()
    resources = Resources(settings, schema="webhooks", vault=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with resources.lifespan(app):
            transport = WebhookTransport(
                timeout=settings.webhooks_attempt_timeout_seconds,
                body_limit=settings.webhooks_response_body_limit,
                max_connections=100,
            )
            ctx = AttemptContext(
                settings,
                SecretStore(resources.vault),
                transport,
                parse_networks(settings.webhooks_allowed_networks),
            )
            app.state.webhooks = EndpointService(resources.pool, ctx)
            hub = StreamHub(settings.database_url, settings.events_stream_queue_max)
            await hub.start()
            app.state.events = EventsService(resources.pool, hub, settings)
            try:
                yield
            finally:
                await hub.close()
                await transport.close()

    return create_app(
        settings,
        process="api",
        readiness=resources.readiness(),
        lifespan=lifespan,
        routers=[router, events_router],
        title="PenguinMails webhooks service",
    )


__all__ = ["create_api", "router"]
