"""Consumers on `pm.events`: retries through delay queues, DLQ, replay, idempotency."""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import AsyncIterator

import aio_pika
import asyncpg
import pytest

from libs.common.bus import (
    ATTEMPT_HEADER,
    ERROR_HEADER,
    HANDLED,
    EventBus,
    PermanentError,
    dlq_depth,
    dlq_name,
    replay_dlq,
)
from libs.common.events import ContactUpdated, Envelope, make_event
from tests.integration.common.amqp_tools import (
    eventually,
    publish_all,
    publish_raw,
    relay_message,
)


def updated(tenant: str, contact: str = "ct_1") -> Envelope:
    return make_event(
        ContactUpdated(contact_id=contact, email="ada@example.com", changed=["tags"]),
        tenant_id=tenant,
        source="/tests",
    )


@pytest.fixture(scope="module")
async def effects(keys_pool: asyncpg.Pool) -> str:
    await keys_pool.execute(
        "CREATE TABLE IF NOT EXISTS test_effects (event_id uuid, consumer text, at timestamptz"
        " DEFAULT clock_timestamp())"
    )
    return "test_effects"


@pytest.fixture
async def bus(amqp_url: str, keys_pool: asyncpg.Pool, unique: str) -> AsyncIterator[EventBus]:
    b = EventBus(
        service=f"t{unique}", amqp_url=amqp_url, pool=keys_pool, retry_delays_ms=[200, 400]
    )
    yield b
    await b.stop()


async def count_effects(pool: asyncpg.Pool, event: Envelope) -> int:
    n: int = await pool.fetchval("SELECT count(*) FROM test_effects WHERE event_id = $1", event.id)
    return n


async def test_transient_failure_retries_then_dead_letters_then_replays(
    bus: EventBus, amqp_url: str, keys_pool: asyncpg.Pool, effects: str, unique: str
) -> None:
    attempts: list[float] = []
    healthy = asyncio.Event()

    @bus.subscribe("flaky", ["contact.updated"])
    async def handle(event: Envelope, conn: asyncpg.Connection | None) -> None:
        if event.tenant_id != f"t_{unique}":
            return
        attempts.append(time.monotonic())
        assert conn is not None
        await conn.execute(
            "INSERT INTO test_effects (event_id, consumer) VALUES ($1, 'flaky')", event.id
        )
        if not healthy.is_set():
            raise ConnectionError("downstream unavailable")

    await bus.start()
    event = updated(f"t_{unique}")
    await publish_raw(amqp_url, event)
    queue = bus.subscriptions[0].queue

    await eventually(lambda: dlq_depth(amqp_url, queue), timeout=20)
    assert len(attempts) == 3, "first delivery + 2 bounded retries"
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.18 and gaps[1] >= 0.38, f"retry spacing follows the delays: {gaps}"
    assert await count_effects(keys_pool, event) == 0, "failed attempts roll their writes back"

    # The dead letter keeps the error and the attempt count.
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue(dlq_name(queue), passive=True)
        msg = await dlq.get(no_ack=False)
        assert msg.message_id == str(event.id)
        assert "ConnectionError: downstream unavailable" in str(msg.headers[ERROR_HEADER])
        assert msg.headers[ATTEMPT_HEADER] == 3
        await msg.nack(requeue=True)

    healthy.set()
    assert await replay_dlq(amqp_url, queue) == 1
    await eventually(lambda: count_effects(keys_pool, event), timeout=10)
    assert len(attempts) == 4
    assert await dlq_depth(amqp_url, queue) == 0


async def test_duplicate_delivery_is_acked_without_second_effect(
    bus: EventBus, amqp_url: str, keys_pool: asyncpg.Pool, effects: str, unique: str
) -> None:
    calls: list[str] = []

    @bus.subscribe("dedup", ["contact.updated"])
    async def handle(event: Envelope, conn: asyncpg.Connection | None) -> None:
        if event.tenant_id != f"t_{unique}":
            return
        calls.append(str(event.id))
        assert conn is not None
        await conn.execute(
            "INSERT INTO test_effects (event_id, consumer) VALUES ($1, 'dedup')", event.id
        )

    await bus.start()
    event = updated(f"t_{unique}")
    for _ in range(3):
        await publish_raw(amqp_url, event)
    other = updated(f"t_{unique}", "ct_2")
    await publish_raw(amqp_url, other)
    await eventually(lambda: count_effects(keys_pool, other), timeout=10)
    await asyncio.sleep(0.3)
    assert await count_effects(keys_pool, event) == 1
    assert calls.count(str(event.id)) == 1
    assert await dlq_depth(amqp_url, bus.subscriptions[0].queue) == 0
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(bus.subscriptions[0].queue, passive=True)
        assert q.declaration_result.message_count == 0, "duplicates were acknowledged"


async def test_permanent_and_unparseable_go_straight_to_the_dlq(
    bus: EventBus, amqp_url: str, unique: str
) -> None:
    calls = 0

    @bus.subscribe("strict", ["contact.updated", "contact.deleted"])
    async def handle(event: Envelope, conn: asyncpg.Connection | None) -> None:
        nonlocal calls
        if event.tenant_id == f"t_{unique}":
            calls += 1
            raise PermanentError("contact belongs to no campaign")

    await bus.start()
    await publish_raw(amqp_url, updated(f"t_{unique}"))
    bogus = Envelope(type="contact.deleted", source="/x", tenant_id=f"t_{unique}", data={})
    await publish_raw(amqp_url, bogus)  # contact.deleted without its required fields
    queue = bus.subscriptions[0].queue
    await eventually(lambda: _depth_is(amqp_url, queue, 2), timeout=10)
    assert calls == 1, "a permanent error is not retried"


async def _depth_is(amqp_url: str, queue: str, n: int) -> bool:
    return await dlq_depth(amqp_url, queue) == n


async def test_messages_that_arrive_together_reach_the_handler_in_queue_order(
    bus: EventBus, amqp_url: str, unique: str
) -> None:
    """Handled concurrently (up to the prefetch), but started in the queue's order: a consumer
    that keeps order itself (the event stream numbers a tenant's events as they come) sees a
    tenant's events in the order they were published."""
    tenant = f"t_{unique}"
    started: list[str] = []

    @bus.subscribe("ordered", ["contact.updated"], inbox=False)
    async def handle(event: Envelope, _conn: asyncpg.Connection | None) -> None:
        if event.tenant_id != tenant:
            return
        started.append(str(event.id))
        await asyncio.sleep(0.05)  # still busy when the next ones arrive

    await bus.start()
    events = [updated(tenant, f"ct_{i}") for i in range(200)]
    await publish_all(amqp_url, events)
    await eventually(lambda: len(started) >= len(events), timeout=30)
    assert started == [str(e.id) for e in events]


# ---------------------------------------------------------------- batch consumers


async def _backlog(bus: EventBus, amqp_url: str, events: list[Envelope]) -> None:
    """Declare the bus's queues and publish `events` before it consumes: they wait there
    together, as a backlog does, so the consumer takes them in batches."""
    await bus.broker.connect()
    await bus.declare_topology()
    await publish_all(amqp_url, events)


async def test_a_batch_is_handled_once_in_queue_order_and_duplicates_are_stored_once(
    bus: EventBus, amqp_url: str, keys_pool: asyncpg.Pool, effects: str, unique: str
) -> None:
    tenants = [f"t_{unique}_{i}" for i in range(3)]
    batches: list[list[str]] = []

    @bus.subscribe_batch("batched", ["contact.updated"], max_batch=50)
    async def handle(events: list[Envelope], conn: asyncpg.Connection | None) -> None:
        assert conn is not None
        batches.append([str(e.id) for e in events])
        await conn.executemany(
            "INSERT INTO test_effects (event_id, consumer) VALUES ($1, 'batched')",
            [(e.id,) for e in events],
        )

    # Interleaved tenants; five events delivered twice (a relay republishing them).
    events = [updated(tenants[i % 3], f"ct_{i}") for i in range(120)]
    await _backlog(bus, amqp_url, [*events, *events[10:15]])
    await bus.start()
    await eventually(lambda: sum(map(len, batches)) >= len(events), timeout=30)
    assert max(map(len, batches)) > 1, "the backlog went in batches"
    assert all(len(b) <= 50 for b in batches)
    handled = [i for b in batches for i in b]
    assert handled == [str(e.id) for e in events], "queue order, each event once"

    # Delivered again after it was handled: the inbox skips it. An event published after it
    # is handled after it, so once that one is in, the duplicate was seen.
    later = updated(tenants[0], "ct_later")
    await publish_all(amqp_url, [events[0], later])
    await eventually(lambda: count_effects(keys_pool, later), timeout=10)
    assert [i for b in batches for i in b][len(events) :] == [str(later.id)]
    for e in events:
        assert await count_effects(keys_pool, e) == 1


async def test_a_failed_batch_commit_loses_nothing(
    bus: EventBus, amqp_url: str, keys_pool: asyncpg.Pool, effects: str, unique: str
) -> None:
    """The commit itself fails (a deferred constraint trigger): no message is acked before
    its effect is committed; the messages come back through the retry queue and are stored
    once each when the database accepts them."""
    tenant = f"t_{unique}"
    consumer = f"failing_{unique}"
    refuse = asyncio.Event()
    refuse.set()
    commits_refused = 0
    await keys_pool.execute(
        f"CREATE TABLE refuse_{unique} (on_ boolean);"
        f" INSERT INTO refuse_{unique} VALUES (true);"
        f"CREATE FUNCTION refuse_{unique}() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN IF NEW.consumer = '{consumer}' AND EXISTS (SELECT 1 FROM refuse_{unique})"
        " THEN RAISE EXCEPTION 'commit refused'; END IF; RETURN NULL; END $$;"
        f"CREATE CONSTRAINT TRIGGER refuse_{unique} AFTER INSERT ON test_effects"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
        f" EXECUTE FUNCTION refuse_{unique}()"
    )
    try:

        @bus.subscribe_batch("commits", ["contact.updated"], max_batch=20)
        async def handle(events: list[Envelope], conn: asyncpg.Connection | None) -> None:
            nonlocal commits_refused
            assert conn is not None
            if events[0].tenant_id != tenant:
                return
            if await conn.fetchval(f"SELECT count(*) FROM refuse_{unique}"):
                commits_refused += 1
            await conn.executemany(
                "INSERT INTO test_effects (event_id, consumer) VALUES ($1, $2)",
                [(e.id, consumer) for e in events],
            )

        events = [updated(tenant, f"ct_{i}") for i in range(30)]
        await _backlog(bus, amqp_url, events)
        await bus.start()
        # The batch's commit fails, then each message's own: all go to the retry queue.
        await eventually(lambda: commits_refused > len(events), timeout=20)
        await keys_pool.execute(f"DELETE FROM refuse_{unique}")
        for e in events:
            await eventually(functools.partial(count_effects, keys_pool, e), timeout=20)
            assert await count_effects(keys_pool, e) == 1
        assert await dlq_depth(amqp_url, bus.subscriptions[0].queue) == 0
    finally:
        await keys_pool.execute(
            f"DROP TRIGGER refuse_{unique} ON test_effects; DROP FUNCTION refuse_{unique}();"
            f" DROP TABLE refuse_{unique}"
        )


async def test_a_poison_message_fails_alone_and_is_dead_lettered(
    bus: EventBus, amqp_url: str, keys_pool: asyncpg.Pool, effects: str, unique: str
) -> None:
    tenant = f"t_{unique}"
    calls: list[int] = []

    @bus.subscribe_batch("poison", ["contact.updated"], max_batch=20)
    async def handle(events: list[Envelope], conn: asyncpg.Connection | None) -> None:
        assert conn is not None
        calls.append(len(events))
        if any(e.data["contact_id"] == "ct_poison" for e in events):
            raise ValueError("cannot store this one")
        await conn.executemany(
            "INSERT INTO test_effects (event_id, consumer) VALUES ($1, 'poison')",
            [(e.id,) for e in events],
        )

    events = [updated(tenant, f"ct_{i}") for i in range(10)]
    poison = updated(tenant, "ct_poison")
    await _backlog(bus, amqp_url, [*events[:5], poison, *events[5:]])
    await bus.start()
    queue = bus.subscriptions[0].queue
    # Retried like any failing message (2 retries here), then dead-lettered with its error;
    # the others are stored meanwhile, once each.
    await eventually(lambda: _depth_is(amqp_url, queue, 1), timeout=20)
    for e in events:
        assert await count_effects(keys_pool, e) == 1
    assert await count_effects(keys_pool, poison) == 0
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.declare_queue(dlq_name(queue), passive=True)
        msg = await dlq.get(no_ack=False)
        assert msg.message_id == str(poison.id)
        assert "ValueError: cannot store this one" in str(msg.headers[ERROR_HEADER])
        assert msg.headers[ATTEMPT_HEADER] == 3
        await msg.ack()


async def test_a_batch_span_links_every_message_producer_span(
    bus: EventBus, amqp_url: str, keys_pool: asyncpg.Pool, effects: str, unique: str
) -> None:
    """One consumer span per batch, linked to the span that published each message (its
    `traceparent` header, as the outbox relay sets it): each event's trace reaches the
    consumer that stored it."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from libs.common.telemetry import configure_tracing

    exporter = InMemorySpanExporter()
    configure_tracing("bus-tests", None).add_span_processor(SimpleSpanProcessor(exporter))
    tenant = f"t_{unique}"
    handled: list[str] = []

    @bus.subscribe_batch("traced", ["contact.updated"], max_batch=50)
    async def handle(events: list[Envelope], conn: asyncpg.Connection | None) -> None:
        handled.extend(str(e.id) for e in events if e.tenant_id == tenant)

    events = [updated(tenant, f"ct_{i}") for i in range(20)]
    trace_ids = [f"{i + 1:032x}" for i in range(len(events))]
    await bus.broker.connect()
    await bus.declare_topology()
    for event, trace_id in zip(events, trace_ids, strict=True):
        await publish_raw(amqp_url, event, {"traceparent": f"00-{trace_id}-{1:016x}-01"})
    await bus.start()
    await eventually(lambda: len(handled) >= len(events), timeout=30)
    queue = bus.subscriptions[0].queue
    spans = [s for s in exporter.get_finished_spans() if s.name == f"{queue} process"]
    linked = {f"{link.context.trace_id:032x}" for s in spans for link in s.links}
    assert set(trace_ids) <= linked
    counts = [(s.attributes or {}).get("messaging.batch.message_count") for s in spans]
    assert sum(c for c in counts if isinstance(c, int)) >= len(events)
    exporter.shutdown()


def _handled(queue: str, outcome: str) -> float:
    value: float = HANDLED.labels(queue, outcome)._value.get()
    return value


@pytest.mark.parametrize("lost", ["channel", "connection"])
async def test_a_batch_whose_channel_is_lost_is_redelivered_and_consuming_resumes(
    bus: EventBus, amqp_url: str, keys_pool: asyncpg.Pool, effects: str, unique: str, lost: str
) -> None:
    """The consumer's channel (or the whole connection) is lost while a batch is in the
    database: the batch commits but is not acked, so the broker delivers its messages again
    (the inbox skips them), and the consumer consumes on the reopened channel (FastStream's
    connection reconnects by itself): everything is stored once, later events too."""
    tenant = f"t_{unique}"
    in_database = asyncio.Event()
    release = asyncio.Event()
    first: list[Envelope] = []

    @bus.subscribe_batch("lost", ["contact.updated"], max_batch=20)
    async def handle(events: list[Envelope], conn: asyncpg.Connection | None) -> None:
        assert conn is not None
        if not first:
            first.extend(events)
            in_database.set()
            await release.wait()
        await conn.executemany(
            "INSERT INTO test_effects (event_id, consumer) VALUES ($1, 'lost')",
            [(e.id,) for e in events],
        )

    events = [updated(tenant, f"ct_{i}") for i in range(30)]
    await _backlog(bus, amqp_url, events)
    queue = bus.subscriptions[0].queue
    duplicates = _handled(queue, "duplicate")
    await bus.start()
    try:
        await asyncio.wait_for(in_database.wait(), 10)
        consumer = bus._batch_consumers[0]._channel
        assert consumer is not None
        channel = await consumer.get_underlay_channel()
        if lost == "channel":
            # The broker closes a channel that acks a delivery tag it never used.
            await channel.basic_ack(10**6)
        else:
            await channel.connection.close()
        await eventually(lambda: channel.is_closed, timeout=10)
    finally:
        release.set()

    later = [updated(tenant, f"ct_later_{i}") for i in range(5)]
    await publish_all(amqp_url, later)
    for e in [*events, *later]:
        await eventually(functools.partial(count_effects, keys_pool, e), timeout=20)
    await eventually(lambda: _handled(queue, "duplicate") - duplicates >= len(first), timeout=10)
    for e in [*events, *later]:
        assert await count_effects(keys_pool, e) == 1


async def test_a_batch_consumer_cancelled_by_the_broker_consumes_again(
    bus: EventBus, amqp_url: str, keys_pool: asyncpg.Pool, effects: str, unique: str
) -> None:
    """The queue is deleted under the consumer (the broker cancels it): the queue is declared
    again with its channel, and the consumer consumes from it."""
    tenant = f"t_{unique}"
    handled: list[str] = []

    @bus.subscribe_batch("cancelled", ["contact.updated"], max_batch=20)
    async def handle(events: list[Envelope], conn: asyncpg.Connection | None) -> None:
        handled.extend(str(e.id) for e in events)

    await bus.start()
    queue = bus.subscriptions[0].queue
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await eventually(lambda: _declared(amqp_url, queue), timeout=20, interval=0.2)
        event = updated(tenant)
        # The new queue has none of the old one's bindings: straight to it.
        await channel.default_exchange.publish(relay_message(event), routing_key=queue)
    await eventually(lambda: str(event.id) in handled, timeout=20)


async def _declared(amqp_url: str, queue: str) -> bool:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        try:
            await (await connection.channel()).declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return False
    return True
