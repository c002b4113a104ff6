"""The event catalog, the event stream and test triggers through a real gateway, in front of
real keys and webhooks processes (api, worker, stream, relay) on RabbitMQ, Postgres and OpenBao.

The gateway here has a 2-second upstream timeout: a stream outliving it proves streams are
relayed without the total timeout, unbuffered (each event arrives while the stream stays
open). Events are published on `pm.events` exactly as the services' outbox relays do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
from standardwebhooks import Webhook

from libs.common.events import ContactCreated, EmailOpened, Envelope, make_event
from tests.conftest import ServiceProcess, _rabbitmqctl, free_port, service_env
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.integration.common.amqp_tools import events_exchange, publish_on
from tests.integration.keys.platform_stack import (
    NAMESPACE,
    bearer,
    create_key,
    gateway_env,
    signup,
)
from tests.integration.keys.platform_stack import keys_vault as keys_vault
from tests.integration.webhooks.sse import open_stream

STREAM = "/api/v1/events/stream"


@pytest.fixture(scope="module")
def stream_vhost(amqp_url: str) -> Iterator[str]:
    """A vhost of its own: this stack's durable webhooks.fanout queue must not collect the
    rest of the session's events."""
    base, _, vhost = amqp_url.rpartition("/")
    own = f"{vhost}_stream"
    _rabbitmqctl("add_vhost", own)
    _rabbitmqctl("set_permissions", "-p", own, "guest", ".*", ".*", ".*")
    yield f"{base}/{own}"
    _rabbitmqctl("delete_vhost", own)


@pytest.fixture(scope="module")
def gw(
    keys_vault: dict[str, str], vault_dev: Any, stream_vhost: str, test_database: str
) -> Iterator[str]:
    """keys api (sign-up, API keys), webhooks api/worker/stream/relay and a gateway in front."""
    # Sign-up throttles lifted and Redis keys of its own, as the platform stack has them: with
    # the defaults (10 sign-ups per address per 15 min, namespace `pm`), a third run within
    # 15 minutes, or another session's, was 429 login_throttled.
    keys_env = service_env(
        "keys",
        stream_vhost,
        PM_BCRYPT_ROUNDS="4",
        PM_REDIS_NAMESPACE=NAMESPACE,
        PM_LOGIN_MAX_FAILURES_PER_IP="100000",
        PM_SIGNUP_MAX_PER_IP="100000",
        **keys_vault,
    )
    keys = ServiceProcess("keys", "api", keys_env, free_port())
    env = service_env(
        "webhooks",
        stream_vhost,
        PM_VAULT_ADDR=vault_dev.addr,
        PM_VAULT_TOKEN=vault_dev.token,
        PM_WEBHOOKS_ALLOW_HTTP="true",
        PM_WEBHOOKS_ALLOWED_NETWORKS='["127.0.0.0/8"]',
        PM_EVENTS_STREAM_HEARTBEAT_SECONDS="0.5",
    )
    webhooks = ServiceProcess("webhooks", "api", env, free_port())
    processes = [
        keys,
        webhooks,
        ServiceProcess("webhooks", "worker", env, free_port()),
        ServiceProcess("webhooks", "stream", env, free_port()),
        ServiceProcess("webhooks", "relay", env, free_port()),
    ]
    gateway = ServiceProcess(
        "gateway",
        "api",
        {
            **gateway_env(stream_vhost, keys.url, keys.url),
            "PM_WEBHOOKS_URL": webhooks.url,
            "PM_UPSTREAM_TIMEOUT_SECONDS": "2",
        },
        free_port(),
    )
    processes.append(gateway)
    try:
        for p in processes:
            p.wait_ready(90)
        yield gateway.url
    finally:
        for p in processes:
            p.close()


@pytest.fixture
async def publish(stream_vhost: str) -> AsyncIterator[Any]:
    connection = await aio_pika.connect_robust(stream_vhost)
    exchange = await events_exchange(await connection.channel(publisher_confirms=True))

    async def _publish(*events: Envelope) -> None:
        await publish_on(exchange, events)

    yield _publish
    await connection.close()


async def _tenant(client: httpx.AsyncClient, gw: str, unique: str) -> tuple[str, str]:
    owner = await signup(client, gw, unique)
    return owner["tenant"]["id"], owner["access_token"]


def _opened(tenant: str, n: int, mode: str = "live", **extra: Any) -> Envelope:
    data = EmailOpened(message_id=f"em_{n}", to=f"u{n}@example.com", **extra)
    return make_event(data, tenant_id=tenant, source="/services/delivery", mode=mode)  # type: ignore[arg-type]


async def test_catalog_lists_types_with_scope_and_sample(gw: str, unique: str) -> None:
    async with httpx.AsyncClient() as client:
        _tenant_id, token = await _tenant(client, gw, unique)
        key = await create_key(client, gw, token, ["send_email"])
        r = await client.get(f"{gw}/api/v1/events/types", headers=bearer(key["key"]))
    assert r.status_code == 200, r.text
    entries = {e["type"]: e for e in r.json()["data"]}
    assert entries["email.opened"]["scope"] == "read_analytics"
    assert entries["contact.created"]["scope"] == "manage_contacts"
    assert entries["campaign.completed"]["scope"] == "manage_campaigns"
    assert "email.requested" not in entries  # internal
    sample = entries["email.opened"]["sample"]
    assert sample["data"]["email"]["id"] and sample["data"]["analytics"]["device_type"]


async def test_stream_is_relayed_live_scoped_isolated_and_outlives_the_upstream_timeout(
    gw: str, publish: Any, unique: str
) -> None:
    async with httpx.AsyncClient() as client:
        tenant, token = await _tenant(client, gw, unique)
        other, _ = await _tenant(client, gw, unique + "o")
        key = await create_key(client, gw, token, ["read_analytics"])
        async with open_stream(client, f"{gw}{STREAM}", bearer(key["key"])) as sse:
            assert sse.response.status_code == 200
            assert sse.response.headers["content-type"].startswith("text/event-stream")
            assert "x-ratelimit-remaining" in sse.response.headers
            first = await sse.frame()
            assert first is not None and first.retry is not None  # the opening frame
            # Longer than the gateway's 2 s upstream timeout: heartbeats keep coming.
            await asyncio.sleep(3)
            mine = _opened(tenant, 1, campaign_id="cmp_1")
            await publish(
                make_event(
                    ContactCreated(contact_id="ct", email="a@x.io"),
                    tenant_id=tenant,
                    source="/services/campaigns",
                ),
                _opened(other, 2),  # another tenant
                _opened(tenant, 3, mode="test"),  # the sandbox
                mine,
            )
            frame = await sse.event()
            assert frame is not None and frame.id == str(mine.id)
            assert frame.event == "email.opened"
            payload = frame.json()
            assert payload["id"] == str(mine.id) and payload["type"] == "email.opened"
            assert payload["data"]["email"] == {
                "id": "em_1",
                "to": "u1@example.com",
                "campaign_id": "cmp_1",
                "contact_id": None,
                "step": None,
                "contact_tags": [],
                "opened_at": payload["created"],
            }
            assert "heartbeat" in sse.comments
            # Nothing else was for this key: the contact event needs manage_contacts.
            await publish(_opened(tenant, 4))
            assert (await sse.event()).json()["data"]["email"]["id"] == "em_4"  # type: ignore[union-attr]


async def test_reconnecting_with_last_event_id_resumes_without_gaps(
    gw: str, publish: Any, unique: str
) -> None:
    async with httpx.AsyncClient() as client:
        tenant, token = await _tenant(client, gw, unique)
        key = bearer((await create_key(client, gw, token, ["read_analytics"]))["key"])
        async with open_stream(client, f"{gw}{STREAM}", key) as sse:
            await sse.frame()
            await publish(_opened(tenant, 1))
            seen = await sse.event()
            assert seen is not None
        # Disconnected: these happen meanwhile.
        missed = [_opened(tenant, n) for n in range(2, 7)]
        await publish(*missed)
        await asyncio.sleep(1.0)
        headers = {**key, "Last-Event-ID": str(seen.id)}
        async with open_stream(client, f"{gw}{STREAM}", headers) as sse:
            got = [await sse.event() for _ in missed]
        # All of them, each once (in the order the stream stored them: publishes race).
        ids = [f.id for f in got if f]
        assert len(ids) == len(missed) and set(ids) == {str(e.id) for e in missed}
        # Unknown (or expired) ids get the documented error, before any stream starts.
        r = await client.get(
            f"{gw}{STREAM}", headers={**key, "Last-Event-ID": str(_opened(tenant, 9).id)}
        )
        assert (r.status_code, r.json()["error"]["code"]) == (409, "event_stream_cursor_expired")
        r = await client.get(f"{gw}{STREAM}", headers={**key, "Last-Event-ID": "nope"})
        assert r.status_code == 422


async def test_opening_frame_names_the_head_so_a_reconnect_before_any_event_misses_nothing(
    gw: str, publish: Any, unique: str
) -> None:
    async with httpx.AsyncClient() as client:
        tenant, token = await _tenant(client, gw, unique)
        key = bearer((await create_key(client, gw, token, ["read_analytics"]))["key"])
        before = _opened(tenant, 1)
        async with open_stream(client, f"{gw}{STREAM}", key) as sse:
            first = await sse.frame()
            assert first is not None and first.retry is not None and first.id is None  # empty
            await publish(before)
            assert (await sse.event()).id == str(before.id)  # type: ignore[union-attr]
        async with open_stream(client, f"{gw}{STREAM}", key) as sse:
            opening = await sse.frame()
            # No event yet on this connection, but a cursor: the head's event.
            assert opening is not None and opening.data is None and opening.id == str(before.id)
        # Disconnected before any event arrived: these commit meanwhile.
        missed = [_opened(tenant, n) for n in (2, 3)]
        await publish(*missed)
        async with open_stream(
            client, f"{gw}{STREAM}", {**key, "Last-Event-ID": opening.id}
        ) as sse:
            got = [await sse.event() for _ in missed]
        assert sorted(str(f.id) for f in got if f) == sorted(str(e.id) for e in missed)


async def test_types_filter_and_scope_errors(gw: str, publish: Any, unique: str) -> None:
    async with httpx.AsyncClient() as client:
        tenant, token = await _tenant(client, gw, unique)
        both = bearer(
            (await create_key(client, gw, token, ["read_analytics", "manage_contacts"]))["key"]
        )
        async with open_stream(
            client, f"{gw}{STREAM}", both, types="contact.*", contact_tags="vip"
        ) as sse:
            await sse.frame()
            await publish(
                _opened(tenant, 1, contact_tags=["vip"]),
                make_event(ContactCreated(contact_id="c1", email="a@x.io", contact_tags=["x"]),
                           tenant_id=tenant, source="/services/campaigns"),
                make_event(ContactCreated(contact_id="c2", email="b@x.io", contact_tags=["vip"]),
                           tenant_id=tenant, source="/services/campaigns"),
            )  # fmt: skip
            frame = await sse.event()
            assert frame is not None and frame.json()["data"]["contact"]["id"] == "c2"
        no_reads = bearer((await create_key(client, gw, token, ["send_email"]))["key"])
        r = await client.get(f"{gw}{STREAM}", headers=no_reads)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "insufficient_scope")
        r = await client.get(f"{gw}{STREAM}", headers=both, params={"types": "nope.*"})
        assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "query.types"
        r = await client.get(f"{gw}{STREAM}")
        assert r.status_code == 401


async def test_trigger_emits_the_sample_to_test_streams_and_test_webhooks(
    gw: str, unique: str
) -> None:
    async with httpx.AsyncClient() as client:
        _tenant_id, token = await _tenant(client, gw, unique)
        scopes = ["read_analytics", "manage_webhooks"]
        live = bearer((await create_key(client, gw, token, scopes))["key"])
        test = bearer((await create_key(client, gw, token, scopes, mode="test"))["key"])
        r = await client.post(
            f"{gw}/api/v1/events/trigger", json={"type": "email.clicked"}, headers=live
        )
        assert (r.status_code, r.json()["error"]["code"]) == (403, "test_mode_required")
        r = await client.post(
            f"{gw}/api/v1/events/trigger", json={"type": "nope.done"}, headers=test
        )
        assert r.status_code == 422
        with WebhookReceiver() as rx:
            ep = await client.post(
                f"{gw}/api/v1/webhooks", json={"url": rx.url, "events": ["email.*"]}, headers=test
            )
            assert ep.status_code == 201, ep.text
            secret = ep.json()["data"]["secret"]
            async with open_stream(client, f"{gw}{STREAM}", test) as sse:
                await sse.frame()
                r = await client.post(
                    f"{gw}/api/v1/events/trigger", json={"type": "email.clicked"}, headers=test
                )
                assert r.status_code == 202, r.text
                event_id = r.json()["data"]["id"]
                frame = await sse.event(timeout=30)
                assert frame is not None and frame.id == event_id
                assert frame.json()["data"]["email"]["id"]
            (got,) = await rx.until(1)
            body = Webhook(secret).verify(got.body, got.headers)
            assert body["type"] == "email.clicked"
            assert body["data"]["analytics"]["device_type"] == "desktop"
            assert orjson.loads(got.body)["data"]["email"]["clicked_at"]


async def test_seed_004_webhook_registration_body_through_the_gateway(
    gw: str, publish: Any, unique: str
) -> None:
    """Seed 004's `POST /api/v1/webhooks` example as written, but for a reachable receiver:
    201, and its deliveries verify with the seed's own HMAC scheme and the raw secret."""
    import hashlib
    import hmac

    async with httpx.AsyncClient() as client:
        tenant, token = await _tenant(client, gw, unique)
        key = bearer((await create_key(client, gw, token, ["manage_webhooks"]))["key"])
        with WebhookReceiver() as rx:
            body = {
                "url": rx.url,  # seed: https://yourapp.com/webhooks/penguinmails
                "events": ["email.sent", "email.delivered", "email.opened", "campaign.completed"],
                "secret": "your-webhook-secret",
            }
            r = await client.post(f"{gw}/api/v1/webhooks", json=body, headers=key)
            assert r.status_code == 201, r.text
            assert r.json()["data"]["payload_version"] == "2026-12-01"
            await publish(_opened(tenant, 1, campaign_id="cmp_seed"))
            (got,) = await rx.until(1)
        expected = hmac.new(b"your-webhook-secret", got.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(got.headers["x-penguinmails-signature"], f"sha256={expected}")
        payload = orjson.loads(got.body)
        assert payload["type"] == "email.opened"
        assert payload["data"]["email"]["campaign_id"] == "cmp_seed"
