"""The transactional outbox and its relay, against real Postgres and RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import asyncpg
import orjson
import pytest

from libs.common.events import ContactCreated, Envelope, make_event
from libs.common.outbox import OutboxRelay, enqueue, enqueue_copy, enqueue_many
from tests.integration.common.amqp_tools import Collector, eventually


def contact_event(tenant: str, i: int) -> Envelope:
    return make_event(
        ContactCreated(contact_id=f"ct_{i}", email=f"user{i}@example.com"),
        tenant_id=tenant,
        source="/services/keys",
    )


@pytest.fixture(scope="module")
async def widgets(keys_pool: asyncpg.Pool) -> str:
    """A scratch domain table in the test database, standing in for a service's own data."""
    await keys_pool.execute(
        "CREATE TABLE IF NOT EXISTS test_widgets (id text PRIMARY KEY, tenant_id text NOT NULL)"
    )
    return "test_widgets"


async def commit_events(pool: asyncpg.Pool, tenant: str, start: int, n: int) -> list[str]:
    """Commit `n` domain rows, each with its event, in transactions of 100."""
    ids: list[str] = []
    for lo in range(start, start + n, 100):
        events = [contact_event(tenant, i) for i in range(lo, min(lo + 100, start + n))]
        async with pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO test_widgets (id, tenant_id) VALUES ($1, $2)",
                [(f"{tenant}-{e.data['contact_id']}", tenant) for e in events],
            )
            await enqueue_many(conn, events)
        ids += [str(e.id) for e in events]
    return ids


@contextlib.asynccontextmanager
async def running(relay: OutboxRelay) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def unpublished(pool: asyncpg.Pool, tenant: str) -> int:
    n: int = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE tenant_id = $1 AND published_at IS NULL", tenant
    )
    return n


async def test_event_commits_with_the_domain_change_or_not_at_all(
    keys_pool: asyncpg.Pool, widgets: str, unique: str
) -> None:
    tenant = f"t_{unique}"
    with contextlib.suppress(RuntimeError):
        async with keys_pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO test_widgets VALUES ($1, $2)", f"{tenant}-a", tenant)
            await enqueue(conn, contact_event(tenant, 1))
            raise RuntimeError("domain change aborted")
    assert await keys_pool.fetchval("SELECT count(*) FROM outbox WHERE tenant_id = $1", tenant) == 0
    async with keys_pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside the domain change's transaction"):
            await enqueue(conn, contact_event(tenant, 2))


async def test_two_relays_publish_every_event_exactly_once(
    keys_pool: asyncpg.Pool, widgets: str, amqp_url: str, unique: str
) -> None:
    # Forty tenants, one batch of events each: a tenant's later rows wait while another relay
    # holds its earlier ones (tenant order), so with a single tenant one relay may well do
    # all the work; with a batch per tenant, each relay's claim finds a tenant of its own.
    tenants = [f"t_{unique}_{n}" for n in range(40)]
    relays = [
        OutboxRelay(keys_pool, "keys", amqp_url, batch_size=50, poll_interval=0.2) for _ in range(2)
    ]
    async with Collector(amqp_url, "contact.created") as seen:
        async with running(relays[0]), running(relays[1]):
            ids = {t: await commit_events(keys_pool, t, 0, 50) for t in tenants}
            await eventually(lambda: all(len(seen.ids(t)) >= 50 for t in tenants), timeout=60)
            await asyncio.sleep(0.5)  # a duplicate, if any, would arrive now
        got = {t: seen.ids(t) for t in tenants}
    for t in tenants:
        assert sorted(got[t]) == sorted(ids[t]), "each event published once, none missing"
        assert await unpublished(keys_pool, t) == 0
    assert all(r.published > 0 for r in relays), "both relays took part"


# The batch limit of the batch being published, per relay worker task: a relay runs
# `concurrency` batches at once, and an attribute on the relay would let one worker's claim
# size decide whether another worker's publishes time out.
_claiming: contextvars.ContextVar[int] = contextvars.ContextVar("claiming")


class SlowConfirmRelay(OutboxRelay):
    """A relay whose broker confirms batches of more than `ceiling` rows too late: each of
    their publishes times out, as aiormq's confirm wait does with an overloaded broker."""

    ceiling = 40
    timed_out = 0
    published_by: list[int] = []  # the batch limit of each batch that published rows

    async def publish_batch(self) -> int:
        limit = self.batch_limit
        token = _claiming.set(limit)  # seen by this batch's publishes (gather copies it)
        try:
            n = await super().publish_batch()
        finally:
            _claiming.reset(token)
        if n:
            self.published_by = [*self.published_by, limit]
        return n

    async def _confirmed(self, written, confirmed):
        if _claiming.get() > self.ceiling:
            self.timed_out += 1
            raise TimeoutError
        await super()._confirmed(written, confirmed)


@contextlib.asynccontextmanager
async def own_outbox(test_database: str, name: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """An outbox schema of the test's own (the shared outbox migrations, and the scratch
    `test_widgets` table), dropped afterwards: no other relay of the session claims its rows,
    and its relay publishes no other test's backlog (the session's `keys` outbox holds every
    unpublished row the earlier tests left, and a stack's keys relay may be running on it)."""
    from libs.common.db import create_pool, migrate

    dsn = f"postgresql://postgres@127.0.0.1:5432/{test_database}"
    await asyncio.to_thread(migrate, name, dsn)
    pool = await create_pool(dsn, name, max_size=4)
    try:
        await pool.execute(
            "CREATE TABLE test_widgets (id text PRIMARY KEY, tenant_id text NOT NULL)"
        )
        yield name, pool
    finally:
        await pool.close()
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP SCHEMA "{name}" CASCADE')
        finally:
            await admin.close()


async def test_a_relay_whose_confirms_time_out_shrinks_its_batches_and_publishes_everything(
    test_database: str, amqp_url: str, unique: str
) -> None:
    tenant = f"t_{unique}"
    async with (
        own_outbox(test_database, f"outbox_slow_{unique}") as (schema, pool),
        Collector(amqp_url, "contact.created") as seen,
    ):
        relay = SlowConfirmRelay(pool, schema, amqp_url, batch_size=500, poll_interval=0.2)
        ids = await commit_events(pool, tenant, 0, 300)
        async with running(relay):
            # Marked published, not only seen: a batch whose confirms timed out was on the
            # wire already (the broker may route it), and is published again.
            async def drained() -> bool:
                return await unpublished(pool, tenant) == 0

            await eventually(drained, timeout=60)
            await eventually(lambda: set(seen.ids(tenant)) >= set(ids), timeout=10)
        # Batches of 500, 250, 125 and 62 timed out (their rows stayed unpublished, released
        # by the rollback); once small enough the broker kept up, and every event went out.
        assert relay.timed_out > 0
        assert relay.published_by and max(relay.published_by) <= relay.ceiling
        assert await unpublished(pool, tenant) == 0


async def test_notify_wakes_the_relay_without_waiting_for_the_poll(
    keys_pool: asyncpg.Pool, widgets: str, amqp_url: str, unique: str
) -> None:
    tenant = f"t_{unique}"
    relay = OutboxRelay(keys_pool, "keys", amqp_url, poll_interval=30.0)
    async with Collector(amqp_url, "contact.created") as seen, running(relay):
        await asyncio.sleep(0.5)  # relay is now idle, waiting on LISTEN (poll is 30 s away)
        await commit_events(keys_pool, tenant, 0, 1)
        await eventually(lambda: len(seen.ids(tenant)) == 1, timeout=5)


async def test_relay_killed_between_commit_and_publish_loses_nothing(
    keys_pool: asyncpg.Pool, widgets: str, amqp_url: str, unique: str, spawn
) -> None:
    """Kill -9 a relay process mid-stream; events committed before, during and after it is
    dead are all published once a relay runs again. A batch confirmed by the broker but not
    yet marked may be published again (bounded by the batch size); consumers deduplicate."""
    tenant = f"t_{unique}"
    async with Collector(amqp_url, "contact.created") as seen:
        first = spawn("keys", "relay")
        first.wait_ready()
        ids = await commit_events(keys_pool, tenant, 0, 3000)
        await eventually(lambda: len(seen.ids(tenant)) > 0, timeout=20, interval=0.005)
        first.kill()
        # Committed while this test's relay is dead (another test folder's keys relay may be
        # alive in the same database: the guarantees below hold whoever publishes).
        ids += await commit_events(keys_pool, tenant, 3000, 500)
        second = spawn("keys", "relay")
        second.wait_ready()
        await eventually(lambda: set(seen.ids(tenant)) >= set(ids), timeout=60)
        assert await unpublished(keys_pool, tenant) == 0
        got = seen.ids(tenant)
    assert set(got) == set(ids)
    assert len(got) - len(ids) <= 500, "duplicates bounded by one relay batch"


async def test_enqueue_copy_writes_what_enqueue_writes_notifies_and_rolls_back(
    keys_pool: asyncpg.Pool, widgets: str, amqp_url: str, unique: str
) -> None:
    """The bulk COPY path stores the same row as `enqueue_many` (columns, envelope, trace
    headers) for Envelopes and for pre-dumped envelopes, fires the relays' NOTIFY (the
    statement trigger runs for COPY), commits with the domain change or not at all, and its
    rows are published by an ordinary relay."""
    from opentelemetry.sdk.trace import TracerProvider

    tenant = f"t_{unique}"
    tracer = TracerProvider().get_tracer("test")
    by_insert = contact_event(tenant, 0)
    envelopes = [contact_event(tenant, i) for i in range(1, 1500)]
    dumped = [contact_event(tenant, i).model_dump(mode="json") for i in range(1500, 3000)]
    # Values COPY must escape: quotes, a newline, a tab, a backslash, `\N`, non-ASCII.
    tricky = make_event(
        ContactCreated(
            contact_id='c,"q"\nx', email="ü@exämple.de", contact_tags=["a,b", '"', "\t\\N"]
        ),
        tenant_id=tenant,
        source="/services/keys",
    )
    notified: list[str] = []

    def on_notify(*args: object) -> None:
        notified.append(str(args[2]))

    # Bound before anything is written: a relay of another test's stack may publish first.
    collecting = contextlib.AsyncExitStack()
    seen = await collecting.enter_async_context(Collector(amqp_url, "contact.created"))
    listener = await keys_pool.acquire()
    await listener.add_listener("keys_outbox", on_notify)
    try:
        with contextlib.suppress(RuntimeError):
            async with keys_pool.acquire() as conn, conn.transaction():
                await enqueue_copy(conn, [contact_event(tenant, 9999)])
                raise RuntimeError("domain change aborted")
        async with keys_pool.acquire() as conn:
            with pytest.raises(RuntimeError, match="inside the domain change's transaction"):
                await enqueue_copy(conn, [contact_event(tenant, 9998)])
            assert await enqueue_copy(conn, []) == 0, "nothing to write needs no transaction"
        with tracer.start_as_current_span("POST /import") as span:
            trace_id = f"{span.get_span_context().trace_id:032x}"
            async with keys_pool.acquire() as conn, conn.transaction():
                await enqueue_many(conn, [by_insert])
            await eventually(lambda: len(notified) == 1, timeout=5)
            # Postgres folds equal notifications of one transaction: COPY gets its own.
            async with keys_pool.acquire() as conn, conn.transaction():
                n = await enqueue_copy(conn, [*envelopes, *dumped, tricky])
                await asyncio.sleep(0.2)
                assert len(notified) == 1, "NOTIFY is delivered at commit, not before"
        assert n == len(envelopes) + len(dumped) + 1
        await eventually(lambda: len(notified) == 2, timeout=5)  # COPY fired the trigger
        rows = {
            str(r["id"]): r
            for r in await keys_pool.fetch(
                "SELECT id, event_type, routing_key, tenant_id, payload, headers,"
                " published_at, created_at FROM outbox WHERE tenant_id = $1",
                tenant,
            )
        }
        expected = [by_insert, *envelopes, *(Envelope.model_validate(d) for d in dumped), tricky]
        assert set(rows) == {str(e.id) for e in expected}, "every event once, none of the rollback"
        reference = rows[str(by_insert.id)]
        for e in expected:
            r = rows[str(e.id)]
            assert (r["event_type"], r["routing_key"], r["tenant_id"]) == (
                e.type,
                e.type,
                tenant,
            )
            assert Envelope.model_validate(r["payload"]) == e
            assert r["payload"] == e.model_dump(mode="json")
            assert r["headers"] == reference["headers"]
        assert trace_id in reference["headers"]["traceparent"]

        relay = OutboxRelay(keys_pool, "keys", amqp_url, batch_size=500, poll_interval=0.2)
        async with running(relay):
            await eventually(lambda: len(seen.ids(tenant)) >= len(expected), timeout=60)
        assert sorted(seen.ids(tenant)) == sorted(str(e.id) for e in expected)
        assert await unpublished(keys_pool, tenant) == 0
    finally:
        await listener.remove_listener("keys_outbox", on_notify)
        await keys_pool.release(listener)
        await collecting.aclose()


async def test_urgent_events_overtake_routine_facts_already_waiting(
    test_database: str, amqp_url: str, unique: str
) -> None:
    """An invalidation committed after 1,000 routine facts is published in the relay's first
    batch, not behind them; routine facts keep their creation order. In an outbox schema of
    its own: no other relay of the session claims these rows."""
    from libs.common.events import ApiKeyRevoked, priority

    assert priority("api_key.revoked") == 1 and priority("contact.created") == 0
    tenant = f"t_{unique}"
    routine = [contact_event(tenant, i) for i in range(1000)]
    urgent = make_event(
        ApiKeyRevoked(key_id="key_1", lookup_id="lk_1"), tenant_id=tenant, source="/services/keys"
    )
    async with own_outbox(test_database, f"outbox_order_{unique}") as (schema, pool):
        async with pool.acquire() as conn, conn.transaction():
            await enqueue_copy(conn, routine)
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, urgent)
        async with Collector(amqp_url, "#") as seen:
            relay = OutboxRelay(pool, schema, amqp_url, batch_size=100)
            await relay.connect()
            try:
                batches = []
                while n := await relay.publish_batch():
                    batches.append(n)
                await eventually(lambda: len(seen.ids(tenant)) == 1001, timeout=10)
            finally:
                await relay.close()
        ids = seen.ids(tenant)
        assert batches == [100] * 10 + [1]
        # Claimed urgent first, then oldest first: the first batch is the urgent one and the
        # 99 oldest facts, each later batch the next 100 (order within a batch is the
        # broker's; across batches it is the claim order).
        claimed = [str(urgent.id), *(str(e.id) for e in routine)]
        for lo in range(0, 1001, 100):
            assert set(ids[lo : lo + 100]) == set(claimed[lo : lo + 100]), f"batch at {lo}"


async def test_listen_on_a_direct_session_beside_a_one_connection_pool(
    test_database: str, widgets: str, amqp_url: str, unique: str
) -> None:
    """Behind PgBouncer (transaction mode) LISTEN needs its own session (listen_dsn): the
    pool's only connection stays free for publishing, and NOTIFY still wakes the relay."""
    from libs.common.db import create_pool
    from tests.conftest import service_dsn

    tenant = f"t_{unique}"
    pool = await create_pool(service_dsn("keys"), "keys", min_size=1, max_size=1)
    relay = OutboxRelay(pool, "keys", amqp_url, poll_interval=30.0, listen_dsn=service_dsn("keys"))
    try:
        async with Collector(amqp_url, "contact.created") as seen, running(relay):
            await asyncio.sleep(0.5)  # idle on LISTEN; the next poll is 30 s away
            listening = await pool.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'pm-keys-listen' AND datname = current_database()"
            )
            assert listening == 1
            await commit_events(pool, tenant, 0, 1)
            await eventually(lambda: len(seen.ids(tenant)) == 1, timeout=5)
    finally:
        await pool.close()


async def test_a_command_goes_to_its_own_queue_only_once_due(
    test_database: str, amqp_url: str, unique: str
) -> None:
    """A command (`enqueue_commands`) reaches its handler's private queue through the default
    exchange, never `pm.events`; a scheduled one stays in the outbox until `not_before`."""
    from typing import ClassVar

    from libs.common.bus import EventBus
    from libs.common.commands import Command, make_command
    from libs.common.db import create_pool, migrate
    from libs.common.outbox import enqueue_commands

    class Ping(Command):
        command_type: ClassVar[str] = "t.ping"
        queue: ClassVar[str] = f"t{unique}.ping"
        n: int

    schema = f"outbox_cmd_{unique}"
    dsn = f"postgresql://postgres@127.0.0.1:5432/{test_database}"
    await asyncio.to_thread(migrate, schema, dsn)
    pool = await create_pool(dsn, schema, max_size=4)
    tenant = f"t_{unique}"
    received: list[Ping] = []
    bus = EventBus(service=f"t{unique}", amqp_url=amqp_url, pool=pool)

    @bus.handle_command(Ping)
    async def on_ping(command: Ping) -> None:
        received.append(command)

    def ping(n: int) -> Envelope:
        return make_command(Ping(n=n), tenant_id=tenant, source="/t")

    try:
        await bus.start()
        async with pool.acquire() as conn, conn.transaction():
            later = await conn.fetchval("SELECT now() + interval '1 hour'")
            await enqueue_commands(conn, Ping.queue, [(ping(1), None), (ping(2), later)])
        async with Collector(amqp_url, "#") as seen:
            relay = OutboxRelay(pool, schema, amqp_url)
            await relay.connect()
            try:
                assert await relay.publish_batch() == 1  # the scheduled one is not due
                await eventually(lambda: [c.n for c in received] == [1], timeout=10)
                assert await relay.publish_batch() == 0
                await pool.execute("UPDATE outbox SET not_before = now() WHERE not_before > now()")
                assert await relay.publish_batch() == 1
                await eventually(lambda: [c.n for c in received] == [1, 2], timeout=10)
            finally:
                await relay.close()
        assert seen.ids(tenant) == []  # nothing on the events exchange
    finally:
        await bus.stop()
        await pool.close()
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await admin.close()


async def test_a_tenants_later_event_waits_for_an_earlier_one_held_by_another_claim(
    test_database: str, amqp_url: str, unique: str
) -> None:
    """Two claims racing over one tenant's rows (another relay, or this relay's other batch,
    holding the first between its claim and its publish): the later row is not published
    before the earlier one, so the tenant's consumers (its event stream) see commit order.
    In an outbox of its own: behind the session's shared backlog the marker took longer than
    the wait (it failed in the full suite)."""
    async with own_outbox(test_database, f"outbox_hold_{unique}") as (schema, pool):
        await _later_event_waits(pool, schema, amqp_url, unique)


async def _later_event_waits(
    keys_pool: asyncpg.Pool, schema: str, amqp_url: str, unique: str
) -> None:
    tenant, other = f"t_{unique}", f"o_{unique}"
    first = await commit_events(keys_pool, tenant, 0, 1)
    second = await commit_events(keys_pool, tenant, 1, 1)
    relay = OutboxRelay(keys_pool, schema, amqp_url, poll_interval=0.2)
    async with Collector(amqp_url, "contact.created") as seen, keys_pool.acquire() as holder:
        claim = holder.transaction()
        await claim.start()
        # The other claim: the first row, locked as a relay locks it until its commit.
        await holder.execute("SELECT 1 FROM outbox WHERE id = $1 FOR UPDATE", first[0])
        async with running(relay):
            # Another tenant's row committed after both: once it is out, the relay has
            # claimed past the second row.
            marker = await commit_events(keys_pool, other, 0, 1)
            await eventually(lambda: seen.ids(other) == marker, timeout=30)
            assert seen.ids(tenant) == []  # not the second before the first
            await claim.rollback()  # the other claim gave the first row up
            await eventually(lambda: len(seen.ids(tenant)) >= 2, timeout=30)
    assert seen.ids(tenant) == first + second


async def test_a_scheduled_command_once_due_goes_in_creation_order_and_holds_nothing_up(
    test_database: str, amqp_url: str, unique: str
) -> None:
    """A tenant's command scheduled for later, and one written after it for now: once both
    are due the earlier-written one is claimed first, the order `_in_tenant_order` checks
    against. The claim once sorted by the due time (its output alias) instead: with room for
    one row it claimed the later-written command, held it back behind the earlier pending
    one, and claimed the same row again and again, publishing nothing."""
    from typing import ClassVar

    from libs.common.commands import Command, make_command
    from libs.common.outbox import enqueue_commands

    class Ping(Command):
        command_type: ClassVar[str] = "t.ping"
        queue: ClassVar[str] = f"t{unique}.ping"
        n: int

    tenant = f"t_{unique}"

    def ping(n: int) -> Envelope:
        return make_command(Ping(n=n), tenant_id=tenant, source="/t")

    scheduled, now = ping(1), ping(2)
    async with own_outbox(test_database, f"outbox_due_{unique}") as (schema, pool):
        async with pool.acquire() as conn, conn.transaction():
            later = await conn.fetchval("SELECT now() + interval '1 hour'")
            await enqueue_commands(conn, Ping.queue, [(scheduled, later)])
        async with pool.acquire() as conn, conn.transaction():
            await enqueue_commands(conn, Ping.queue, [(now, None)])
        # Now due, at a time after the second was written.
        await pool.execute(
            "UPDATE outbox SET not_before = clock_timestamp() WHERE id = $1", scheduled.id
        )
        relay = OutboxRelay(pool, schema, amqp_url, batch_size=1)
        await relay.connect()
        try:
            published = [await relay.publish_batch() for _ in range(3)]
        finally:
            await relay.close()
        order = await pool.fetch(
            "SELECT id FROM outbox WHERE published_at IS NOT NULL ORDER BY published_at"
        )
        assert published == [1, 1, 0]
        assert [r["id"] for r in order] == [scheduled.id, now.id]


async def test_a_batch_the_broker_nacks_is_not_marked_published(
    test_database: str, amqp_url: str, unique: str
) -> None:
    """A batch goes out in one write and is confirmed publish by publish: a broker nack of
    any of its messages (here a queue that rejects what it has no room for) fails the batch,
    whose rows stay pending with the reason, for the next claim to publish again."""
    from typing import ClassVar

    import aio_pika

    from libs.common.commands import Command, direct_exchange, make_command
    from libs.common.outbox import enqueue_commands

    class Ping(Command):
        command_type: ClassVar[str] = "t.ping"
        queue: ClassVar[str] = f"t{unique}.ping"
        n: int

    tenant = f"t_{unique}"
    connection = await aio_pika.connect_robust(amqp_url)
    async with (
        connection,
        own_outbox(test_database, f"outbox_nack_{unique}") as (schema, pool),
    ):
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            direct_exchange(Ping.queue), aio_pika.ExchangeType.DIRECT, durable=True
        )
        queue = await channel.declare_queue(
            Ping.queue,
            exclusive=True,
            arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
        )
        await queue.bind(exchange, routing_key=Ping.queue)
        async with pool.acquire() as conn, conn.transaction():
            commands = [make_command(Ping(n=n), tenant_id=tenant, source="/t") for n in range(3)]
            await enqueue_commands(conn, Ping.queue, [(c, None) for c in commands])
        relay = OutboxRelay(pool, schema, amqp_url)
        await relay.connect()
        try:
            with pytest.raises(aiormq.exceptions.DeliveryError):
                await relay.publish_batch()
        finally:
            await relay.close()
        rows = await pool.fetch("SELECT published_at, attempts, last_error FROM outbox")
        assert len(rows) == 3
        assert all(r["published_at"] is None and r["attempts"] == 1 for r in rows)
        assert all(r["last_error"].startswith("DeliveryError") for r in rows)


async def _one_batch(
    pool: asyncpg.Pool, schema: str, amqp_url: str, tenant: str, n: int
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """What a relay's first batch publishes of `tenant`'s `n` pending events, as received."""
    async with Collector(amqp_url, "contact.created") as seen:
        relay = OutboxRelay(pool, schema, amqp_url)
        await relay.connect()
        try:
            assert await relay.publish_batch() == n
            await eventually(lambda: len(seen.ids(tenant)) == n, timeout=10)
        finally:
            await relay.close()
    return seen.messages


async def test_an_event_larger_than_a_frame_arrives_whole_with_the_relays_properties(
    test_database: str, amqp_url: str, unique: str
) -> None:
    """The relay marshals its publishes itself: a body beyond the broker's frame size (128
    KiB) is split over several body frames and arrives whole, beside small ones, each with
    its id, type, content type and persistence."""
    tenant = f"t_{unique}"
    big = make_event(
        ContactCreated(
            contact_id="ct_big", email="big@example.com", contact_tags=["x" * 1000] * 300
        ),
        tenant_id=tenant,
        source="/services/keys",
    )
    small = [contact_event(tenant, i) for i in range(3)]
    async with own_outbox(test_database, f"outbox_big_{unique}") as (schema, pool):
        async with pool.acquire() as conn, conn.transaction():
            await enqueue_many(conn, [small[0], big, *small[1:]])
        by_id = {m.message_id: m for m in await _one_batch(pool, schema, amqp_url, tenant, 4)}
        for event in [big, *small]:
            message = by_id[str(event.id)]
            assert orjson.loads(message.body) == event.model_dump(mode="json")
            assert message.type == "contact.created"
            assert message.content_type == "application/cloudevents+json"
            assert message.delivery_mode == 2
        assert len(by_id[str(big.id)].body) > 300_000


async def test_one_producer_span_covers_the_rows_one_transaction_wrote(
    test_database: str, amqp_url: str, unique: str
) -> None:
    """The relay's publish span is per group of rows with one stored trace context and one
    destination (a bulk write's facts), not per row: a child of the writer's span, counting
    its messages (`messaging.batch.message_count`), and the parent every message of the
    group names in its `traceparent`. A group of one names its message."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from libs.common.telemetry import configure_tracing

    exporter = InMemorySpanExporter()
    configure_tracing("outbox-tests", None).add_span_processor(SimpleSpanProcessor(exporter))
    tracer = trace.get_tracer("test")
    tenant = f"t_{unique}"
    bulk = [contact_event(tenant, i) for i in range(3)]
    single = contact_event(tenant, 3)
    async with own_outbox(test_database, f"outbox_spans_{unique}") as (schema, pool):
        writers = {}
        for name, events in (("bulk", bulk), ("single", [single])):
            with tracer.start_as_current_span(f"POST /{name}") as span:
                writers[name] = span.get_span_context()
                async with pool.acquire() as conn, conn.transaction():
                    await enqueue_many(conn, events)
        received = await _one_batch(pool, schema, amqp_url, tenant, 4)
        parents = {m.message_id: str((m.headers or {})["traceparent"]) for m in received}
    spans = [s for s in exporter.get_finished_spans() if s.name == "contact.created publish"]
    exporter.shutdown()
    by_writer = {
        name: [s for s in spans if s.parent is not None and s.parent.span_id == ctx.span_id]
        for name, ctx in writers.items()
    }
    assert len(spans) == 2 and [len(v) for v in by_writer.values()] == [1, 1]
    [group], [alone] = by_writer["bulk"], by_writer["single"]
    assert (group.attributes or {})["messaging.batch.message_count"] == 3
    assert (alone.attributes or {})["messaging.message.id"] == str(single.id)
    for published, events in ((group, bulk), (alone, [single])):
        ctx, parent = published.get_span_context(), published.parent
        assert ctx is not None and parent is not None and ctx.trace_id == parent.trace_id
        for e in events:
            assert parents[str(e.id)].startswith(f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-")


async def test_a_channel_closed_under_a_batch_fails_it_at_once_unmarked(
    test_database: str, amqp_url: str, unique: str
) -> None:
    """The broker closes the channel under a batch (here: its exchange was deleted, a 404):
    the batch fails with the channel's reason, not after the confirm time-out, and its rows
    stay pending for the next claim."""
    import aio_pika

    tenant = f"t_{unique}"
    exchange = f"t{unique}.gone"
    async with own_outbox(test_database, f"outbox_closed_{unique}") as (schema, pool):
        await commit_events(pool, tenant, 0, 3)
        relay = OutboxRelay(pool, schema, amqp_url, exchange=exchange)
        await relay.connect()
        connection = await aio_pika.connect_robust(amqp_url)
        try:
            async with connection:
                channel = await connection.channel()
                await channel.exchange_delete(exchange)
            with pytest.raises(aiormq.exceptions.AMQPError) as failed:
                await relay.publish_batch()
            assert not isinstance(failed.value, TimeoutError)
        finally:
            await relay.close()
        assert await unpublished(pool, tenant) == 3
