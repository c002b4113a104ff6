"""create_app: operational routes, readiness, metrics, and the wiring of the shared parts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from libs.common.app import create_app
from libs.common.http import ok
from libs.common.settings import ServiceSettings


async def passing() -> bool:
    return True


async def failing() -> bool:
    return False


async def raising() -> bool:
    raise ConnectionRefusedError("postgres down")


async def hanging() -> bool:
    await asyncio.sleep(60)
    return True


def make_client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://svc")


def contacts_router() -> APIRouter:
    router = APIRouter(prefix="/api/v1/contacts")

    @router.get("/{contact_id}")
    async def get_contact(contact_id: str) -> dict[str, object]:
        return ok({"id": contact_id})

    return router


# --- /healthz and /readyz --------------------------------------------------------------------


async def test_healthz_is_always_ok() -> None:
    app = create_app(
        ServiceSettings(service_name="app-health"), process="api", readiness={"db": failing}
    )
    async with make_client(app) as client:
        resp = await client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}


async def test_readyz_ok_when_every_check_passes() -> None:
    checks = {"postgres": passing, "rabbitmq": passing}
    app = create_app(ServiceSettings(service_name="app-ready"), process="api", readiness=checks)
    async with make_client(app) as client:
        resp = await client.get("/readyz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ready", "checks": {"postgres": "ok", "rabbitmq": "ok"}}


async def test_readyz_without_checks_is_ready() -> None:
    app = create_app(ServiceSettings(service_name="app-ready-empty"), process="relay")
    async with make_client(app) as client:
        resp = await client.get("/readyz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ready", "checks": {}}


async def test_readyz_503_names_failing_raising_and_hanging_checks() -> None:
    checks = {"postgres": passing, "redis": failing, "rabbitmq": raising, "vault": hanging}
    app = create_app(
        ServiceSettings(service_name="app-not-ready"),
        process="api",
        readiness=checks,
        readiness_timeout=0.3,
    )
    async with make_client(app) as client:
        started = time.monotonic()
        resp = await client.get("/readyz")
        elapsed = time.monotonic() - started
    assert resp.status_code == 503
    assert resp.json() == {
        "status": "not_ready",
        "checks": {"postgres": "ok", "redis": "fail", "rabbitmq": "fail", "vault": "fail"},
    }
    assert "postgres down" not in resp.text
    assert elapsed < 2.0, "a hanging check must be cut off at the timeout"


async def test_readyz_default_timeout_is_two_seconds() -> None:
    app = create_app(
        ServiceSettings(service_name="app-slow"), process="api", readiness={"vault": hanging}
    )
    async with make_client(app) as client:
        started = time.monotonic()
        resp = await client.get("/readyz")
        elapsed = time.monotonic() - started
    assert resp.status_code == 503
    assert 1.9 <= elapsed < 3.0


async def test_readyz_runs_checks_concurrently() -> None:
    async def slow() -> bool:
        await asyncio.sleep(0.4)
        return True

    checks = {"a": slow, "b": slow, "c": slow}
    app = create_app(
        ServiceSettings(service_name="app-concurrent"), process="api", readiness=checks
    )
    async with make_client(app) as client:
        started = time.monotonic()
        resp = await client.get("/readyz")
        elapsed = time.monotonic() - started
    assert resp.status_code == 200
    assert elapsed < 1.0


# --- /metrics --------------------------------------------------------------------------------


async def test_metrics_use_the_route_template() -> None:
    app = create_app(
        ServiceSettings(service_name="app-metrics"), process="api", routers=[contacts_router()]
    )
    async with make_client(app) as client:
        assert (await client.get("/api/v1/contacts/c_8731")).status_code == 200
        assert (await client.get("/api/v1/contacts/c_9999")).status_code == 200
        assert (await client.get("/no/such/path/x_123")).status_code == 404
        resp = await client.get("/metrics")

    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    counter = (
        'pm_http_requests_total{method="GET",route="/api/v1/contacts/{contact_id}",'
        'service="app-metrics",status="200"} 2.0'
    )
    assert counter in text
    assert (
        'pm_http_request_duration_seconds_count{method="GET",'
        'route="/api/v1/contacts/{contact_id}",service="app-metrics",status="200"} 2.0'
    ) in text
    assert 'route="<unmatched>",service="app-metrics",status="404"' in text
    for raw in ("c_8731", "c_9999", "x_123"):
        assert raw not in text


# --- wiring ----------------------------------------------------------------------------------


async def test_service_routes_get_envelopes_and_request_ids() -> None:
    app = create_app(
        ServiceSettings(service_name="app-wiring"), process="api", routers=[contacts_router()]
    )
    async with make_client(app) as client:
        resp = await client.get("/api/v1/contacts/c_1", headers={"X-Request-Id": "trace-me"})
        missing = await client.get("/api/v1/nope")
    assert resp.headers["X-Request-Id"] == "trace-me"
    assert resp.json()["meta"]["request_id"] == "trace-me"
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert missing.json()["error"]["request_id"] == missing.headers["X-Request-Id"]


async def test_a_trailing_slash_is_404_not_a_redirect() -> None:
    # Behind the gateway, Starlette's 307 pointed at the service's internal address (found by
    # the contract fuzz).
    app = create_app(
        ServiceSettings(service_name="app-slash"), process="api", routers=[contacts_router()]
    )
    async with make_client(app) as client:
        resp = await client.get("/api/v1/contacts/c_1/")
    assert resp.status_code == 404
    assert "location" not in resp.headers
    assert resp.json()["error"]["code"] == "not_found"


def test_operational_routes_are_not_in_openapi() -> None:
    app = create_app(
        ServiceSettings(service_name="app-openapi"),
        process="api",
        routers=[contacts_router()],
        title="PenguinMails test API",
    )
    schema = app.openapi()
    assert schema["info"]["title"] == "PenguinMails test API"
    assert "/api/v1/contacts/{contact_id}" in schema["paths"]
    for path in ("/healthz", "/readyz", "/metrics"):
        assert path not in schema["paths"]


async def test_lifespan_is_run() -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("start")
        yield
        events.append("stop")

    app = create_app(ServiceSettings(service_name="app-lifespan"), process="api", lifespan=lifespan)
    async with app.router.lifespan_context(app), make_client(app) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert events == ["start"]
    assert events == ["start", "stop"]


@pytest.mark.parametrize("process", ["api", "worker"])
def test_default_title_names_service_and_process(process: str) -> None:
    app = create_app(ServiceSettings(service_name="keys"), process=process)
    assert app.title == f"PenguinMails keys {process}"


async def test_one_server_span_per_request_without_asgi_message_spans() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    from libs.common.telemetry import configure_tracing

    exporter = InMemorySpanExporter()
    configure_tracing("app-spans", None).add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(
        ServiceSettings(service_name="app-spans"), process="api", routers=[contacts_router()]
    )
    async with make_client(app) as client:
        assert (await client.get("/api/v1/contacts/c_9")).status_code == 200
    spans = [s for s in exporter.get_finished_spans() if "/api/v1/contacts" in s.name]
    assert [s.kind for s in spans] == [SpanKind.SERVER], [s.name for s in spans]
    exporter.shutdown()
