"""The stream consumer (queue `webhooks.stream`, consumed in batches) against the real
RabbitMQ and Postgres, as the `stream` process runs it: a backlog is stored in batches, each event
once even when delivered twice, each tenant's events numbered in the order they were
published, and a commit that fails loses nothing."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from libs.common.bus import dlq_depth
from libs.common.events import Envelope
from libs.common.resources import Resources
from libs.common.runner import bus_for
from services.webhooks import repository as repo
from services.webhooks.consumers import setup_stream
from services.webhooks.settings import WebhooksSettings
from tests.integration.common.amqp_tools import eventually, publish_all
from tests.integration.webhooks.conftest import opened

STREAM_QUEUE = "webhooks.stream"


@pytest.fixture
async def backlogged_stream(
    base_settings: WebhooksSettings, amqp_url: str
) -> AsyncIterator[Callable[[list[Envelope]], Any]]:
    """`await start(events)`: publish `events` while the stream's queue exists but nobody
    consumes it (a backlog), then start the stream consumer."""
    settings = base_settings.model_copy(update={"retry_delays_ms": [200, 400]})
    resources = Resources(settings, schema="webhooks", amqp=False)
    await resources.open()
    # As the `stream` process (libs.common.runner.worker_process) builds its bus.
    bus = bus_for(settings, resources)
    setup_stream(bus, resources)
    started = False

    async def start(events: list[Envelope]) -> None:
        nonlocal started
        await bus.broker.connect()
        await bus.declare_topology()
        await publish_all(amqp_url, events)
        await bus.start()
        started = True

    yield start
    if started:
        await bus.stop()
    else:
        await bus.broker.stop()
    await resources.close()


async def _stored(pool: asyncpg.Pool, tenant: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT seq, event_id, stored_at FROM stream_events WHERE tenant_id = $1 AND mode = 'live'"
        " ORDER BY seq",
        tenant,
    )
    return rows


async def test_a_backlog_is_stored_in_batches_once_each_in_each_tenants_order(
    backlogged_stream: Callable[[list[Envelope]], Any], wh_pool: asyncpg.Pool, unique: str
) -> None:
    tenants = [f"{unique}_{i}" for i in range(3)]
    events = [opened(tenants[i % 3], i) for i in range(150)]
    # Ten of them delivered twice (a relay republishing a batch whose commit it missed).
    await backlogged_stream([*events, *events[20:30]])
    for tenant in tenants:
        mine = [e.id for e in events if e.tenant_id == tenant]
        await eventually(functools.partial(_count_is, wh_pool, tenant, len(mine)), timeout=30)
        rows = await _stored(wh_pool, tenant)
        assert [r["event_id"] for r in rows] == mine, "published order, once each"
        assert [r["seq"] for r in rows] == list(range(1, len(mine) + 1)), "no number skipped"
    # Stored in batches: rows of one transaction share its start time.
    stamps = {r["stored_at"] for t in tenants for r in await _stored(wh_pool, t)}
    assert len(stamps) < len(events)


async def test_a_failed_commit_loses_nothing(
    backlogged_stream: Callable[[list[Envelope]], Any],
    wh_pool: asyncpg.Pool,
    amqp_url: str,
    unique: str,
) -> None:
    """Every commit of one tenant's rows fails (a deferred constraint trigger) until the
    database accepts them again: the other tenant's events are stored meanwhile, in order, and
    the refused ones come back through the retry queue and are stored once each."""
    refused, other = f"{unique}_refused", f"{unique}_other"
    await wh_pool.execute(
        f"CREATE TABLE refuse_{unique} (tenant_id text);"
        f" INSERT INTO refuse_{unique} VALUES ('{refused}');"
        f"CREATE FUNCTION refuse_{unique}() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN IF EXISTS (SELECT 1 FROM refuse_{unique} r WHERE r.tenant_id = NEW.tenant_id)"
        " THEN RAISE EXCEPTION 'commit refused'; END IF; RETURN NULL; END $$;"
        f"CREATE CONSTRAINT TRIGGER refuse_{unique} AFTER INSERT ON stream_events"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
        f" EXECUTE FUNCTION refuse_{unique}()"
    )
    try:
        events = [opened(refused if i % 2 else other, i) for i in range(40)]
        await backlogged_stream(events)
        mine = [e.id for e in events if e.tenant_id == other]
        await eventually(lambda: _count_is(wh_pool, other, len(mine)), timeout=30)
        assert await _stored(wh_pool, refused) == []
        await wh_pool.execute(f"DELETE FROM refuse_{unique}")
        theirs = [e.id for e in events if e.tenant_id == refused]
        await eventually(lambda: _count_is(wh_pool, refused, len(theirs)), timeout=30)
        # Once each and no number skipped; in the order the retries brought them back (a
        # retried message comes back after those that were not).
        rows = await _stored(wh_pool, refused)
        assert sorted(r["event_id"] for r in rows) == sorted(theirs)
        assert [r["seq"] for r in rows] == list(range(1, len(theirs) + 1))
        assert [r["event_id"] for r in await _stored(wh_pool, other)] == mine
        assert await repo.stream_head(wh_pool, other, "live") == len(mine)
        assert await dlq_depth(amqp_url, STREAM_QUEUE) == 0
    finally:
        await wh_pool.execute(
            f"DROP TRIGGER refuse_{unique} ON stream_events; DROP FUNCTION refuse_{unique}();"
            f" DROP TABLE refuse_{unique}"
        )


async def _count_is(pool: asyncpg.Pool, tenant: str, n: int) -> bool:
    return len(await _stored(pool, tenant)) == n
