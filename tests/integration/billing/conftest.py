"""Billing fixtures: the fake Stripe on a local port, Stripe credentials written to the
OpenBao dev server (read by billing with its own AppRole through `vault:` settings), and the
real billing api/relay/worker processes, started once per session.

Helpers talk to the processes over HTTP with a principal signed like the gateway's, and read
the billing schema to see what the processes did.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest

from libs.common.db import create_pool
from libs.common.principal import PRINCIPAL_HEADER, Principal
from libs.common.provision import provision_vault
from libs.common.vault import make_client
from tests.conftest import ServiceProcess, free_port, service_dsn, service_env
from tests.fakes.stripe import FakeStripe
from tests.principals import unbound_principal

T = TypeVar("T")
LIVE_WHSEC = "whsec_" + uuid.uuid4().hex
TEST_WHSEC = "whsec_" + uuid.uuid4().hex


@dataclass
class BillingStack:
    api: ServiceProcess
    relay: ServiceProcess
    worker: ServiceProcess
    env: dict[str, str]
    fake: FakeStripe

    @property
    def hook_url(self) -> str:
        return f"{self.api.url}/hooks/stripe"


# tests/e2e imports these fixtures too, which makes a second definition of each: without
# sharing, a second billing worker (talking to a second fake Stripe) would compete for the
# same `billing.stripe` queue. One set of processes, stopped when the last user ends.
_shared: dict[str, Any] = {}


def _acquire(name: str, start: Callable[[], Iterator[Any]]) -> Any:
    entry = _shared.get(name)
    if entry is None:
        gen = start()
        entry = _shared[name] = {"gen": gen, "value": next(gen), "users": 0}
    entry["users"] += 1
    return entry["value"]


def _release(name: str) -> None:
    entry = _shared[name]
    entry["users"] -= 1
    if entry["users"] == 0:
        del _shared[name]
        next(entry["gen"], None)


def _fake_stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def fake_stripe() -> Iterator[FakeStripe]:
    yield _acquire("fake_stripe", _fake_stripe)
    _release("fake_stripe")


@pytest.fixture(scope="session")
def billing_vault(vault_dev: Any, fake_stripe: FakeStripe) -> Iterator[dict[str, str]]:
    """Stripe secrets in Vault under billing's own path, and billing's AppRole login."""
    creds = provision_vault(vault_dev.addr, vault_dev.token, ["billing"])
    role_id, secret_id = creds["billing"]
    base = f"billing/test-{os.getpid()}"
    client = make_client(vault_dev.addr, token=vault_dev.token)
    client.secrets.kv.v2.create_or_update_secret(
        path=f"{base}/stripe",
        secret={"value": fake_stripe.keys["live"], "test_value": fake_stripe.keys["test"]},
        mount_point="secret",
    )
    client.secrets.kv.v2.create_or_update_secret(
        path=f"{base}/stripe-webhook",
        secret={"value": LIVE_WHSEC, "test_value": TEST_WHSEC},
        mount_point="secret",
    )
    yield {
        "PM_VAULT_ADDR": vault_dev.addr,
        "PM_VAULT_ROLE_ID": role_id,
        "PM_VAULT_SECRET_ID": secret_id,
        "PM_STRIPE_SECRET_KEY": f"vault:secret/{base}/stripe#value",
        "PM_STRIPE_TEST_SECRET_KEY": f"vault:secret/{base}/stripe#test_value",
        "PM_STRIPE_WEBHOOK_SECRET": f"vault:secret/{base}/stripe-webhook#value",
        "PM_STRIPE_TEST_WEBHOOK_SECRET": f"vault:secret/{base}/stripe-webhook#test_value",
    }
    for path in (f"{base}/stripe", f"{base}/stripe-webhook"):
        client.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point="secret")


@pytest.fixture(scope="session")
def billing_env(
    amqp_url: str, test_database: str, billing_vault: dict[str, str], fake_stripe: FakeStripe
) -> dict[str, str]:
    return service_env(
        "billing",
        amqp_url,
        PM_STRIPE_API_BASE=fake_stripe.url,
        PM_DASHBOARD_URL="http://dashboard.test",
        PM_RETRY_DELAYS_MS="[200, 500, 1000, 2000]",
        PM_STRIPE_MAX_NETWORK_RETRIES="0",
        **billing_vault,
    )


def _billing_stack(billing_env: dict[str, str], fake_stripe: FakeStripe) -> Iterator[BillingStack]:
    api = ServiceProcess("billing", "api", billing_env, free_port())
    relay = ServiceProcess("billing", "relay", billing_env, free_port())
    worker = ServiceProcess("billing", "worker", billing_env, free_port())
    stack = BillingStack(api, relay, worker, billing_env, fake_stripe)
    try:
        for p in (api, relay, worker):
            p.wait_ready(300)  # a shared 2-core host under load starts them slowly
        fake_stripe.add_endpoint(stack.hook_url, LIVE_WHSEC, "live")
        fake_stripe.add_endpoint(stack.hook_url, TEST_WHSEC, "test")
        yield stack
    finally:
        for p in (stack.api, relay, worker):
            p.close()


@pytest.fixture(scope="session")
def billing(billing_env: dict[str, str], fake_stripe: FakeStripe) -> Iterator[BillingStack]:
    yield _acquire("billing", lambda: _billing_stack(billing_env, fake_stripe))
    _release("billing")


@pytest.fixture(scope="session")
async def billing_pool(test_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(service_dsn("billing"), "billing", min_size=1, max_size=4)
    yield pool
    await pool.close()


def principal_headers(
    tenant_id: str, *, subject_type: str = "user", mode: str = "live"
) -> dict[str, str]:
    principal = Principal(
        tenant_id=tenant_id,
        subject_type=subject_type,
        subject_id=f"usr_{tenant_id}",
        scopes=["read_analytics"],
        plan="starter",
        mode=mode,
    )
    return {PRINCIPAL_HEADER: unbound_principal(principal, "billing")}


async def eventually(
    probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 30.0
) -> T:
    """Poll `probe` until it returns a truthy value (processes work asynchronously)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def checkout(
    client: httpx.AsyncClient, stack: BillingStack, tenant_id: str, plan_id: str = "pro"
) -> dict[str, Any]:
    resp = await client.post(
        f"{stack.api.url}/api/v1/billing/checkout-sessions",
        json={"plan_id": plan_id},
        headers=principal_headers(tenant_id),
    )
    assert resp.status_code == 201, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


async def subscribed(
    client: httpx.AsyncClient, stack: BillingStack, pool: asyncpg.Pool, tenant_id: str
) -> str:
    """Checkout pro and pay: returns the subscription id once billing applied it."""
    session = await checkout(client, stack, tenant_id)
    completed = stack.fake.complete_checkout(session["id"])
    sub_id: str = completed["subscription"]

    async def plan_is_pro() -> bool:
        row = await pool.fetchrow("SELECT plan FROM tenant_config WHERE tenant_id = $1", tenant_id)
        return row is not None and row["plan"] == "pro"

    await eventually(plan_is_pro, "tenant plan pro")
    return sub_id


async def processed(pool: asyncpg.Pool, event_id: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT id, processed_at, outcome, source FROM stripe_events"
        " WHERE id = $1 AND processed_at IS NOT NULL",
        event_id,
    )


async def plan_events(pool: asyncpg.Pool, tenant_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT payload FROM outbox WHERE event_type = 'tenant.plan_changed' AND tenant_id = $1"
        " ORDER BY created_at",
        tenant_id,
    )
    return [r["payload"]["data"] for r in rows]
