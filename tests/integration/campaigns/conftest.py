"""Fixtures of the campaigns tests: the real API app (in process, real Postgres and RabbitMQ),
a pool in the `campaigns` schema, and principals signed as the gateway signs them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import httpx
import pytest

from libs.common.db import create_pool
from libs.common.events import DomainVerified, Envelope, make_event
from libs.common.principal import Principal
from services.campaigns.api import create_api
from services.campaigns.consumers import record_domain_state
from services.campaigns.settings import CampaignsSettings
from tests.conftest import ServiceProcess, free_port, service_dsn, service_env
from tests.integration.common.amqp_tools import eventually, publish_raw
from tests.principals import BIND_HOOKS, unbound_principal

__all__ = ["eventually"]

ALL_SCOPES = ["manage_contacts", "manage_templates", "manage_campaigns", "read_analytics"]


@pytest.fixture(scope="session")
async def campaigns_pool(test_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(service_dsn("campaigns"), "campaigns", min_size=1, max_size=8)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def api(test_database: str, amqp_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = CampaignsSettings(
        database_url=service_dsn("campaigns"), amqp_url=amqp_url, environment="test"
    )
    app = create_api(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://campaigns", event_hooks=BIND_HOOKS
        ) as client:
            yield client


def principal_headers(
    tenant_id: str, scopes: list[str] | None = None, mode: str = "live"
) -> dict[str, str]:
    principal = Principal(
        tenant_id=tenant_id,
        subject_type="api_key",
        subject_id=f"key_{tenant_id}",
        scopes=ALL_SCOPES if scopes is None else scopes,
        plan="pro",
        mode=mode,
    )
    return {"X-PM-Principal": unbound_principal(principal, "campaigns")}


@pytest.fixture
def tenant(unique: str) -> str:
    return f"t_{unique}"


SENDER_DOMAINS = ("penguin.example", "p.example")


async def verify_domains(pool: asyncpg.Pool, tenant: str, *names: str) -> None:
    """Record `names` as verified for `tenant` through the consumer delivery's
    `domain.verified` facts reach (live campaigns start only from verified domains)."""
    async with pool.acquire() as conn, conn.transaction():
        for name in names:
            event = make_event(
                DomainVerified(domain_id=f"dom_{name}", name=name),
                tenant_id=tenant,
                source="/services/delivery",
            )
            await record_domain_state(event, conn)


@pytest.fixture
async def sender_domains(tenant: str, campaigns_pool: asyncpg.Pool) -> tuple[str, ...]:
    await verify_domains(campaigns_pool, tenant, *SENDER_DOMAINS)
    return SENDER_DOMAINS


@pytest.fixture
def auth(tenant: str, sender_domains: tuple[str, ...]) -> dict[str, str]:
    return principal_headers(tenant)


Json = dict[str, Any]
HeadersFor = Callable[..., dict[str, str]]


@pytest.fixture(scope="session")
def processes(amqp_url: str, test_database: str) -> Iterator[Callable[..., ServiceProcess]]:
    """Start real `python -m services.campaigns <process>` children (killed at the end)."""
    started: list[ServiceProcess] = []

    def start(process: str, **env: str) -> ServiceProcess:
        p = ServiceProcess(
            "campaigns",
            process,
            service_env("campaigns", amqp_url, PM_RETRY_DELAYS_MS="[200, 500]", **env),
            free_port(),
        )
        started.append(p)
        return p

    yield start
    for p in started:
        p.close()


@pytest.fixture(scope="session")
def worker(processes: Callable[..., ServiceProcess]) -> ServiceProcess:
    """The campaigns worker (analytics and engagement consumers), ready."""
    p = processes("worker")
    p.wait_ready(60)
    return p


async def publish(amqp_url: str, *events: Envelope) -> None:
    for event in events:
        await publish_raw(amqp_url, event)


def handled(worker: ServiceProcess, queue: str, outcome: str) -> float:
    """The worker's `pm_events_handled_total` for one queue and outcome (from /metrics)."""
    text = httpx.get(f"{worker.url}/metrics", timeout=5).text
    for line in text.splitlines():
        if (
            line.startswith("pm_events_handled_total{")
            and f'queue="{queue}"' in line
            and (f'outcome="{outcome}"' in line)
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
