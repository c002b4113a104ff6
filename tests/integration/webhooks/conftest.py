"""Fixtures of the webhooks integration tests: the service's settings against the test
infrastructure, its API app (lifespan run), an in-process delivery engine, event publishing
on `pm.events` as the outbox relays do, and principals signed as the gateway signs them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from libs.common.db import create_pool
from libs.common.events import EmailOpened, Envelope, EventData, make_event
from libs.common.principal import Principal
from libs.common.resources import Resources
from services.webhooks.api import create_api
from services.webhooks.settings import WebhooksSettings
from services.webhooks.worker import Engine
from tests.conftest import service_dsn
from tests.integration.common.amqp_tools import events_exchange, publish_on
from tests.principals import BIND_HOOKS, unbound_principal

LOOPBACK = ["127.0.0.0/8", "::1/128"]


@pytest.fixture(scope="session")
def base_settings(test_database: str, amqp_url: str, vault_dev: Any) -> WebhooksSettings:
    return WebhooksSettings(
        environment="test",
        database_url=service_dsn("webhooks"),
        amqp_url=amqp_url,
        vault_addr=vault_dev.addr,
        vault_token=vault_dev.token,
        webhooks_allow_http=True,
        webhooks_allowed_networks=LOOPBACK,
        webhooks_retry_jitter=0.0,
        webhooks_sweep_interval_seconds=0.5,
        webhooks_sweep_grace_seconds=2.0,
        webhooks_lease_margin_seconds=2.0,
        db_pool_max=8,
    )


@pytest.fixture(scope="session")
async def wh_pool(test_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(service_dsn("webhooks"), "webhooks", min_size=1, max_size=4)
    yield pool
    await pool.close()


def principal_header(
    settings: WebhooksSettings,
    tenant_id: str,
    *,
    scopes: tuple[str, ...] = ("manage_webhooks",),
    mode: str = "live",
) -> dict[str, str]:
    principal = Principal(
        tenant_id=tenant_id,
        subject_type="api_key",
        subject_id="key_test",
        scopes=list(scopes),
        plan="pro",
        mode=mode,
    )
    token = unbound_principal(principal, settings.service_name)
    return {"X-PM-Principal": token}


@dataclass
class Api:
    client: httpx.AsyncClient
    settings: WebhooksSettings

    def as_tenant(self, tenant_id: str, **kwargs: Any) -> dict[str, str]:
        return principal_header(self.settings, tenant_id, **kwargs)

    async def create(self, tenant_id: str, **body: Any) -> dict[str, Any]:
        r = await self.client.post("/api/v1/webhooks", json=body, headers=self.as_tenant(tenant_id))
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()["data"]
        return data


@pytest.fixture
async def make_api() -> AsyncIterator[Callable[..., Any]]:
    """`await make_api(settings)`: the service app with its lifespan running."""
    stack: list[Any] = []

    async def _make(settings: WebhooksSettings) -> Api:
        app = create_api(settings)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://svc", event_hooks=BIND_HOOKS
        )
        stack.append((lifespan, client))
        return Api(client, settings)

    yield _make
    for lifespan, client in reversed(stack):
        await client.aclose()
        await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def api(make_api: Callable[..., Any], base_settings: WebhooksSettings) -> Api:
    result: Api = await make_api(base_settings)
    return result


@pytest.fixture
async def make_engine() -> AsyncIterator[Callable[..., Any]]:
    """`await make_engine(settings)`: the worker's engine (`services.webhooks.worker.Engine`:
    fan-out consumer, attempt consumer, sweeper, outcome writer) running in this process
    against the real servers."""
    running: list[tuple[Resources, Engine]] = []

    async def _make(settings: WebhooksSettings) -> Engine:
        resources = Resources(settings, schema="webhooks", vault=True, amqp=False)
        await resources.open()
        engine = Engine.build(settings, resources)
        await engine.start()
        running.append((resources, engine))
        return engine

    yield _make
    for resources, engine in reversed(running):
        await engine.stop(drain_seconds=2)
        await resources.close()


@pytest.fixture
async def publish(amqp_url: str) -> AsyncIterator[Callable[..., Any]]:
    """Publish envelopes on `pm.events` exactly as the outbox relay does."""
    connection = await aio_pika.connect_robust(amqp_url)
    exchange = await events_exchange(await connection.channel(publisher_confirms=True))

    async def _publish(*events: Envelope) -> None:
        await publish_on(exchange, events)

    yield _publish
    await connection.close()


def event(data: EventData, tenant_id: str) -> Envelope:
    return make_event(data, tenant_id=tenant_id, source="/services/delivery")


def opened(tenant_id: str, n: int = 0, **extra: Any) -> Envelope:
    fields: dict[str, Any] = {"message_id": f"em_{n}", "to": f"u{n}@example.com", **extra}
    return event(EmailOpened(**fields), tenant_id)
