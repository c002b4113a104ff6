"""The batch consumer's receive path (`EventBus.subscribe_batch`): a backlog of events drained
by the bus's batch consumer against a raw aiormq consumer, in the same run.

Setup: a vhost of its own; `BENCH_BATCH_EVENTS` `contact.created` (default 50,000) published
as the outbox relay does (persistent, a `traceparent` header each) into the consumer's queue
before the consumer starts. No database: the handler only counts (no inbox), so what is
measured is what the bus does per message (receive, parse, span with links, ack).
- baseline: `basic_consume` on an aiormq channel (prefetch 1,000), a plain callback that
  appends the delivery, one `basic_ack(multiple)` per what arrived meanwhile: no parsing;
- batch consumer: `EventBus.subscribe_batch(max_batch=500)`, as the stream process runs it.
Each is timed from its consume to the last message handled, `BENCH_BATCH_ROUNDS` rounds
(default 2) interleaved. Printed: events/s and this process's CPU per event for each, and the
ratio batch consumer / baseline (best round of each).

Run: `uv run python -m bench.batch_consumer`.
"""

from __future__ import annotations

import asyncio
import os
import time

import aio_pika
import aiormq
import aiormq.abc

from bench.harness import fresh_vhost
from libs.common.bus import EventBus
from libs.common.events import ContactCreated, Envelope, make_event
from tests.integration.common.amqp_tools import events_exchange, relay_message

EVENTS = int(os.environ.get("BENCH_BATCH_EVENTS", "50000"))
ROUNDS = int(os.environ.get("BENCH_BATCH_ROUNDS", "2"))
PATTERNS = ["contact.created"]


async def _publish(amqp_url: str, events: list[Envelope]) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        exchange = await events_exchange(await connection.channel(publisher_confirms=True))
        for start in range(0, len(events), 1000):
            await asyncio.gather(
                *(
                    exchange.publish(
                        relay_message(e, {"traceparent": f"00-{e.id.hex}-{i + 1:016x}-01"}),
                        routing_key=e.type,
                    )
                    for i, e in enumerate(events[start : start + 1000], start)
                )
            )


def _events(round_: int) -> list[Envelope]:
    return [
        make_event(
            ContactCreated(contact_id=f"ct_{i}", email=f"c{i}@example.com", contact_tags=["x"]),
            tenant_id=f"t_bench_{round_}",
            source="/services/campaigns",
        )
        for i in range(EVENTS)
    ]


async def _baseline(amqp_url: str, queue: str) -> tuple[float, float]:
    connection = await aiormq.connect(amqp_url)
    try:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=1000)
        arrived: list[aiormq.abc.DeliveredMessage] = []
        wake = asyncio.Event()

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            arrived.append(message)
            wake.set()

        t0, c0 = time.perf_counter(), time.process_time()
        await channel.basic_consume(queue, on_message)
        done = 0
        while done < EVENTS:
            await wake.wait()
            wake.clear()
            batch = arrived[:]
            arrived.clear()
            done += len(batch)
            await channel.basic_ack(batch[-1].delivery_tag or 0, multiple=True)
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        await connection.close()


async def _batch_consumer(amqp_url: str) -> tuple[float, float]:
    bus = EventBus(service="bench", amqp_url=amqp_url)
    done = asyncio.Event()
    handled = 0

    @bus.subscribe_batch("batched", PATTERNS, max_batch=500, inbox=False)
    async def count(events: list[Envelope], conn: object) -> None:
        nonlocal handled
        handled += len(events)
        if handled >= EVENTS:
            done.set()

    await bus.broker.connect()
    t0, c0 = time.perf_counter(), time.process_time()
    await bus.start()
    try:
        await done.wait()
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        await bus.stop()


async def _noop(events: list[Envelope], conn: object) -> None:
    return None


async def main() -> None:
    amqp_url = fresh_vhost()
    # Both queues as the bus declares its own (quorum, bound to pm.events' contact.created):
    # one publish fills both, each consumer drains its own.
    setup = EventBus(service="bench", amqp_url=amqp_url)
    for purpose in ("baseline", "batched"):
        setup.subscribe_batch(purpose, PATTERNS, inbox=False)(_noop)
    await setup.broker.connect()
    await setup.declare_topology()
    await setup.broker.stop()
    results: dict[str, list[tuple[float, float, float]]] = {"baseline": [], "batch": []}
    for r in range(ROUNDS):
        await _publish(amqp_url, _events(r))
        for name in ("baseline", "batch") if r % 2 == 0 else ("batch", "baseline"):
            if name == "baseline":
                wall, cpu = await _baseline(amqp_url, "bench.baseline")
            else:
                wall, cpu = await _batch_consumer(amqp_url)
            results[name].append((wall, cpu, os.getloadavg()[0]))
    print(
        f"bench/batch_consumer.py  {EVENTS} contact.created waiting in the queue, {ROUNDS} rounds"
    )
    for name, label in (("baseline", "raw aiormq consume"), ("batch", "bus batch consumer")):
        for wall, cpu, load in results[name]:
            print(
                f"  {label}: {EVENTS / wall:,.0f} events/s, {cpu / EVENTS * 1e6:.1f} us CPU/event"
                f" (load {load:.2f})"
            )
    best_base = min(w for w, _, _ in results["baseline"])
    best_batch = min(w for w, _, _ in results["batch"])
    cpu_base = min(c for _, c, _ in results["baseline"])
    cpu_batch = min(c for _, c, _ in results["batch"])
    print(f"  ratio batch consumer / baseline: {best_base / best_batch:.2f}x the rate,"
          f" {cpu_batch / cpu_base:.2f}x the CPU per event")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
