"""The real stack the SDK suites and the CLI's tests run against: gateway, keys, campaigns
(api, relay, worker), delivery and webhooks (api, worker, stream, relay) processes (their own
RabbitMQ vhost, and their own database beside the session's keys platform), one tenant with
API keys, a webhook receiver and the proxy/inspection server of harness.py. Module-scoped: the
suites of one module share it."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from libs.common.plans import limits_for
from libs.common.principal import SCOPES
from tests.conftest import (
    REDIS_URL,
    TEST_DB,
    ServiceProcess,
    _rabbitmqctl,
    drop_database,
    free_port,
    provisioned_database,
    service_dsn,
    service_env,
)
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.integration.keys.platform_stack import NAMESPACE, Platform, await_plan, set_plan
from tests.integration.keys.platform_stack import keys_vault as keys_vault
from tests.integration.keys.platform_stack import platform as platform
from tests.sdks.harness import SdkTestServer

PASSWORD = "correct horse battery staple"


@dataclass
class SdkStack:
    gateway: str
    email: str
    password: str
    access_token: str
    api_key: str
    limited_key: str
    control: SdkTestServer
    receiver: WebhookReceiver

    def env(self) -> dict[str, str]:
        """What a suite subprocess gets: the SDKs' own variables plus the test fixtures'."""
        return {
            "PENGUINMAILS_BASE_URL": self.gateway,
            "PENGUINMAILS_API_KEY": self.api_key,
            "PENGUINMAILS_ACCESS_TOKEN": self.access_token,
            "PM_SDK_TEST_LIMITED_KEY": self.limited_key,
            "PM_SDK_TEST_PROXY_URL": self.control.url,
            "PM_SDK_TEST_RECEIVER_URL": self.receiver.url,
        }


@pytest.fixture(scope="module")
def sdk_vhost(amqp_url: str) -> Iterator[str]:
    """A vhost of its own: this stack's durable queues must not collect the session's events."""
    base, _, vhost = amqp_url.rpartition("/")
    own = f"{vhost}_sdks"
    _rabbitmqctl("add_vhost", own)
    _rabbitmqctl("set_permissions", "-p", own, "guest", ".*", ".*", ".*")
    yield f"{base}/{own}"
    _rabbitmqctl("delete_vhost", own)


# The stack's tenant is on the internal `unlimited` plan: the suites and the CLI's tests
# share it, and on a public plan's per-minute bucket their calls met 429s that a test then
# counted as tries of its own.
STACK_PLAN = "unlimited"
# How long the limited key is kept waiting: beyond what the SDKs wait inside one call
# (a minute) at any time of the hour, however long the suites run.
LIMITED_FOR_MS = 2 * 3_600_000


def _put_in_debt(key_id: str) -> None:
    """Leave one key's per-minute bucket (services/gateway/ratelimit.py) LIMITED_FOR_MS of
    refill in debt, so that every call with it gets a 429 whose Retry-After is about two
    hours and surfaces as RateLimitError after the SDKs' retries. A refused call takes no
    token from the tenant's bucket, so the suites' own key is not slowed down. (An hourly
    quota filled up would do the same, except in an hour's last minute, when its
    Retry-After is under a minute and the SDKs wait it out.)"""
    limits = limits_for(STACK_PLAN)
    client = redis.Redis.from_url(REDIS_URL)
    try:
        bucket = f"{NAMESPACE}:rl:m:api_key:{key_id}"
        debt = limits.per_minute * LIMITED_FOR_MS / 60_000
        client.hset(
            bucket,
            mapping={"t": repr(-debt), "ts": int(time.time() * 1000), "c": limits.per_minute},
        )
        client.pexpire(bucket, 2 * LIMITED_FOR_MS)
    finally:
        client.close()


STACK_SERVICES = ("campaigns", "delivery", "webhooks")


@pytest.fixture(scope="module")
async def sdk_database() -> AsyncIterator[str]:
    """Campaigns, delivery and webhooks in a database of their own: in the session's, this
    stack's relays first published what earlier tests had left in those outboxes (tens of
    seconds of backlog in the full suite), and the stream tests waited behind it."""
    name = await provisioned_database(f"{TEST_DB}_sdk", STACK_SERVICES)
    yield name
    await drop_database(name)


def _env(service: str, amqp_url: str, database: str, **extra: str) -> dict[str, str]:
    return service_env(service, amqp_url, PM_DATABASE_URL=service_dsn(service, database), **extra)


@pytest.fixture(scope="module")
def sdk_stack(
    platform: Platform, vault_dev: Any, sdk_vhost: str, sdk_database: str
) -> Iterator[SdkStack]:
    amqp_url = sdk_vhost
    vault = {"PM_VAULT_ADDR": vault_dev.addr, "PM_VAULT_TOKEN": vault_dev.token}
    webhooks_env = _env(
        "webhooks",
        amqp_url,
        sdk_database,
        **vault,
        PM_WEBHOOKS_ALLOW_HTTP="true",
        PM_WEBHOOKS_ALLOWED_NETWORKS='["127.0.0.0/8"]',
        # Streams end this soon, so the CLI's tests see it reconnect with Last-Event-ID.
        PM_EVENTS_STREAM_MAX_SECONDS="4",
        PM_EVENTS_STREAM_HEARTBEAT_SECONDS="1",
    )
    campaigns_env = _env("campaigns", amqp_url, sdk_database)
    delivery_env = _env("delivery", amqp_url, sdk_database, **vault)
    campaigns = ServiceProcess("campaigns", "api", campaigns_env, free_port())
    delivery = ServiceProcess("delivery", "api", delivery_env, free_port())
    webhooks = ServiceProcess("webhooks", "api", webhooks_env, free_port())
    processes = [
        campaigns,
        ServiceProcess("campaigns", "relay", campaigns_env, free_port()),
        # Runs import jobs (`penguinmails contacts import`).
        ServiceProcess("campaigns", "worker", campaigns_env, free_port()),
        delivery,
        webhooks,
        ServiceProcess("webhooks", "worker", webhooks_env, free_port()),
        # Stores events for `GET /api/v1/events/stream` (`events tail`, `listen`, SDK streams).
        ServiceProcess("webhooks", "stream", webhooks_env, free_port()),
        # Publishes triggered events (`penguinmails trigger`) from the webhooks outbox.
        ServiceProcess("webhooks", "relay", webhooks_env, free_port()),
    ]
    gateway = ServiceProcess(
        "gateway",
        "api",
        {
            **platform.gateway_env,
            "PM_CAMPAIGNS_URL": campaigns.url,
            "PM_DELIVERY_URL": delivery.url,
            "PM_WEBHOOKS_URL": webhooks.url,
        },
        free_port(),
    )
    processes.append(gateway)
    receiver = WebhookReceiver().start()
    control = SdkTestServer(gateway.url, receiver).start()
    try:
        for p in processes:
            p.wait_ready(120)
        yield new_tenant(platform, gateway.url, control, receiver)
    finally:
        control.stop()
        receiver.stop()
        for p in processes:
            p.close()


def new_tenant(
    platform: Platform, gw: str, control: SdkTestServer, receiver: WebhookReceiver
) -> SdkStack:
    email = f"sdk-{uuid.uuid4().hex[:10]}@example.com"
    with httpx.Client(base_url=gw, timeout=60) as http:
        r = http.post(
            "/api/v1/auth/signup",
            json={"email": email, "password": PASSWORD, "company": f"SDK {email}"},
        )
        assert r.status_code == 201, r.text
        token = r.json()["data"]["access_token"]
        set_plan(platform, r.json()["data"]["tenant"]["id"], STACK_PLAN)
        keys = []
        for name in ("sdk suites", "rate limited"):
            r = http.post(
                "/api/v1/platform/api-keys",
                json={"name": name, "scopes": list(SCOPES), "mode": "test"},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 201, r.text
            keys.append(r.json()["data"])
        await_plan(gw, {"Authorization": f"Bearer {keys[0]['key']}"}, STACK_PLAN)
    _put_in_debt(keys[1]["id"])
    return SdkStack(
        gateway=gw,
        email=email,
        password=PASSWORD,
        access_token=token,
        api_key=keys[0]["key"],
        limited_key=keys[1]["key"],
        control=control,
        receiver=receiver,
    )
