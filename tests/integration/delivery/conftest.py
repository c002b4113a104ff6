"""Delivery fixtures: the real delivery schema, Redis and OpenBao, fake ESPs on local ports,
and a DeliveryService / API app wired to them exactly as the processes wire them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from libs.common.app import create_app
from libs.common.db import create_pool
from libs.common.principal import Principal
from libs.common.vault import Vault, make_client
from services.delivery.api import ROUTERS
from services.delivery.service import DeliveryService
from services.delivery.settings import DeliverySettings
from tests.conftest import REDIS_URL, ServiceProcess, free_port, service_dsn, service_env
from tests.fakes.dns_server import FakeDns
from tests.fakes.mailgun import FakeMailgun
from tests.fakes.postmark import FakePostmark
from tests.fakes.sendgrid import FakeSendGrid
from tests.fakes.ses import FakeSes
from tests.principals import BIND_HOOKS, unbound_principal


@pytest.fixture(scope="session")
def fakes() -> Iterator[dict[str, Any]]:
    started = {
        "postmark": FakePostmark().start(),
        "mailgun": FakeMailgun().start(),
        "sendgrid": FakeSendGrid().start(),
        "ses": FakeSes().start(),
    }
    yield started
    for f in started.values():
        f.stop()


@pytest.fixture
def reset_fakes(fakes: dict[str, Any]) -> dict[str, Any]:
    for f in fakes.values():
        f.log.clear()
        f._script.clear()
        f.down = False
        f.hold_after(None)
        f.hold.set()
        f.held = 0
    return fakes


@pytest.fixture(scope="session")
async def delivery_pool(test_database: str) -> AsyncIterator[Any]:
    pool = await create_pool(service_dsn("delivery"), "delivery", min_size=1, max_size=8)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def creds_path(vault_dev: Any) -> Iterator[str]:
    import uuid

    path = f"delivery/test-{uuid.uuid4().hex[:8]}"
    yield path
    client = make_client(vault_dev.addr, token=vault_dev.token)
    listed = client.secrets.kv.v2.list_secrets(path=path, mount_point="secret")
    for key in listed["data"]["keys"]:
        client.secrets.kv.v2.delete_metadata_and_all_versions(
            path=f"{path}/{key}", mount_point="secret"
        )


def delivery_settings(fakes: dict[str, Any], creds_path: str, **overrides: Any) -> DeliverySettings:
    values: dict[str, Any] = {
        "environment": "test",
        "force_sandbox": False,
        "tracking_base_url": "http://track.test",
        "tracking_signing_key": "test-tracking-key-0123456789abcdef-0123456789",
        "esp_credentials_path": f"{creds_path}/platform",
        "tenant_credentials_path": creds_path,
        "postmark_base_url": fakes["postmark"].url,
        "mailgun_base_url": fakes["mailgun"].url,
        "sendgrid_base_url": fakes["sendgrid"].url,
        "ses_base_url": fakes["ses"].url,
        "sns_cert_url_pattern": r"^http://127\.0\.0\.1:\d+/[^?#]+\.pem$",
        "sns_topic_arns": ["arn:aws:sns:us-east-1:123456789012:ses-events"],
        "retry_base_seconds": 0.05,
        "circuit_open_seconds": 0.5,
        "circuit_failure_threshold": 2,
        # No broker here: the tests drive sending through the sweeper (`Harness.drain`).
        "sweep_grace_seconds": 0,
        "redis_url": REDIS_URL,
    }
    values.update(overrides)
    return DeliverySettings(**values)


async def write_credentials(
    vault: Vault, creds_path: str, fakes: dict[str, Any], tenant_id: str
) -> None:
    """A tenant's own ESP credentials (tenant-owned credentials also isolate circuits)."""
    all_creds = {
        "postmark": {
            "server_token": fakes["postmark"].token,
            "webhook_username": "pmhook",
            "webhook_password": "pm-hook-secret",
        },
        "mailgun": {"api_key": fakes["mailgun"].api_key, "webhook_signing_key": "mg-signing"},
        "sendgrid": {
            "api_key": fakes["sendgrid"].api_key,
            "webhook_public_key": fakes["sendgrid"].webhook_public_key,
        },
        "ses": {
            "access_key_id": fakes["ses"].access_key,
            "secret_access_key": fakes["ses"].secret,
            "region": "us-east-1",
        },
    }
    for provider, creds in all_creds.items():
        await vault.write(f"{creds_path}/{tenant_id}/{provider}", creds)
        # Webhooks carry no tenant: they are verified with the platform's credentials.
        await vault.write(f"{creds_path}/platform/{provider}", creds)


SENDER_DOMAIN = "acme.example.com"


async def verify_sender_domain(
    service: DeliveryService, dns: FakeDns, tenant: str, name: str = SENDER_DOMAIN
) -> str:
    """Create `name` for `tenant`, serve its records from `dns`, verify it: its id."""
    domain = await service.domains.create(tenant, name)
    for record in domain.records:
        dns.set(record.host, record.type, record.value)
    verified = await service.domains.verify(tenant, domain.id)
    assert verified.status == "verified", verified
    return domain.id


class Harness:
    def __init__(self, service: DeliveryService, client: httpx.AsyncClient, tenant: str) -> None:
        self.service = service
        self.client = client
        self.tenant = tenant

    def headers(
        self,
        scopes: tuple[str, ...] = ("send_email", "read_analytics"),
        tenant: str | None = None,
        mode: str = "live",
        plan: str = "pro",
    ) -> dict[str, str]:
        p = Principal(
            tenant_id=tenant or self.tenant,
            subject_type="api_key",
            subject_id="key_1",
            scopes=list(scopes),
            plan=plan,
            mode=mode,
        )
        return {"X-PM-Principal": unbound_principal(p, "delivery")}

    async def send(self, **body: Any) -> str:
        body.setdefault("from", "team@acme.example.com")
        body.setdefault("subject", "Hello {{ name }}")
        body.setdefault("html", '<p>Hi {{ name }} <a href="https://acme.example.com/x">x</a></p>')
        r = await self.client.post("/api/v1/emails/send", json=body, headers=self.headers())
        assert r.status_code == 202, r.text
        return str(r.json()["data"]["message_id"])

    async def drain(self) -> None:
        """Run the worker's sweeper until nothing is due (retries included, if due)."""
        while await self.service.sweep():
            pass


@pytest.fixture(scope="session")
def fake_dns() -> Iterator[FakeDns]:
    """The authoritative DNS server the delivery service's resolver asks (PM_DNS_RESOLVERS)."""
    dns = FakeDns().start()
    yield dns
    dns.stop()


@pytest.fixture
async def harness(
    reset_fakes: dict[str, Any],
    delivery_pool: Any,
    creds_path: str,
    vault_dev: Any,
    unique: str,
    fake_dns: FakeDns,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Harness]:
    import redis.asyncio as aioredis

    overrides = {"dns_resolvers": [fake_dns.address], **getattr(request, "param", {})}
    settings = delivery_settings(reset_fakes, creds_path, **overrides)
    vault = Vault(make_client(vault_dev.addr, token=vault_dev.token))
    tenant = f"t_{unique}"
    await write_credentials(vault, creds_path, reset_fakes, tenant)
    redis = aioredis.from_url(REDIS_URL)
    service = DeliveryService(settings, delivery_pool, redis, vault)
    app = create_app(settings, process="api", routers=ROUTERS)
    app.state.delivery = service
    # Live mail only from verified domains: the tenant verifies the fixture sender domain
    # through the test DNS server, and gives it back after (one tenant may hold a name).
    domain_id = await verify_sender_domain(service, fake_dns, tenant)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://delivery", event_hooks=BIND_HOOKS
    ) as client:
        yield Harness(service, client, tenant)
    await service.domains.delete(tenant, domain_id)
    await service.close()
    await redis.aclose()


@pytest.fixture
def processes(amqp_url: str, test_database: str) -> Iterator[Any]:
    """`processes("worker", PM_X="y")` starts a real delivery process on a free port, in this
    session's database and vhost; every one started is closed after the test."""
    started: list[ServiceProcess] = []

    def _spawn(process: str, **env: str) -> ServiceProcess:
        p = ServiceProcess(
            "delivery", process, service_env("delivery", amqp_url, **env), free_port()
        )
        started.append(p)
        return p

    yield _spawn
    for p in started:
        p.close()
