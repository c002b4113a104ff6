"""HTTP API of the gateway service: the public entry point: authenticates API keys and JWTs,
enforces scopes, rate-limits, honours idempotency keys and forwards to the owning service.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from libs.common.app import create_app
from libs.common.http import NotFound
from libs.common.resources import Resources
from services.gateway.dashboard import dashboard_router
from services.gateway.docs_routes import docs_router
from services.gateway.pipeline import Gateway
from services.gateway.settings import GatewaySettings

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


async def _proxy(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    return await gateway.handle(request)


def create_api(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    # Redis is optional at run time (local fallbacks), so it is not a readiness condition.
    resources = Resources(settings, schema=None, redis=True, amqp=False)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with resources.lifespan(app):
            gateway = Gateway(settings, resources.redis)
            app.state.gateway = gateway
            await gateway.start()
            try:
                yield
            finally:
                await gateway.close()

    # A plain Starlette route: the gateway parses nothing, so FastAPI's request handling
    # would be pure overhead on the hot path.
    router = APIRouter()
    router.routes.append(Route("/{path:path}", _proxy, methods=METHODS, include_in_schema=False))
    app = create_app(
        settings,
        process="api",
        readiness={},
        lifespan=lifespan,
        routers=[docs_router(), dashboard_router(settings.dashboard_dir), router],
        title="PenguinMails gateway service",
    )
    # /metrics is served on the metrics port only (services/gateway/__main__.py); on the public
    # port it is a 404 like any unknown path (this route is matched before create_app's).
    app.router.routes.insert(0, Route("/metrics", _no_metrics, include_in_schema=False))
    return app


async def _no_metrics(request: Request) -> Response:
    raise NotFound("No route matches this path.")
