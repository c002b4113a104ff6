"""The FastAPI application every HTTP process starts from.

Owns the wiring all processes share: JSON logging and tracing set-up, OpenTelemetry
instrumentation, the request-id / access-log / metrics middlewares, error envelopes, and the
operational routes `/healthz`, `/readyz` and `/metrics`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from starlette.responses import Response
from starlette.types import Lifespan

from libs.common import http, pagination
from libs.common.http import RequestIdMiddleware, install_error_handlers
from libs.common.settings import ServiceSettings
from libs.common.telemetry import (
    AccessLogMiddleware,
    HttpMetricsMiddleware,
    configure_logging,
    configure_tracing,
    metrics_response,
)

__all__ = ["READINESS_TIMEOUT_SECONDS", "ReadinessCheck", "check_readiness", "create_app"]

logger = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]
READINESS_TIMEOUT_SECONDS = 2.0
_OPERATIONAL_PATHS = ("/healthz", "/readyz", "/metrics")
# Probes and scrapes are not traced: they would drown the traces that matter. The
# instrumentation matches these against the full URL.
_UNTRACED_URLS = r"^[a-z]+://[^/]+/(healthz|readyz|metrics)$"


async def _run_check(name: str, check: ReadinessCheck, limit_seconds: float) -> bool:
    try:
        return bool(await asyncio.wait_for(check(), limit_seconds))
    except TimeoutError:
        logger.warning("readiness check %s timed out after %.1fs", name, limit_seconds)
    except Exception as exc:
        logger.warning("readiness check %s raised %s", name, type(exc).__name__, exc_info=exc)
    return False


async def check_readiness(
    checks: Mapping[str, ReadinessCheck], limit_seconds: float = READINESS_TIMEOUT_SECONDS
) -> dict[str, bool]:
    """Run every check concurrently; a check that returns false, raises or exceeds
    `limit_seconds` fails."""
    names = list(checks)
    results = await asyncio.gather(*(_run_check(n, checks[n], limit_seconds) for n in names))
    return dict(zip(names, results, strict=True))


def _operational_router(
    readiness: Mapping[str, ReadinessCheck], readiness_timeout: float
) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        results = await check_readiness(readiness, readiness_timeout)
        ready = all(results.values())
        body: dict[str, Any] = {
            "status": "ready" if ready else "not_ready",
            "checks": {name: "ok" if passed else "fail" for name, passed in results.items()},
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        return metrics_response()

    return router


def app_settings(request: Request) -> Any:
    """The settings the app was built with (`create_app`): a dependency for module-level
    routers, e.g. `Annotated[MySettings, Depends(app_settings)]`."""
    return request.app.state.settings


def create_app(
    settings: ServiceSettings,
    *,
    process: str,
    readiness: Mapping[str, ReadinessCheck] | None = None,
    routers: Iterable[APIRouter] = (),
    title: str | None = None,
    lifespan: Lifespan[FastAPI] | None = None,
    readiness_timeout: float = READINESS_TIMEOUT_SECONDS,
) -> FastAPI:
    """A FastAPI app for `settings.service_name`'s `process` (api, relay, worker, ...).

    `readiness` maps a dependency name to an async check, e.g.
    `{"postgres": db.is_ready, "rabbitmq": bus.is_ready}`; `/readyz` is 503 while any fails.
    """
    service = settings.service_name
    http.STRICT_RESPONSE_FIELDS = settings.environment != "production"
    pagination.configure_cursors(settings.cursor_key.get_secret_value())
    configure_logging(service, settings.log_level, process=process)
    tracer_provider = configure_tracing(
        service, settings.otel_exporter_otlp_endpoint, process=process
    )

    # No trailing-slash redirects: behind the gateway, Starlette's 307 pointed at the
    # service's own (internal) address (found by the contract fuzz: `PUT /campaigns/`). A
    # path with a trailing slash is a 404 like any other unknown path.
    app = FastAPI(
        title=title or f"PenguinMails {service} {process}",
        lifespan=lifespan,
        redirect_slashes=False,
    )
    # Module-level routers read their settings here (`current_principal`, `request_settings`).
    app.state.settings = settings
    # Middlewares wrap in reverse order of addition: request id outermost so the access
    # log, metrics and error envelopes all see it; the error catch-all innermost.
    install_error_handlers(app)
    app.add_middleware(HttpMetricsMiddleware, service=service)
    app.add_middleware(AccessLogMiddleware, quiet_paths=_OPERATIONAL_PATHS)
    app.add_middleware(RequestIdMiddleware)

    app.include_router(_operational_router(dict(readiness or {}), readiness_timeout))
    for router in routers:
        app.include_router(router)

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=tracer_provider,
        excluded_urls=_UNTRACED_URLS,
        # One server span per request; the per-ASGI-message "http receive"/"http send"
        # child spans cost more than the gateway's whole auth path and tell nothing new.
        exclude_spans=["receive", "send"],
    )
    return app
