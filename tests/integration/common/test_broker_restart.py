"""Relays and consumers carry on by themselves across a RabbitMQ restart, losing nothing."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import asyncpg
import pytest

from libs.common.bus import EventBus
from libs.common.events import ContactCreated, Envelope, make_event
from libs.common.outbox import OutboxRelay, enqueue_many
from tests.integration.common.amqp_tools import eventually


def rabbit_app(action: str) -> None:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([exe, "-q", action], check=True, capture_output=True, timeout=120)


async def commit(pool: asyncpg.Pool, tenant: str, start: int, n: int) -> list[str]:
    events = [
        make_event(
            ContactCreated(contact_id=f"ct_{i}", email=f"u{i}@example.com"),
            tenant_id=tenant,
            source="/tests",
        )
        for i in range(start, start + n)
    ]
    async with pool.acquire() as conn, conn.transaction():
        await enqueue_many(conn, events)
    return [str(e.id) for e in events]


@pytest.mark.slow
async def test_relay_and_consumer_survive_broker_restart(
    keys_pool: asyncpg.Pool, amqp_url: str, unique: str
) -> None:
    tenant = f"t_{unique}"
    await keys_pool.execute(
        "CREATE TABLE IF NOT EXISTS test_restart_effects (event_id uuid PRIMARY KEY)"
    )
    bus = EventBus(service=f"t{unique}", amqp_url=amqp_url, pool=keys_pool)

    @bus.subscribe("restart", ["contact.created"])
    async def handle(event: Envelope, conn: asyncpg.Connection | None) -> None:
        if event.tenant_id == tenant:
            assert conn is not None
            # A primary key: a second effect of one event would fail loudly, not hide.
            await conn.execute("INSERT INTO test_restart_effects VALUES ($1)", event.id)

    async def handled() -> int:
        n: int = await keys_pool.fetchval(
            "SELECT count(*) FROM test_restart_effects e JOIN inbox i ON i.event_id = e.event_id"
            " WHERE i.consumer = $1",
            bus.subscriptions[0].queue,
        )
        return n

    relay = OutboxRelay(keys_pool, "keys", amqp_url, poll_interval=0.5)
    stop = asyncio.Event()
    await bus.start()
    relay_task = asyncio.create_task(relay.run(stop))
    try:
        ids = await commit(keys_pool, tenant, 0, 200)
        await eventually(lambda: _at_least(handled, 200), timeout=30)

        rabbit_app("stop_app")
        try:
            ids += await commit(keys_pool, tenant, 200, 200)  # written while the broker is down
            await asyncio.sleep(1.0)
        finally:
            rabbit_app("start_app")
        ids += await commit(keys_pool, tenant, 400, 200)

        await eventually(lambda: _at_least(handled, 600), timeout=90, interval=0.5)
        pending = await keys_pool.fetchval(
            "SELECT count(*) FROM outbox WHERE tenant_id = $1 AND published_at IS NULL", tenant
        )
        assert pending == 0, "no outbox row left unpublished"
        assert await handled() == len(set(ids)) == 600
    finally:
        stop.set()
        await asyncio.wait_for(relay_task, 30)
        await bus.stop()


async def _at_least(fn, n: int) -> bool:
    return bool(await fn() >= n)
