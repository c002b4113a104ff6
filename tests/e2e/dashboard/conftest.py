"""A real stack for the dashboard's browser tests: keys (api, relay, worker), webhooks (api,
worker), campaigns (api, relay: contacts emit real events for the fan-out) and billing (api,
relay, worker, fake Stripe) behind a gateway that serves the built dashboard, and
Debian's chromium driven by Playwright for Python (installed with apt-get when absent;
Playwright's own browser download is never used)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, ServiceProcess, _rabbitmqctl, free_port, service_env
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.integration.billing.conftest import BillingStack
from tests.integration.billing.conftest import billing as billing
from tests.integration.billing.conftest import billing_env as billing_env
from tests.integration.billing.conftest import billing_vault as billing_vault
from tests.integration.billing.conftest import fake_stripe as fake_stripe
from tests.integration.keys.platform_stack import keys_vault as keys_vault

CHROMIUM = "/usr/bin/chromium"
DIST = REPO / "web" / "dashboard" / "dist"
ARTIFACTS = REPO / ".dev" / "test-artifacts"
AXE = REPO / "web" / "dashboard" / "node_modules" / "axe-core" / "axe.min.js"


def ensure_chromium() -> str:
    if Path(CHROMIUM).exists():
        return CHROMIUM
    apt = shutil.which("apt-get")
    assert apt, "Debian's chromium is needed for the dashboard tests (no apt-get here)"
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if subprocess.run([apt, "install", "-y", "-q", "chromium"], env=env, check=False).returncode:
        subprocess.run([apt, "update", "-q"], env=env, check=True)
        subprocess.run([apt, "install", "-y", "-q", "chromium"], env=env, check=True)
    return CHROMIUM


@dataclass
class DashboardStack:
    gateway: ServiceProcess
    billing: BillingStack

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture(scope="module")
def own_vhost(amqp_url: str) -> Iterator[str]:
    """Webhooks' durable queues in a vhost of their own (as the getting-started test does)."""
    base, _, vhost = amqp_url.rpartition("/")
    own = f"{vhost}_dashboard"
    _rabbitmqctl("add_vhost", own)
    _rabbitmqctl("set_permissions", "-p", own, "guest", ".*", ".*", ".*")
    yield f"{base}/{own}"
    _rabbitmqctl("delete_vhost", own)


@pytest.fixture(scope="module")
def stack(
    amqp_url: str,
    test_database: str,
    keys_vault: dict[str, str],
    billing: BillingStack,
    vault_dev: Any,
    own_vhost: str,
) -> Iterator[DashboardStack]:
    """Processes of this module's own (no stand-in upstream): every page talks to real services."""
    assert (DIST / "index.html").is_file(), "the dashboard is not built: run `make dashboard`"
    namespace = f"pmdash{os.getpid()}"
    keys_env = service_env(
        "keys",
        amqp_url,
        PM_BCRYPT_ROUNDS="4",
        PM_REDIS_NAMESPACE=namespace,
        PM_USAGE_FLUSH_INTERVAL_SECONDS="0.2",
        PM_LOGIN_MAX_ATTEMPTS_PER_IP="100000",
        **keys_vault,
    )
    webhooks_env = service_env(
        "webhooks",
        own_vhost,
        PM_VAULT_ADDR=vault_dev.addr,
        PM_VAULT_TOKEN=vault_dev.token,
        # Loopback receivers are allowed in tests only (as in the webhooks tests).
        PM_WEBHOOKS_ALLOW_HTTP="true",
        PM_WEBHOOKS_ALLOWED_NETWORKS='["127.0.0.0/8"]',
    )
    # Campaigns publishes to the webhooks worker's vhost: a contact made through the gateway
    # is a real `contact.created` fanned out to this tenant's endpoints.
    campaigns_env = service_env("campaigns", own_vhost)
    keys = ServiceProcess("keys", "api", keys_env, free_port())
    webhooks = ServiceProcess("webhooks", "api", webhooks_env, free_port())
    campaigns = ServiceProcess("campaigns", "api", campaigns_env, free_port())
    processes = [
        keys,
        ServiceProcess("keys", "relay", keys_env, free_port()),
        ServiceProcess("keys", "worker", keys_env, free_port()),
        webhooks,
        ServiceProcess("webhooks", "worker", webhooks_env, free_port()),
        campaigns,
        ServiceProcess("campaigns", "relay", campaigns_env, free_port()),
    ]
    gateway = ServiceProcess(
        "gateway",
        "api",
        service_env(
            "gateway",
            amqp_url,
            PM_KEYS_URL=keys.url,
            PM_WEBHOOKS_URL=webhooks.url,
            PM_BILLING_URL=billing.api.url,
            PM_CAMPAIGNS_URL=campaigns.url,
            # Not used by these pages: a closed port (503 if ever called).
            PM_DELIVERY_URL=f"http://127.0.0.1:{free_port()}",
            PM_REDIS_NAMESPACE=namespace,
            PM_DASHBOARD_DIR=str(DIST),
        ),
        free_port(),
    )
    processes.append(gateway)
    try:
        for p in processes:
            p.wait_ready(120)
        yield DashboardStack(gateway, billing)
    finally:
        for p in processes:
            p.close()
        _forget_redis_keys(keys_env["PM_REDIS_URL"], namespace)


def _forget_redis_keys(url: str, namespace: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for name in client.scan_iter(match=f"{namespace}:*", count=1000):
            client.delete(name)
    finally:
        client.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    path = ensure_chromium()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()
