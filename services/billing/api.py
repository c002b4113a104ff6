"""HTTP API of the billing service: `/api/v1/billing/*` for dashboard users (behind the
gateway's signed principal) and `POST /hooks/stripe` for Stripe (no principal: the
`Stripe-Signature` is verified instead). Routers are declared at module level; who may call
them is `auth.py`, settings come from the app (`app.state.settings`)."""

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse

from libs.common.app import app_settings, create_app
from libs.common.http import ApiError, ErrorEnvelope, SuccessEnvelope, ok
from libs.common.pagination import ListParams, list_params, reject_unknown_query
from libs.common.resources import Resources
from services.billing.auth import Owner
from services.billing.schemas import (
    BillingStateOut,
    CheckoutSessionIn,
    CheckoutSessionOut,
    PaymentOut,
    PlanOut,
    PortalSessionIn,
    PortalSessionOut,
    WebhookReceipt,
)
from services.billing.service import BillingService
from services.billing.settings import BillingSettings
from services.billing.stripe_api import StripeApi

_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorEnvelope} for s in (400, 401, 403, 404, 409, 422, 502, 503)
}


def _service(request: Request) -> BillingService:
    svc: BillingService = request.app.state.billing
    return svc


Service = Annotated[BillingService, Depends(_service)]
Settings = Annotated[BillingSettings, Depends(app_settings)]
PaymentParams = Annotated[ListParams, Depends(list_params(("created_at",), default_limit=25))]


api = APIRouter(
    prefix="/api/v1/billing",
    tags=["billing"],
    responses=_ERRORS,
    dependencies=[Depends(reject_unknown_query)],
)


@api.get("/plans", response_model=SuccessEnvelope[list[PlanOut]])
async def list_plans(p: Owner, svc: Service) -> dict[str, Any]:
    return ok(svc.plans(p.mode))


@api.post("/checkout-sessions", status_code=201, response_model=SuccessEnvelope[CheckoutSessionOut])
async def create_checkout_session(
    body: CheckoutSessionIn, p: Owner, svc: Service
) -> dict[str, Any]:
    return ok(await svc.create_checkout_session(p.tenant_id, p.mode, body.plan_id))


@api.post("/portal-sessions", status_code=201, response_model=SuccessEnvelope[PortalSessionOut])
async def create_portal_session(
    p: Owner, svc: Service, body: PortalSessionIn | None = None
) -> dict[str, Any]:
    return ok(await svc.create_portal_session(p.tenant_id, p.mode))


@api.get("/subscription", response_model=SuccessEnvelope[BillingStateOut])
async def get_subscription(p: Owner, svc: Service) -> dict[str, Any]:
    return ok(await svc.subscription_view(p.tenant_id, p.mode))


@api.get("/payments", response_model=SuccessEnvelope[list[PaymentOut]])
async def list_payments(
    p: Owner,
    svc: Service,
    params: PaymentParams,
    status: Annotated[str | None, Query(max_length=50, description="Exact status.")] = None,
    subscription_id: Annotated[str | None, Query(max_length=255)] = None,
) -> dict[str, Any]:
    page = await svc.payments(
        p.tenant_id, p.mode, params, status=status, subscription_id=subscription_id
    )
    return page.envelope()


hooks = APIRouter(tags=["stripe"], responses=_ERRORS)


@hooks.post("/hooks/stripe", response_model=SuccessEnvelope[WebhookReceipt])
async def stripe_webhook(request: Request, svc: Service, settings: Settings) -> JSONResponse:
    payload = await _bounded_body(request, settings.stripe_webhook_max_bytes)
    event_id, stored = await svc.receive_webhook(payload, request.headers.get("stripe-signature"))
    return JSONResponse(ok({"received": True, "event_id": event_id, "duplicate": not stored}))


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


def create_api(settings: BillingSettings | None = None) -> FastAPI:
    settings = settings or BillingSettings()
    resources = Resources(settings, schema="billing")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with resources.lifespan(app):
            stripe_api = StripeApi(settings)
            app.state.billing = BillingService(settings, resources.pool, stripe_api)
            try:
                yield
            finally:
                await stripe_api.close()

    return create_app(
        settings,
        process="api",
        readiness=resources.readiness(),
        lifespan=lifespan,
        routers=[api, hooks],
        title="PenguinMails billing service",
    )
