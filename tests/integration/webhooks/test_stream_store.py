"""The event stream's store and live feed against the real Postgres: numbers in commit order
under concurrent appends, batches numbered in arrival order, redelivery stored once, a slow
reader cut off (never waited for) with a resumable id, and retention."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import asyncpg
import orjson
import pytest

from libs.common.events import EmailOpened, make_event
from libs.common.statistics import grown_tables
from services.webhooks import repository as repo
from services.webhooks.stream import (
    STREAM_TABLES,
    ReaderLimits,
    StreamFilter,
    StreamHub,
    read_stream,
    store_event,
    store_events,
)
from tests.conftest import service_dsn


def _opened(tenant: str, n: int) -> Any:
    data = EmailOpened(message_id=f"em_{n}", to=f"u{n}@example.com")
    return make_event(data, tenant_id=tenant, source="/services/delivery")


async def test_concurrent_appends_are_numbered_in_commit_order_and_redelivery_is_stored_once(
    wh_pool, unique
) -> None:
    events = [_opened(unique, n) for n in range(40)]
    seqs = await asyncio.gather(*(store_event(wh_pool, e) for e in events))
    assert sorted(s for s in seqs if s is not None) == list(range(1, 41))
    # A redelivered event is not stored again (its number is skipped: readers read the store
    # on any gap).
    assert await store_event(wh_pool, events[3]) is None
    assert await store_event(wh_pool, _opened(unique, 99)) == 42
    rows = await repo.stream_events_after(wh_pool, unique, "live", 0, 40)
    assert [r["seq"] for r in rows] == list(range(1, 41))
    assert {r["event_id"] for r in rows} == {e.id for e in events}


async def test_batched_appends_keep_each_tenants_order_and_skip_redeliveries(
    wh_pool, unique
) -> None:
    tenants = [f"{unique}_a", f"{unique}_b", f"{unique}_c"]
    # Interleaved tenants, as the consumer receives them, in batches of 7.
    events = [_opened(tenants[n % 3], n) for n in range(60)]
    for start in range(0, len(events), 7):
        await store_events(wh_pool, events[start : start + 7])
    # A redelivery of stored events (one of them twice), together with new ones: stored once,
    # and the new ones take the next numbers (a redelivery in a batch skips none).
    later = [_opened(tenants[0], 100), _opened(tenants[0], 101)]
    await store_events(wh_pool, [events[0], later[0], events[0], events[3], later[1]])
    for i, tenant in enumerate(tenants):
        rows = await repo.stream_events_after(wh_pool, tenant, "live", 0, 100)
        expected = [e.id for e in events if e.tenant_id == tenant]
        if i == 0:
            expected += [e.id for e in later]
        assert [r["event_id"] for r in rows] == expected  # arrival order, once each
        assert [r["seq"] for r in rows] == list(range(1, len(expected) + 1))
    # A batch with an event that cannot be stored fails as a whole (nothing of it stored):
    # the bus then stores its events one by one.
    good = _opened(tenants[1], 200)
    # (a tenant id too large for the primary key's index: Postgres refuses the row)
    bad = _opened(tenants[1], 201).model_copy(update={"tenant_id": secrets.token_hex(8000)})
    with pytest.raises(asyncpg.PostgresError):
        await store_events(wh_pool, [good, bad])
    assert await repo.stream_seq_of(wh_pool, tenants[1], "live", good.id) is None
    await store_events(wh_pool, [good])
    assert await repo.stream_seq_of(wh_pool, tenants[1], "live", good.id) == 21


async def test_a_burst_leaves_the_store_described_by_its_statistics(wh_pool, unique) -> None:
    """Batches that grow the store ANALYZE it once it outgrew its statistics, so the batch
    statement's plan follows the store's size (a plan made while it was empty hash-joined
    every batch against a scan of every stored event). The test server runs without
    autovacuum: nothing else analyzes."""
    events = [_opened(unique, n) for n in range(2_000)]
    for start in range(0, len(events), 500):
        await store_events(wh_pool, events[start : start + 500])
    assert await grown_tables(wh_pool, STREAM_TABLES) == []
    described, rows = await wh_pool.fetchrow(
        "SELECT (SELECT reltuples FROM pg_class WHERE oid = 'stream_events'::regclass),"
        " (SELECT count(*) FROM stream_events)"
    )
    assert described >= rows / 2, (described, rows)


async def test_a_batch_notifies_each_stored_event_in_number_order(wh_pool, unique) -> None:
    hub = StreamHub(service_dsn("webhooks"), queue_max=100)
    await hub.start()
    try:
        sub = hub.subscribe(unique, "live")
        tagged = make_event(
            EmailOpened(message_id="em_t", to="t@example.com", contact_tags=["vip"]),
            tenant_id=unique,
            source="/services/delivery",
        )
        events = [_opened(unique, n) for n in range(5)]
        await store_events(wh_pool, [*events[:2], tagged, *events[2:]])
        items = [await asyncio.wait_for(sub.queue.get(), 10) for _ in range(6)]
        assert [i.seq for i in items] == list(range(1, 7))
        assert [i.event_id for i in items] == [
            str(e.id) for e in [*events[:2], tagged, *events[2:]]
        ]
        assert items[2].tags == ["vip"] and items[2].frame is not None
        assert orjson.loads(items[2].frame)["id"] == str(tagged.id)
        hub.unsubscribe(sub)
    finally:
        await hub.close()


async def test_a_reader_that_falls_behind_is_cut_off_with_a_resumable_id(wh_pool, unique) -> None:
    hub = StreamHub(service_dsn("webhooks"), queue_max=3)
    await hub.start()
    try:
        sub = hub.subscribe(unique, "live")
        cursor = await repo.stream_head(wh_pool, unique, "live")
        wanted = StreamFilter(frozenset({"email.opened"}))
        body = read_stream(wh_pool, hub, sub, cursor, wanted, ReaderLimits(30, 60))
        assert b"retry:" in await anext(body)
        first = _opened(unique, 0)
        await store_event(wh_pool, first)
        assert f"id: {first.id}".encode() in await anext(body)
        # The reader stops reading; the feed goes on without waiting for it.
        for n in range(1, 10):
            await store_event(wh_pool, _opened(unique, n))
        for _ in range(100):
            if sub.overflowed.is_set():
                break
            await asyncio.sleep(0.05)
        assert sub.overflowed.is_set()
        rest = [chunk async for chunk in body]  # drains what was queued, then says goodbye
        assert rest[-1].startswith(b": reader fell behind; reconnect with Last-Event-ID: ")
        last_id = rest[-1].split(b"Last-Event-ID: ")[1].strip().decode()
        # Resuming from the id it was given misses nothing.
        resume = await repo.stream_seq_of(wh_pool, unique, "live", last_id)
        assert resume is not None
        after = await repo.stream_events_after(wh_pool, unique, "live", resume, 100)
        delivered = rest[:-1]
        assert len(delivered) + len(after) == 9
        assert sub not in hub._subs.get((unique, "live"), set())
    finally:
        await hub.close()


async def test_retention_and_the_per_tenant_cap_trim_the_store(wh_pool, unique) -> None:
    for n in range(5):
        await store_event(wh_pool, _opened(unique, n))
    await wh_pool.execute(
        "UPDATE stream_events SET stored_at = now() - interval '26 hours'"
        " WHERE tenant_id = $1 AND seq = 1",
        unique,
    )
    await repo.trim_stream(wh_pool, retention_hours=25, tenant_cap=3)
    rows = await repo.stream_events_after(wh_pool, unique, "live", 0, 100)
    assert [r["seq"] for r in rows] == [3, 4, 5]
