"""The whole product behind one real gateway: keys, campaigns (api, relay, worker, runner),
delivery (api, relay, worker), webhooks (api, relay, worker, stream), inbox (api, relay, worker and
its SMTP listener: replies to sent mail make threads), billing (against the fake Stripe). For
tests that send the
documented request bodies the way an integrator does (issue 15).

Delivery runs with `PM_FORCE_SANDBOX=true`: live-mode mail goes to the platform's own
sandbox connector instead of an ESP on the internet (none is reachable here).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest

from libs.common.principal import SCOPES
from tests.conftest import ServiceProcess, _rabbitmqctl, free_port, service_dsn, service_env
from tests.fakes.cloudflare import FakeCloudflare
from tests.fakes.dns_server import FakeDns
from tests.integration.billing.conftest import BillingStack
from tests.integration.billing.conftest import billing as billing
from tests.integration.billing.conftest import billing_env as billing_env
from tests.integration.billing.conftest import billing_vault as billing_vault
from tests.integration.billing.conftest import fake_stripe as fake_stripe
from tests.integration.keys.platform_stack import Platform, bearer
from tests.integration.keys.platform_stack import keys_vault as keys_vault
from tests.integration.keys.platform_stack import platform as platform_fixture

platform = platform_fixture


# The domain the inbox's SMTP listener takes replies for (the stack's reply addresses).
REPLY_DOMAIN = "reply.contract.test"


@dataclass
class Stack:
    gw: str
    processes: list[ServiceProcess]
    dns: FakeDns
    smtp_port: int  # the inbox's inbound SMTP listener (127.0.0.1)

    def logs(self) -> str:
        return "\n".join(f"== {p.service} {p.process}\n{p.logs()}" for p in self.processes)


@pytest.fixture(scope="module")
def contract_vhost(amqp_url: str) -> Iterator[str]:
    """A vhost of this module's own: the durable queues this stack declares would otherwise
    collect every event the rest of the session publishes."""
    base, _, vhost = amqp_url.rpartition("/")
    own = f"{vhost}_contract"
    _rabbitmqctl("add_vhost", own)
    _rabbitmqctl("set_permissions", "-p", own, "guest", ".*", ".*", ".*")
    yield f"{base}/{own}"
    _rabbitmqctl("delete_vhost", own)


@pytest.fixture(scope="module")
def contract_dns() -> Iterator[FakeDns]:
    """The DNS server delivery verifies sending domains against."""
    dns = FakeDns().start()
    yield dns
    dns.stop()


# The token of the docs' `PUT /domains/dns-credentials` example: the fake accepts it.
CLOUDFLARE_TOKEN = "cf-token-0123456789abcdef"


@pytest.fixture(scope="module")
def contract_cloudflare(contract_dns: FakeDns) -> Iterator[FakeCloudflare]:
    """Cloudflare's API for publishing DNS records (any zone asked for exists)."""
    cf = FakeCloudflare(CLOUDFLARE_TOKEN, auto_zones=True).serve_with(contract_dns)
    cf.start()
    yield cf
    cf.stop()


@pytest.fixture(scope="module")
def stack(
    platform: Platform,
    vault_dev: Any,
    contract_vhost: str,
    contract_dns: FakeDns,
    contract_cloudflare: FakeCloudflare,
    billing: BillingStack,
) -> Iterator[Stack]:
    amqp = contract_vhost
    vault = {"PM_VAULT_ADDR": vault_dev.addr, "PM_VAULT_TOKEN": vault_dev.token}
    campaigns_env = service_env("campaigns", amqp)
    delivery_env = service_env(
        "delivery",
        amqp,
        **vault,
        PM_FORCE_SANDBOX="true",
        PM_TRACKING_BASE_URL="http://track.test",
        PM_SWEEP_INTERVAL_SECONDS="0.5",
        PM_DNS_RESOLVERS=contract_dns.address,
        PM_CLOUDFLARE_BASE_URL=contract_cloudflare.url,
    )
    webhooks_env = service_env(
        "webhooks",
        amqp,
        **vault,
        PM_WEBHOOKS_ALLOW_HTTP="true",
        PM_WEBHOOKS_ALLOWED_NETWORKS='["127.0.0.0/8"]',
    )

    smtp_port = free_port()
    inbox_env = service_env(
        "inbox",
        amqp,
        **vault,
        PM_REPLY_DOMAINS=f'["{REPLY_DOMAIN}"]',
        PM_INBOUND_SMTP_PORT=str(smtp_port),
    )

    def start(service: str, process: str, env: dict[str, str]) -> ServiceProcess:
        return ServiceProcess(service, process, env, free_port())

    campaigns = start("campaigns", "api", campaigns_env)
    delivery = start("delivery", "api", delivery_env)
    webhooks = start("webhooks", "api", webhooks_env)
    inbox = start("inbox", "api", inbox_env)
    processes = [
        campaigns,
        start("campaigns", "relay", campaigns_env),
        start("campaigns", "worker", campaigns_env),
        start("campaigns", "runner", campaigns_env),
        delivery,
        start("delivery", "relay", delivery_env),
        start("delivery", "worker", delivery_env),
        webhooks,
        start("webhooks", "relay", webhooks_env),
        start("webhooks", "worker", webhooks_env),
        start("webhooks", "stream", webhooks_env),
        inbox,
        start("inbox", "relay", inbox_env),
        start("inbox", "worker", inbox_env),
        start("inbox", "smtp", inbox_env),
    ]
    gateway = start(
        "gateway",
        "api",
        {
            **platform.gateway_env,
            "PM_CAMPAIGNS_URL": campaigns.url,
            "PM_DELIVERY_URL": delivery.url,
            "PM_WEBHOOKS_URL": webhooks.url,
            "PM_BILLING_URL": billing.api.url,
            "PM_INBOX_URL": inbox.url,
        },
    )
    processes.append(gateway)
    try:
        for p in processes:
            p.wait_ready(300)  # a shared 2-core host under load starts them slowly
        yield Stack(gateway.url, processes, contract_dns, smtp_port)
    finally:
        for p in processes:
            p.close()


@dataclass
class Account:
    gw: str
    test_key: str
    live_key: str
    dns: FakeDns
    access_token: str = ""  # the owner's dashboard JWT (15 min)
    tenant_id: str = ""

    def headers(self, mode: str = "test") -> dict[str, str]:
        return bearer(self.test_key if mode == "test" else self.live_key)

    async def verify_domain(self, name: str) -> str:
        """Add `name` as a sending domain, serve its records, verify it: its id. (Live mail
        leaves only from verified domains.)"""
        async with httpx.AsyncClient(base_url=self.gw, timeout=30) as c:
            r = await c.post("/api/v1/domains", json={"name": name}, headers=self.headers("live"))
            assert r.status_code == 201, r.text
            domain = r.json()["data"]
            for record in domain["records"]:
                self.dns.set(record["host"], record["type"], record["value"])
            r = await c.post(f"/api/v1/domains/{domain['id']}/verify", headers=self.headers("live"))
            assert r.json()["data"]["status"] == "verified", r.text
            return str(domain["id"])


@pytest.fixture
def account(stack: Stack, unique: str) -> Account:
    """A fresh tenant with a test-mode and a live-mode key holding every scope."""
    with httpx.Client(base_url=stack.gw, timeout=30) as c:
        r = c.post(
            "/api/v1/auth/signup",
            json={
                "email": f"owner-{unique}@example.com",
                "password": "correct horse battery",
                "company": f"Contract {unique}",
            },
        )
        assert r.status_code == 201, r.text
        token = r.json()["data"]["access_token"]
        tenant_id = r.json()["data"]["tenant"]["id"]
        keys = {}
        for mode in ("test", "live"):
            r = c.post(
                "/api/v1/platform/api-keys",
                json={"name": f"{mode} key", "scopes": list(SCOPES), "mode": mode},
                headers=bearer(token),
            )
            assert r.status_code == 201, r.text
            keys[mode] = r.json()["data"]["key"]
    return Account(stack.gw, keys["test"], keys["live"], stack.dns, token, tenant_id)


async def connect(service: str) -> asyncpg.Connection:
    """A connection to the service's schema, waiting for a free slot: this stack and the other
    sessions on the shared server can use every connection for a while."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return await asyncpg.connect(service_dsn(service))
        except asyncpg.TooManyConnectionsError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)
