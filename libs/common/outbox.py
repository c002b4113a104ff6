"""Transactional outbox: events are written with the domain change, a relay publishes them.

`enqueue` inserts the event rows on the caller's connection, inside the caller's transaction,
so a fact is published if and only if the change that caused it committed (`enqueue_copy`
writes the same rows by COPY, for bulk changes of thousands of rows). `OutboxRelay`
claims pending rows with `FOR UPDATE SKIP LOCKED` (several relays never publish the same
row), publishes them to `pm.events` with publisher confirms, then marks them published in
the same transaction. It wakes on LISTEN/NOTIFY and polls as a fallback.

Commands (`libs.common.commands`: work items a service sends itself) are outbox rows too:
`enqueue_commands` writes them with their own exchange (the service's direct exchange
`<service>.direct`, the routing key being the service's private queue) and an optional
`not_before`, before which the relay leaves them alone: a scheduled command is published
when due, never by a second path.

Rows go out urgent first (`EventData.urgent`: work items and deadline-bound invalidations,
outbox `priority` 1), then in creation order: a bulk write's 10,000 routine facts do not
hold up the work items committed after them. Order within one priority is creation order.

Delivery is at-least-once: a relay killed after the broker confirmed a batch but before its
commit republishes that batch. Every message carries the event id as `message_id`, and
consumers deduplicate on it (see `libs.common.inbox`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import io
import itertools
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import aio_pika
import aiormq
import asyncpg
import orjson
import pamqp.frame
from aiormq.abc import ChannelFrame
from opentelemetry import propagate, trace
from pamqp import commands as spec
from pamqp.header import ContentHeader
from prometheus_client import Counter, Gauge, Histogram

from libs.common.commands import direct_exchange
from libs.common.events import Envelope, priority
from libs.common.settings import AMQP_RECONNECT_SECONDS

log = logging.getLogger(__name__)
tracer = trace.get_tracer("pm.outbox")

RELAY_PUBLISHED = Counter(
    "pm_outbox_published_total", "Outbox events published to the broker", ["schema"]
)
RELAY_FAILURES = Counter(
    "pm_outbox_publish_failures_total", "Outbox batches that failed to publish", ["schema"]
)
RELAY_LAG = Histogram(
    "pm_outbox_commit_to_publish_seconds",
    "Time from the outbox row's creation to its broker confirm",
    ["schema"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RELAY_PENDING = Gauge("pm_outbox_pending", "Unpublished outbox rows", ["schema"])

_INSERT = (
    "INSERT INTO outbox (id, event_type, routing_key, tenant_id, payload, headers, priority)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7)"
)


def _trace_headers() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


async def enqueue(conn: asyncpg.Connection, *events: Envelope) -> None:
    """Write events to the outbox on `conn`; call it inside the domain change's transaction."""
    await enqueue_many(conn, events)


async def enqueue_many(conn: asyncpg.Connection, events: Iterable[Envelope]) -> None:
    headers = _trace_headers()
    rows = [
        (
            e.id,
            e.type,
            e.routing_key,
            e.tenant_id,
            e.model_dump(mode="json"),
            headers,
            priority(e.type),
        )
        for e in events
    ]
    if not rows:
        return
    if not conn.is_in_transaction():
        raise RuntimeError("outbox.enqueue must run inside the domain change's transaction")
    await conn.executemany(_INSERT, rows)


_COPY_COLUMNS = ["id", "event_type", "routing_key", "tenant_id", "payload", "headers", "priority"]
_COPY_CHUNK_ROWS = 2000


def _copy_text(value: str) -> str:
    """A value in COPY's text format. Text, not binary: asyncpg's binary COPY has no encoder
    for the pool's (text) jsonb codec; not CSV either, whose quoting of JSON is slower."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\t" in value or "\n" in value or "\r" in value:
        value = value.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _command_exchange(row: Mapping[str, Any]) -> str:
    """Where a command row goes: its service's exchange. Rows written before the service
    exchanges (exchange "", the default one, which no service user may write to any more)
    go to their queue's service exchange, under the same routing key."""
    name: str = row["exchange"]
    return name or direct_exchange(row["routing_key"])


# Commands overtake routine facts like urgent events: their one handler drives a pipeline.
COMMAND_PRIORITY = 1
_COMMAND_COLUMNS = [*_COPY_COLUMNS, "exchange", "not_before"]


async def enqueue_commands(
    conn: asyncpg.Connection, queue: str, items: Iterable[tuple[Envelope, datetime | None]]
) -> int:
    """Write commands (`libs.common.commands.make_command` envelopes) for `queue` to the
    outbox by one COPY, each `(command, not_before)`: published straight to the queue (the
    service's direct exchange, routing key = the queue) once `not_before` (None: now) has passed.
    Call it inside the domain change's transaction. Returns how many commands were written."""
    headers = _copy_text(orjson.dumps(_trace_headers()).decode())
    exchange = _copy_text(direct_exchange(queue))
    lines: list[str] = []
    for command, not_before in items:
        fields = (str(command.id), command.type, queue, command.tenant_id)
        lines.append(
            "\t".join(map(_copy_text, (*fields, command.model_dump_json())))
            + f"\t{headers}\t{COMMAND_PRIORITY}\t{exchange}\t"
            + (not_before.isoformat() if not_before is not None else "\\N")
            + "\n"
        )
    if not lines:
        return 0
    if not conn.is_in_transaction():
        raise RuntimeError("outbox.enqueue_commands must run inside a transaction")
    await conn.copy_to_table(
        "outbox",
        source=io.BytesIO("".join(lines).encode()),
        columns=_COMMAND_COLUMNS,
        format="text",
    )
    return len(lines)


async def enqueue_copy(
    conn: asyncpg.Connection, events: Iterable[Envelope | Mapping[str, Any]]
) -> int:
    """Write events to the outbox by one COPY: for bulk changes (thousands of events).

    The rows are those `enqueue_many` writes (the envelope as payload, the current trace
    context as headers), and the statement-level trigger fires for COPY as for INSERT, so the
    relays get their NOTIFY at commit. An event is an `Envelope`, or a mapping already in
    `Envelope.model_dump(mode="json")` form (e.g. stamped from one template envelope, which
    spares a pydantic model per row); mappings are not re-validated. Call it inside the
    domain change's transaction. Returns how many events were written.
    """
    rows = iter(events)
    first = next(rows, None)
    if first is None:
        return 0
    if not conn.is_in_transaction():
        raise RuntimeError("outbox.enqueue_copy must run inside the domain change's transaction")
    headers = _copy_text(orjson.dumps(_trace_headers()).decode())
    count = 0

    def line(e: Envelope | Mapping[str, Any]) -> str:
        if isinstance(e, Envelope):
            fields = (str(e.id), e.type, e.routing_key, e.tenant_id, e.model_dump_json())
        else:
            fields = (str(e["id"]), e["type"], e["type"], e["tenant_id"], orjson.dumps(e).decode())
        return "\t".join(map(_copy_text, fields)) + f"\t{headers}\t{priority(fields[1])}\n"

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal count
        lines: list[str] = []
        for e in itertools.chain((first,), rows):
            lines.append(line(e))
            if len(lines) == _COPY_CHUNK_ROWS:
                count += len(lines)
                yield "".join(lines).encode()
                lines.clear()
        if lines:
            count += len(lines)
            yield "".join(lines).encode()

    await conn.copy_to_table("outbox", source=chunks(), columns=_COPY_COLUMNS, format="text")
    return count


# What a relay survives by retrying: broker and database outages, confirm time-outs, a channel
# closed under it while the robust connection reconnects.
_RELAY_ERRORS = (
    TimeoutError,
    aio_pika.exceptions.AMQPError,
    aiormq.exceptions.AMQPError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    RuntimeError,
)


# The next batch: due pending rows in publishing order (priority, then creation order). The
# ORDER BY names `outbox.created_at`, the column: a bare `created_at` is the output alias (the
# due time, for the lag metric), which no index holds, so every claim read and sorted all
# pending rows (79 ms per claim at 13,500 pending, spilling to disk) instead of walking
# outbox_pending_idx, and claimed in another order than `_in_tenant_order` checks against.
_CLAIM = (
    "SELECT id, routing_key, exchange, payload::text AS payload, headers::text AS headers,"
    " tenant_id, priority, created_at AS committed_at,"
    " greatest(created_at, not_before) AS created_at FROM outbox"
    " WHERE published_at IS NULL"
    " AND (not_before IS NULL OR not_before <= now())"
    " ORDER BY outbox.priority DESC, outbox.created_at"
    " LIMIT $1"
    " FOR UPDATE SKIP LOCKED"
)

# The smallest batch a relay shrinks to when confirms time out.
_MIN_BATCH = 10
# How soon a relay claims again after leaving rows behind another claim's.
_DEFERRED_RETRY_SECONDS = 0.005
# How many rows this task's last claim left for later (each worker task has its own).
_DEFERRED: contextvars.ContextVar[int] = contextvars.ContextVar("outbox_deferred", default=0)


def notify_channel(schema: str) -> str:
    return f"{schema}_outbox"


class OutboxRelay:
    """Publishes one schema's outbox to the events exchange. Safe to run several at once."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        amqp_url: str,
        *,
        exchange: str = "pm.events",
        batch_size: int = 500,
        poll_interval: float = 1.0,
        retention_hours: int = 24,
        concurrency: int = 2,
        listen_dsn: str | None = None,
    ) -> None:
        self.pool = pool
        # LISTEN needs a session: behind a transaction-mode pooler it gets its own direct
        # connection (PM_DATABASE_DIRECT_URL); else it holds one of the pool's.
        self.listen_dsn = listen_dsn
        self.schema = schema
        self.amqp_url = amqp_url
        self.exchange_name = exchange
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.retention_hours = retention_hours
        self.concurrency = concurrency
        # Rows claimed per batch now: halved after a batch whose confirms timed out (a broker
        # that slow would time the same batch out again and again, republishing it each
        # time), doubled back towards `batch_size` after each batch that went through.
        self.batch_limit = batch_size
        self._wake = asyncio.Event()
        self._connect_lock = asyncio.Lock()
        self._claim_lock = asyncio.Lock()
        # Rows of this relay's batches already queued on the channel, not yet committed as
        # published: later rows of their tenants may follow them at once.
        self._sent: set[Any] = set()
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None
        self.connected = False
        self.published = 0
        self._declared: set[str] = {exchange}

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self.amqp_url,
            client_properties={"connection_name": f"{self.schema}-relay"},
            reconnect_interval=AMQP_RECONNECT_SECONDS,
        )
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await self._channel.declare_exchange(
            self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        self.connected = True

    async def close(self) -> None:
        self.connected = False
        self._declared = {self.exchange_name}
        if self._connection is not None:
            await self._connection.close()

    def is_ready(self) -> bool:
        return bool(self._connection is not None and not self._connection.is_closed)

    async def publish_batch(self) -> int:
        """Claim, publish and mark one batch; returns how many rows were published."""
        rows: list[asyncpg.Record] = []
        sent: list[Any] = []
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                # One claim at a time in this relay, up to its publishes being queued on the
                # channel (in claim order): the confirm waits overlap, the claims never race.
                async with self._claim_lock:
                    claimed = await conn.fetch(_CLAIM, self.batch_limit)
                    if not claimed:
                        _DEFERRED.set(0)
                        return 0
                    rows = await _in_tenant_order(conn, claimed, self._sent)
                    _DEFERRED.set(len(claimed) - len(rows))
                    if not rows:
                        return 0
                    # aiormq's channel under aio-pika's robust one: the same connection and
                    # confirms, the batch's publishes marshalled here and written at once
                    # (`_write_publishes`), without per-message tasks, locks and writes.
                    assert self._channel is not None
                    commands = {_command_exchange(r) for r in rows if r["exchange"] is not None}
                    for name in commands - self._declared:
                        await self._channel.declare_exchange(
                            name, aio_pika.ExchangeType.DIRECT, durable=True
                        )
                        self._declared.add(name)
                    amqp = await self._channel.get_underlay_channel()
                    spans, frames = self._frames(amqp, rows)
                    # On the channel before the claim lock goes: these rows go out before
                    # any later claim's.
                    try:
                        written, confirmed = await _write_publishes(amqp, frames, len(rows))
                    except BaseException:
                        _end(spans)
                        raise
                    sent = [r["id"] for r in rows]
                    self._sent.update(sent)
                try:
                    await self._confirmed(written, confirmed)
                finally:
                    confirmed.cancel()  # after a failure: the broker's late answers are ignored
                    _end(spans)
                await conn.execute(
                    "UPDATE outbox SET published_at = clock_timestamp() WHERE id = ANY($1)",
                    [r["id"] for r in rows],
                )
        except (asyncpg.PostgresError, OSError):
            raise
        except Exception as exc:
            RELAY_FAILURES.labels(self.schema).inc()
            await self._record_failure(rows, exc)
            raise
        finally:
            self._sent.difference_update(sent)
        now = time.time()
        lag = RELAY_LAG.labels(self.schema)
        for r in rows:
            lag.observe(max(0.0, now - r["created_at"].timestamp()))
        RELAY_PUBLISHED.labels(self.schema).inc(len(rows))
        self.published += len(rows)
        return len(rows)

    async def _record_failure(self, rows: Sequence[asyncpg.Record], exc: BaseException) -> None:
        """Keep the reason on the rows for operators (the claim was released by the rollback)."""
        with contextlib.suppress(asyncpg.PostgresError, OSError):
            await self.pool.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2 WHERE id = ANY($1)",
                [r["id"] for r in rows],
                f"{type(exc).__name__}: {exc}"[:500],
            )

    async def _confirmed(
        self, written: asyncio.Future[Any], confirmed: asyncio.Future[Any]
    ) -> None:
        """Wait for a batch's broker confirms (`_write_publishes`). A nack fails the batch with
        aiormq's DeliveryError, a closed channel with its reason, and a broker too slow raises
        TimeoutError: the batch is not marked (and the next claim is smaller)."""
        async with asyncio.timeout(_CONFIRM_SECONDS):
            await written
            await confirmed

    def _frames(
        self, amqp: aiormq.abc.AbstractChannel, rows: Sequence[asyncpg.Record]
    ) -> tuple[list[trace.Span], bytes]:
        """The wire frames of the rows' publishes (method, content header, body), as one
        buffer, and their producer spans (ended by the caller once they are confirmed).

        One span per group of rows that one transaction wrote to one destination (the same
        stored trace context, exchange and routing key: a bulk COPY's 1,000 facts), with
        `messaging.batch.message_count` (the bus's batch consumer spans do the same); a
        group of one names its message. A span per row cost ~45 µs of the relay's ~55 µs
        per event (bench/delivery.py)."""
        groups: dict[tuple[str | None, str, str], tuple[trace.Span, _HeaderFrames]] = {}
        out: list[bytes] = []
        channel: int = amqp.number
        max_body: int = amqp.max_content_size  # type: ignore[attr-defined]
        try:
            sizes = collections.Counter(_group_key(self.exchange_name, row) for row in rows)
            for row in rows:
                key = _group_key(self.exchange_name, row)
                _, exchange, routing_key = key
                group = groups.get(key)
                if group is None:
                    stored: dict[str, Any] = _stored_headers(row["headers"])
                    count = sizes[key]
                    attributes: dict[str, Any] = {
                        "messaging.system": "rabbitmq",
                        "messaging.destination.name": exchange or routing_key,
                    }
                    if count == 1:
                        attributes["messaging.message.id"] = str(row["id"])
                    else:
                        attributes["messaging.batch.message_count"] = count
                    # The publish span is a child of the request that wrote the rows, and
                    # becomes the parent of the consumers' spans: one trace from HTTP through
                    # outbox and broker.
                    span = tracer.start_span(
                        f"{routing_key} publish",
                        context=propagate.extract(stored),
                        kind=trace.SpanKind.PRODUCER,
                        attributes=attributes,
                    )
                    injected: dict[str, Any] = dict(stored)
                    propagate.inject(injected, context=trace.set_span_in_context(span))
                    group = groups[key] = (span, _HeaderFrames(channel, injected, routing_key))
                body = _json_bytes(row["payload"])
                out.append(_method_frame(channel, exchange, routing_key))
                out.append(group[1].frame(str(row["id"]), len(body)))
                for lo in range(0, len(body), max_body):
                    out.append(_body_frame(channel, body[lo : lo + max_body]))
        except BaseException:
            _end(span for span, _ in groups.values())
            raise
        return [span for span, _ in groups.values()], b"".join(out)

    async def purge_published(self) -> int:
        result: str = await self.pool.execute(
            "DELETE FROM outbox WHERE published_at < now() - make_interval(hours => $1)",
            self.retention_hours,
        )
        return int(result.split()[-1])

    async def pending(self) -> int:
        n: int = await self.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        RELAY_PENDING.labels(self.schema).set(n)
        return n

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until `stop` is set; survives broker and database outages.

        `concurrency` batches are in flight at once (each its own claim, with SKIP LOCKED),
        so one batch's wait for broker confirms overlaps the next batch's claim and publish.
        """
        listener = asyncio.create_task(self._listen(stop), name=f"{self.schema}-outbox-listen")
        workers = [
            asyncio.create_task(self._work(stop), name=f"{self.schema}-outbox-{i}")
            for i in range(self.concurrency)
        ]
        try:
            while not stop.is_set():
                with contextlib.suppress(asyncpg.PostgresError, OSError):
                    await self.pending()
                    await self.purge_published()
                await _wait(stop, 60.0)
        finally:
            await asyncio.gather(*workers, return_exceptions=True)
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            await self.close()

    async def _work(self, stop: asyncio.Event) -> None:
        backoff, deferred_wait = 0.2, _DEFERRED_RETRY_SECONDS
        while not stop.is_set():
            self._wake.clear()  # before looking: a NOTIFY from now on wakes the wait below
            limit = self.batch_limit
            try:
                if self._exchange is None:
                    async with self._connect_lock:
                        if self._exchange is None:
                            await self.connect()
                n = await self.publish_batch()
                backoff = 0.2
                self.batch_limit = min(self.batch_size, max(self.batch_limit, limit) * 2)
            except _RELAY_ERRORS as exc:
                if isinstance(exc, TimeoutError):
                    self.batch_limit = max(_MIN_BATCH, min(self.batch_limit, limit) // 2)
                log.warning(
                    "outbox relay: publish failed, retrying",
                    extra={
                        "schema": self.schema,
                        "error": f"{type(exc).__name__}: {exc}",
                        "batch_limit": self.batch_limit,
                    },
                )
                await _wait(stop, backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if n >= limit:
                continue  # more is waiting: no sleep
            if _DEFERRED.get():
                # Held back behind another claim, which commits (no NOTIFY) within its
                # confirm wait: look again soon rather than at the next poll, backing off
                # (doubling up to the poll interval) while that claim waits on its confirms.
                await _wait(stop, deferred_wait)
                deferred_wait = min(deferred_wait * 2, self.poll_interval)
                continue
            deferred_wait = _DEFERRED_RETRY_SECONDS
            await _wait_any(stop, self._wake, self.poll_interval)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Hold a LISTEN connection; reconnect on loss (polling covers the gap)."""
        channel = notify_channel(self.schema)

        def _on_notify(*_: object) -> None:
            self._wake.set()

        while not stop.is_set():
            try:
                async with self._listen_connection() as conn:
                    await conn.add_listener(channel, _on_notify)
                    try:
                        while not stop.is_set() and not conn.is_closed():
                            await _wait(stop, 5.0)
                    finally:
                        with contextlib.suppress(Exception):
                            await conn.remove_listener(channel, _on_notify)
            except (TimeoutError, asyncpg.PostgresError, OSError) as exc:
                log.warning("outbox relay: LISTEN lost (%s), polling meanwhile", exc)
                await _wait(stop, 1.0)

    @contextlib.asynccontextmanager
    async def _listen_connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self.listen_dsn is None:
            async with self.pool.acquire() as conn:
                yield conn
            return
        conn = await asyncpg.connect(
            self.listen_dsn, server_settings={"application_name": f"pm-{self.schema}-listen"}
        )
        try:
            yield conn
        finally:
            await conn.close()


# How long a batch's confirms may take (the whole batch: written at once, confirmed together).
_CONFIRM_SECONDS = 10.0

_METHOD_FRAMES: dict[tuple[int, str, str], bytes] = {}


def _method_frame(channel: int, exchange: str, routing_key: str) -> bytes:
    """A basic.publish method frame (not mandatory, not immediate): the same few exchanges and
    routing keys again and again, so marshalled once each."""
    key = (channel, exchange, routing_key)
    frame = _METHOD_FRAMES.get(key)
    if frame is None:
        if len(_METHOD_FRAMES) >= 4096:
            _METHOD_FRAMES.clear()
        frame = _METHOD_FRAMES[key] = pamqp.frame.marshal(
            spec.Basic.Publish(exchange=exchange, routing_key=routing_key), channel
        )
    return frame


def _content_header(
    channel: int, headers: Mapping[str, Any], routing_key: str, message_id: str, body_size: int
) -> bytes:
    """A publish's content header frame, as pamqp marshals it: the relay's properties."""
    return pamqp.frame.marshal(
        ContentHeader(
            properties=spec.Basic.Properties(
                message_id=message_id,
                content_type="application/cloudevents+json",
                delivery_mode=2,  # persistent
                headers=dict(headers),
                message_type=routing_key,
            ),
            body_size=body_size,
        ),
        channel,
    )


class _HeaderFrames:
    """The content header frames of a group of publishes that differ only in message id and
    body size (the same trace headers and routing key): marshalled by pamqp once per id
    length, then copied with the row's id and size in place (~6 us per publish less).

    Frame layout (AMQP 0-9-1 4.2.3, 4.2.6.1): type, channel, payload size (7 bytes); class,
    weight, body size (8 bytes from offset 11), property flags and properties in spec order,
    `message_id` then `type` last of those set; frame end. An id of the template's length
    leaves every size and offset unchanged."""

    __slots__ = ("_templates", "channel", "headers", "routing_key")

    def __init__(self, channel: int, headers: Mapping[str, Any], routing_key: str) -> None:
        self.channel = channel
        self.headers = headers
        self.routing_key = routing_key
        # id length -> (frame before the body size, between it and the id, after the id)
        self._templates: dict[int, tuple[bytes, bytes, bytes]] = {}

    def frame(self, message_id: str, body_size: int) -> bytes:
        raw = message_id.encode()
        parts = self._templates.get(len(raw))
        if parts is None:
            if len(raw) != len(message_id) or len(raw) > 255:
                return _content_header(
                    self.channel, self.headers, self.routing_key, message_id, body_size
                )
            sample = "0" * len(raw)
            frame = _content_header(self.channel, self.headers, self.routing_key, sample, 0)
            # After the id: the type (short string) and the frame end.
            end = len(frame) - (1 + len(self.routing_key.encode()) + 1)
            start = end - len(raw)
            if frame[start - 1] != len(raw) or frame[start:end] != sample.encode():
                return _content_header(
                    self.channel, self.headers, self.routing_key, message_id, body_size
                )
            parts = self._templates[len(raw)] = (frame[:11], frame[19:start], frame[end:])
        head, middle, tail = parts
        return b"".join((head, body_size.to_bytes(8, "big"), middle, raw, tail))


def _body_frame(channel: int, chunk: bytes) -> bytes:
    """A content body frame (AMQP 0-9-1 4.2.3): type 3, channel, size, payload, frame end."""
    return b"".join(
        (b"\x03", channel.to_bytes(2, "big"), len(chunk).to_bytes(4, "big"), chunk, b"\xce")
    )


class _Confirms:
    """The broker's answers to one batch's publishes, counted: `future` resolves once every
    publish is acked, and fails at the first nack or when the channel closes. Each publish's
    entry in aiormq's `confirmations` is a `_Confirm` of it: aiormq answers a confirmation
    with done(), cancelled(), set_result(frame) or set_exception(error), as it does its own
    futures, so a batch needs no future, callbacks and store entry per message."""

    __slots__ = ("future", "left")

    def __init__(self, future: asyncio.Future[None], count: int) -> None:
        self.future = future
        self.left = count

    def ack(self) -> None:
        self.left -= 1
        if self.left == 0 and not self.future.done():
            self.future.set_result(None)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


class _Confirm:
    """One publish's place in aiormq's `Channel.confirmations` (see `_Confirms`)."""

    __slots__ = ("batch",)

    def __init__(self, batch: _Confirms) -> None:
        self.batch = batch

    def done(self) -> bool:
        return self.batch.future.done()

    def cancelled(self) -> bool:
        # Asked only of a confirmation already done, to log a late answer: an answer after
        # the batch failed or timed out is expected (aiormq logs it at debug level).
        return self.batch.future.done()

    def set_result(self, _frame: object) -> None:
        self.batch.ack()

    def set_exception(self, error: BaseException) -> None:
        self.batch.fail(error)


async def _write_publishes(
    amqp: aiormq.abc.AbstractChannel, frames: bytes, count: int
) -> tuple[asyncio.Future[Any], asyncio.Future[None]]:
    """Put `count` publishes, marshalled as `frames`, on the channel in one write; returns the
    write's drain future and the batch's confirmation (`_Confirms`): resolved once the broker
    acked every publish, failed by a nack (aiormq's DeliveryError) or a closed channel.

    What aiormq's `basic_publish` does per message (take the channel lock, number the
    delivery, register its confirmation, queue its frames), done once for the batch: one
    socket write instead of one per message, and no task, lock, timeout or future per
    message. It touches aiormq's channel internals (`delivery_tag`, `confirmations`,
    `write_queue`), pinned by uv.lock; the relay tests go through it."""
    ch: Any = amqp
    if not ch.publisher_confirms:
        raise RuntimeError("the relay publishes with publisher confirms only")
    loop = asyncio.get_running_loop()
    batch = _Confirms(loop.create_future(), count)
    async with ch.lock:
        first = ch.delivery_tag + 1
        written: asyncio.Future[Any] = ch.create_future()  # failed too if the channel closes
        for tag in range(first, first + count):
            ch.confirmations[tag] = _Confirm(batch)
        try:
            ch.delivery_tag = first + count - 1
            await ch.write_queue.put(
                ChannelFrame(payload=frames, should_close=False, drain_future=written)
            )
        except BaseException:
            # Not queued: the broker has not seen these publishes; their numbers are free.
            ch.delivery_tag = first - 1
            for tag in range(first, first + count):
                ch.confirmations.pop(tag, None)
            written.cancel()
            batch.future.cancel()
            raise
    # A closed channel answers none of them: fail the batch with the channel's reason.
    closing: asyncio.Future[Any] = ch.closing

    def on_close(closed: asyncio.Future[Any]) -> None:
        # Removed before our own cancel (on_confirmed): any end of the channel fails the batch.
        error = None if closed.cancelled() else closed.exception()
        batch.fail(error or aiormq.exceptions.ChannelInvalidStateError("channel closed"))

    def on_confirmed(done: asyncio.Future[None]) -> None:
        closing.remove_done_callback(on_close)
        # Stops our observer (if the channel had closed already, `closing` is its own future:
        # done, so a cancel leaves it be).
        closing.cancel()
        if not done.cancelled():
            done.exception()  # retrieved: a caller that failed on `written` never awaits it

    closing.add_done_callback(on_close)
    batch.future.add_done_callback(on_confirmed)
    return written, batch.future


def _group_key(events_exchange: str, row: Mapping[str, Any]) -> tuple[str | None, str, str]:
    """The rows one producer span covers: the same stored trace context (as the claim reads
    it, text), destination exchange and routing key."""
    exchange = events_exchange if row["exchange"] is None else _command_exchange(row)
    return row["headers"], exchange, row["routing_key"]


def _stored_headers(text: str | None) -> dict[str, Any]:
    """The trace headers the writing transaction stored with its rows (`headers::text`)."""
    if not text:
        return {}
    headers: dict[str, Any] = orjson.loads(text) or {}
    return headers


def _end(spans: Iterable[trace.Span]) -> None:
    for span in spans:
        span.end()


def _json_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return orjson.dumps(payload)


# Pending rows of the claimed tenants that this claim does not hold: the first of each tenant
# in publishing order (the index outbox_tenant_pending_idx makes it one probe per tenant).
_FIRST_PENDING_ELSEWHERE = (
    "SELECT t.tenant_id, o.priority, o.created_at FROM unnest($1::text[]) AS t(tenant_id)"
    " CROSS JOIN LATERAL (SELECT priority, created_at FROM outbox"
    " WHERE tenant_id = t.tenant_id AND published_at IS NULL AND id <> ALL($2::uuid[])"
    " AND (not_before IS NULL OR not_before <= now())"
    " ORDER BY priority DESC, created_at LIMIT 1) AS o"
)


async def _in_tenant_order(
    conn: asyncpg.Connection, claimed: Sequence[asyncpg.Record], sent: Iterable[Any] = ()
) -> list[asyncpg.Record]:
    """The claimed rows that may go now: a row whose tenant has an earlier pending row that
    this claim skipped (`SKIP LOCKED`: another relay holds it and has not published it yet) is
    left for a later claim; rows this relay already queued on its channel (`sent`) are ahead
    on the same channel, so they hold nothing back. Without that, two claims racing over
    a tenant's rows (a relay that fell behind by two commits) published them in whichever order
    their queries returned, and the tenant's consumers (its event stream) saw them swapped."""
    tenants = sorted({r["tenant_id"] for r in claimed})
    mine = [r["id"] for r in claimed] + list(sent)
    earlier = await conn.fetch(_FIRST_PENDING_ELSEWHERE, tenants, mine)
    if not earlier:
        return list(claimed)
    first = {e["tenant_id"]: (-e["priority"], e["created_at"]) for e in earlier}
    return [
        r
        for r in claimed
        if r["tenant_id"] not in first
        or (-r["priority"], r["committed_at"]) < first[r["tenant_id"]]
    ]


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters: Sequence[asyncio.Task[Any]] = [
        asyncio.create_task(stop.wait()),
        asyncio.create_task(wake.wait()),
    ]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
