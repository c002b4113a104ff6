"""SIGTERM in the middle of a stream of messages, to real worker processes: nothing lost,
nothing done twice, and the process exits (code 0) within its Deployment's grace period.

- webhooks worker: every event reaches the customer's endpoint exactly once (one request per
  webhook-id at the receiver), across a SIGTERM'd worker and the one that takes over;
- campaigns worker (the generic `worker_process` plumbing of libs/common/runner.py, inbox
  consumers): after the SIGTERM every event is either handled (its read-model row exists)
  or still in the queue, and the next worker finds no event that was handled but not acked.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from libs.common.events import EmailOpened, Envelope, make_event
from tests.conftest import ServiceProcess, service_dsn
from tests.fakes.webhook_receiver import Reply, WebhookReceiver
from tests.integration.common.amqp_tools import eventually, publish_all
from tests.integration.deploy.conftest import grace_period

pytestmark = pytest.mark.slow
LOOPBACK = '["127.0.0.0/8", "::1/128"]'


def opened(tenant_id: str, n: int) -> Envelope:
    data = EmailOpened(message_id=f"em_{n}", to=f"u{n}@example.com")
    return make_event(data, tenant_id=tenant_id, source="/services/delivery")


async def queue_depth(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(queue, passive=True)
        return int(q.declaration_result.message_count or 0)


async def sigterm(proc: ServiceProcess, grace: int) -> int:
    """SIGTERM as the kubelet sends it; the exit code, or a failure past the grace period."""
    proc.proc.terminate()
    try:
        return await asyncio.to_thread(proc.proc.wait, grace)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"{proc.service} {proc.process} still running {grace} s after SIGTERM (the kubelet "
            f"would SIGKILL it):\n{proc.logs()}"
        ) from None


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5.0).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            got = ",".join(sorted(line[line.index("{") + 1 : line.index("}")].split(",")))
            if all(f'{k}="{v}"' in got.split(",") for k, v in labels.items()) or got == want:
                total += float(line.rsplit(" ", 1)[1])
    return total


# ----------------------------------------------------------------------- campaigns worker


async def test_sigterm_campaigns_worker_mid_stream_loses_and_repeats_nothing(
    start_process: Callable[..., ServiceProcess], amqp_url: str, test_database: str
) -> None:
    tenant = f"t_{uuid.uuid4().hex[:10]}"
    events = [opened(tenant, n) for n in range(1500)]
    ids = {e.id for e in events}
    pool = await asyncpg.create_pool(service_dsn("campaigns"), min_size=1, max_size=2)
    assert pool is not None

    async def handled() -> int:
        n: int = await pool.fetchval(
            "SELECT count(*) FROM campaigns.email_events WHERE tenant_id = $1", tenant
        )
        return n

    try:
        first = start_process("campaigns", "worker", PM_CONSUMER_PREFETCH="64")
        await asyncio.to_thread(first.wait_ready, 60)
        await publish_all(amqp_url, events)
        await eventually(lambda: _at_least(handled, 20), timeout=120)

        code = await sigterm(first, grace_period("campaigns", "worker"))
        assert code == 0, first.logs()
        done_by_first = await handled()

        async def accounted() -> bool:
            # The broker requeues the closed channel's unacked messages asynchronously.
            return done_by_first + await queue_depth(amqp_url, "campaigns.analytics") == len(events)

        # Handled or still queued; nothing acked without its row, nothing dead-lettered.
        await eventually(accounted, timeout=10)
        assert done_by_first < len(events), "the SIGTERM came after the stream: no test"
        assert await queue_depth(amqp_url, "campaigns.analytics.dlq") == 0

        second = start_process("campaigns", "worker")
        await asyncio.to_thread(second.wait_ready, 60)
        await eventually(lambda: _equals(handled, len(events)), timeout=120)
        rows = await pool.fetch(
            "SELECT event_id FROM campaigns.email_events WHERE tenant_id = $1", tenant
        )
        assert {r["event_id"] for r in rows} == ids
        # A message handled by the first worker but not acked would come back as a duplicate.
        url = second.url
        assert metric(url, "pm_events_handled_total", queue="campaigns.analytics",
                      outcome="duplicate") == 0  # fmt: skip
        assert metric(url, "pm_events_handled_total", queue="campaigns.analytics",
                      outcome="ok") == len(events) - done_by_first  # fmt: skip
        assert await sigterm(second, grace_period("campaigns", "worker")) == 0
    finally:
        await pool.close()


async def _at_least(count: Callable[[], Any], n: int) -> bool:
    return bool(await count() >= n)


async def _equals(count: Callable[[], Any], n: int) -> bool:
    return bool(await count() == n)


# ------------------------------------------------------------------------ webhooks worker


async def test_sigterm_webhooks_worker_mid_stream_delivers_each_event_once(
    start_process: Callable[..., ServiceProcess], amqp_url: str, vault_dev: Any
) -> None:
    from services.webhooks.settings import WebhooksSettings
    from tests.integration.webhooks.conftest import principal_header
    from tests.principals import BIND_HOOKS

    tenant = f"t_{uuid.uuid4().hex[:10]}"
    env = {
        "PM_VAULT_ADDR": vault_dev.addr,
        "PM_VAULT_TOKEN": vault_dev.token,
        "PM_WEBHOOKS_ALLOW_HTTP": "true",
        "PM_WEBHOOKS_ALLOWED_NETWORKS": LOOPBACK,
        "PM_WEBHOOKS_RETRY_JITTER": "0",
    }
    # A slow receiver keeps attempts in flight when the SIGTERM arrives.
    with WebhookReceiver(lambda _r: Reply(status=200, delay=0.05)) as rx:
        api = start_process("webhooks", "api", **env)
        first = start_process("webhooks", "worker", **env)
        await asyncio.gather(
            asyncio.to_thread(api.wait_ready, 60), asyncio.to_thread(first.wait_ready, 60)
        )
        headers = principal_header(WebhooksSettings(), tenant)
        async with httpx.AsyncClient(
            base_url=api.url, timeout=10.0, event_hooks=BIND_HOOKS
        ) as client:
            created = await client.post(
                "/api/v1/webhooks", json={"url": rx.url, "events": ["email.*"]}, headers=headers
            )
        assert created.status_code == 201, created.text

        events = [opened(tenant, n) for n in range(300)]
        await publish_all(amqp_url, events)
        await eventually(lambda: rx.count >= 10, timeout=120)
        code = await sigterm(first, grace_period("webhooks", "worker"))
        assert code == 0, first.logs()
        assert rx.count < len(events), "the SIGTERM came after the stream: no test"

        second = start_process("webhooks", "worker", **env)
        await asyncio.to_thread(second.wait_ready, 60)
        await eventually(lambda: rx.count >= len(events), timeout=120)
        await asyncio.sleep(1.0)  # room for a duplicate to show up, were one on its way
        ids = Counter(r.headers.get("webhook-id") for r in rx.requests)
        event_ids = Counter(_message_id(r.body) for r in rx.requests)
        assert set(event_ids) == {f"em_{n}" for n in range(len(events))}
        assert max(ids.values()) == 1, [i for i, n in ids.items() if n > 1][:5]
        assert max(event_ids.values()) == 1
        assert await sigterm(second, grace_period("webhooks", "worker")) == 0


def _message_id(body: bytes) -> str:
    """Which event a webhook carries: the payload is `{"id": msg_id, "type", "data"}`."""
    import orjson

    data = orjson.loads(body)["data"]
    # Payload 2026-11-21 is flat; 2026-12-01 (new endpoints' default) nests the email.
    return str(data["message_id"] if "message_id" in data else data["email"]["id"])
