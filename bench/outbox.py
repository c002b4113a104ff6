"""Outbox relay throughput and latency vs raw publishing on the same aio-pika connection.

1. raw: publish N messages with publisher confirms (windows of the relay's batch size) on
   the relay's own connection and channel: the ceiling for any relay.
2. relay drain: N events committed to the outbox, then the relay publishes them all:
   events/s from commit to broker confirm (incl. claim, mark-published and commit).
3. latency: a producer commits 1,000 events/s for a few seconds while the relay runs; each
   event's insert→broker-confirm time (`published_at - created_at`, both stamped by
   Postgres) is measured (p50/p95/p99).

Run: `uv run python -m bench.outbox` (or `make bench`). Targets: relay >= 0.9x raw (issue 21;
0.6x before it), p99 commit→published <= 100 ms at 1,000 events/s.
"""

from __future__ import annotations

import asyncio
import os
import time

import aio_pika
import orjson

from bench.harness import (
    fresh_database,
    fresh_vhost,
    memory_line,
    peak_rss,
    percentile,
    service_dsn,
    summary,
    verdict,
)
from libs.common.db import create_pool
from libs.common.events import ContactCreated, make_event
from libs.common.outbox import OutboxRelay, enqueue_many

N = int(os.environ.get("BENCH_OUTBOX_N", "20000"))
RATE = 1000
LATENCY_SECONDS = float(os.environ.get("BENCH_OUTBOX_LATENCY_SECONDS", "5"))


def events(n: int, tag: str) -> list:  # type: ignore[type-arg]
    return [
        make_event(
            ContactCreated(contact_id=f"ct_{i}", email=f"u{i}@example.com"),
            tenant_id=tag,
            source="/bench",
        )
        for i in range(n)
    ]


async def main() -> None:
    await fresh_database("keys")
    amqp_url = fresh_vhost()
    pool = await create_pool(service_dsn("keys"), "keys", min_size=2, max_size=6)
    relay = OutboxRelay(pool, "keys", amqp_url, batch_size=500, poll_interval=0.5)
    await relay.connect()
    assert relay._exchange is not None

    # A durable quorum queue, so messages are routed and stored as in production.
    conn = await aio_pika.connect_robust(amqp_url)
    ch = await conn.channel()
    ex = await ch.declare_exchange("pm.events", aio_pika.ExchangeType.TOPIC, durable=True)
    q = await ch.declare_queue("bench.sink", durable=True, arguments={"x-queue-type": "quorum"})
    await q.bind(ex, "#")

    # 1. raw publish with confirms, same connection, same batch window as the relay.
    raw_bodies = [e.to_json() for e in events(N, "raw")]
    t0 = time.perf_counter()
    for lo in range(0, N, relay.batch_size):
        await asyncio.gather(
            *(
                relay._exchange.publish(
                    aio_pika.Message(b, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="contact.created",
                    mandatory=False,
                )
                for b in raw_bodies[lo : lo + relay.batch_size]
            )
        )
    raw_rate = N / (time.perf_counter() - t0)

    # 2. relay drain of N committed events.
    batch = events(N, "drain")
    for lo in range(0, N, 1000):
        async with pool.acquire() as c, c.transaction():
            await enqueue_many(c, batch[lo : lo + 1000])
    stop = asyncio.Event()
    t0 = time.perf_counter()
    task = asyncio.create_task(relay.run(stop))
    while await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
        await asyncio.sleep(0.01)
    relay_rate = N / (time.perf_counter() - t0)

    # 3. insert→confirm latency at 1,000 events/s (10 events every 10 ms).
    ticks = int(LATENCY_SECONDS * 100)
    start = time.perf_counter()
    for tick in range(ticks):
        async with pool.acquire() as c, c.transaction():
            await enqueue_many(c, events(RATE // 100, "latency"))
        await asyncio.sleep(max(0.0, start + (tick + 1) / 100 - time.perf_counter()))
    achieved = ticks * RATE // 100 / (time.perf_counter() - start)
    while await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
        await asyncio.sleep(0.05)
    rows = await pool.fetch(
        "SELECT extract(epoch FROM published_at - created_at) AS lag FROM outbox"
        " WHERE tenant_id = 'latency'"
    )
    latencies = [float(r["lag"]) for r in rows]
    stop.set()
    await task
    await q.purge()
    await conn.close()
    await pool.close()

    ratio = relay_rate / raw_rate
    print(f"bench/outbox.py  N={N}")
    print(f"  raw publish (confirms, same connection): {raw_rate:,.0f} msg/s")
    print(f"  relay commit->broker drain:              {relay_rate:,.0f} events/s")
    print("  " + verdict("relay / raw (issue 21)", ratio, 0.9))
    print(
        f"  latency insert->broker confirm at {RATE} events/s ({len(latencies)} events,"
        f" offered {achieved:,.0f}/s): {summary(latencies)}"
    )
    p99 = percentile(latencies, 99) * 1000
    print(f"  p99 {p99:.1f} ms (target <= 100 ms) {'OK' if p99 <= 100 else 'ABOVE TARGET'}")
    print("  " + memory_line(peak_rss({})) + " (the relay runs in it)")
    print(
        orjson.dumps(
            {"raw_rate": raw_rate, "relay_rate": relay_rate, "ratio": ratio, "p99_ms": p99}
        ).decode()
    )


if __name__ == "__main__":
    asyncio.run(main())
