"""The event bus: `pm.events` topology, consumers with bounded retries and DLQs, DLQ replay.

Topology, per consumer queue `<service>.<purpose>`:
- the queue itself: durable quorum queue bound to `pm.events` by the consumer's patterns;
- `<queue>.backoff.<ms>`: one durable delay queue per retry delay; a message waits out the TTL
  there, then is dead-lettered (at-least-once) back to `<queue>` through the service's own
  direct exchange `<service>.direct` (every queue of the service is bound there by its name;
  the retry and DLQ publishes go through it too: no service user may write to the default
  exchange, so none can push a message into another service's queue by name);
- `<queue>.dlq`: where a message lands, with its error in headers, after the last attempt
  or on a permanent error. `python -m libs.common.bus replay-dlq <queue>` re-delivers it.

A command queue (`handle_command`: a work item the service sends itself, see
`libs.common.commands`) has the same retry queues and DLQ, but is bound only to the
service's direct exchange: the outbox relay publishes commands to it there.

Handlers receive the parsed `Envelope`, and, when the consumer uses the inbox, a connection
inside the transaction that also records `(consumer, event_id)`: the handler's writes and
the dedup mark commit together, so a redelivered event has no second effect. A message is
acknowledged only after its outcome (done, scheduled for retry, dead-lettered) is durable.

Batch consumers (`subscribe_batch`) take the messages that arrived while the previous batch
was in the database (up to `max_batch`, prefetch twice that, so the next batch fills while
one commits) and hand them to one handler call, in arrival order, without duplicate ids:
one transaction (and one multi-row inbox claim) for the lot, then one `ack(multiple)`.
If the batch fails, its messages are handled one by one through the path of a single
message (retry queues, then the DLQ), so a poison message is isolated and the rest commit.
They run beside FastStream (same connection, an aio-pika robust channel of their own, consumed
on the aiormq channel under it: no aio-pika message per delivery): FastStream handles one
message per call, and its per-message middleware and dependency resolution were most of a
consumer's CPU at 1,000 events/s (docs/scheduling.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

import aio_pika
import aio_pika.abc
import aiormq.abc
import asyncpg
from faststream import AckPolicy
from faststream.rabbit import (
    ExchangeType,
    RabbitBroker,
    RabbitExchange,
    RabbitQueue,
)
from faststream.rabbit.annotations import RabbitMessage
from faststream.rabbit.opentelemetry import RabbitTelemetryMiddleware
from faststream.rabbit.prometheus import RabbitPrometheusMiddleware
from faststream.rabbit.schemas import Channel, QueueType
from opentelemetry import trace
from prometheus_client import REGISTRY, Counter
from pydantic import ValidationError

from libs.common.commands import Command, direct_exchange
from libs.common.events import Envelope, EventData, parse_event
from libs.common.inbox import claim_event, claim_events
from libs.common.settings import AMQP_RECONNECT_SECONDS
from libs.common.telemetry import extract_trace_context

log = logging.getLogger(__name__)

ATTEMPT_HEADER = "x-pm-attempt"
ERROR_HEADER = "x-pm-error"
ROUTING_KEY_HEADER = "x-pm-routing-key"

tracer = trace.get_tracer("pm.bus")

HANDLED = Counter("pm_events_handled_total", "Events handled", ["queue", "outcome"])

IncomingMessage = aio_pika.abc.AbstractIncomingMessage
# A delivery as aiormq parsed it (the batch consumers' messages).
Delivery = aiormq.abc.DeliveredMessage
Handler = Callable[[Envelope, asyncpg.Connection | None], Awaitable[None]]
# A batch handler: the events of one batch, in arrival order, and the inbox transaction's
# connection (None without the inbox). It stores them all or raises.
BatchHandler = Callable[[list[Envelope], asyncpg.Connection | None], Awaitable[None]]
C = TypeVar("C", bound=Command)
E = TypeVar("E", bound=EventData)
# A typed handler: the validated payload model, its envelope (tenant, mode, time, source),
# and the inbox transaction's connection (None without the inbox).
TypedHandler = Callable[[E, Envelope, asyncpg.Connection | None], Awaitable[None]]


class PermanentError(Exception):
    """The event can never be handled (bad data, unknown reference): dead-letter it now."""


class RetryLater(Exception):
    """A transient failure; the event is retried after the next delay."""


def retry_queue_name(queue: str, delay_ms: int) -> str:
    # `.backoff.`, not the former `.retry.`: those dead-lettered through the default exchange,
    # and a queue's arguments cannot change (an old one drains by itself; delete it then).
    return f"{queue}.backoff.{delay_ms}"


def dlq_name(queue: str) -> str:
    return f"{queue}.dlq"


def events_exchange(name: str = "pm.events") -> RabbitExchange:
    return RabbitExchange(name, type=ExchangeType.TOPIC, durable=True)


def service_exchange(queue: str) -> RabbitExchange:
    """The direct exchange of the service owning `queue` (`<service>.direct`)."""
    return RabbitExchange(direct_exchange(queue), type=ExchangeType.DIRECT, durable=True)


def main_queue(name: str, routing_key: str = "") -> RabbitQueue:
    return RabbitQueue(name, queue_type=QueueType.QUORUM, durable=True, routing_key=routing_key)


@dataclass
class Subscription:
    queue: str
    patterns: list[str]
    handler: Handler
    inbox: bool = True
    delays_ms: list[int] = field(default_factory=list)
    # A command queue: bound to no events exchange, its messages' data validated by this model.
    command: type[Command] | None = None
    # A batch consumer (`subscribe_batch`): `handler` runs one event through it, for the
    # messages of a failed batch.
    batch_handler: BatchHandler | None = None
    max_batch: int = 1

    @property
    def max_attempts(self) -> int:
        return len(self.delays_ms) + 1


class EventBus:
    """One service process's consumers on `pm.events`, built on FastStream's RabbitBroker."""

    def __init__(
        self,
        *,
        service: str,
        amqp_url: str,
        pool: asyncpg.Pool | None = None,
        exchange: str = "pm.events",
        retry_delays_ms: list[int] | None = None,
        prefetch: int = 32,
    ) -> None:
        self.service = service
        self.pool = pool
        self.exchange_name = exchange
        self.retry_delays_ms = list(retry_delays_ms or [1000, 5000, 30000, 120000])
        self.prefetch = prefetch
        self.subscriptions: list[Subscription] = []
        self.broker = RabbitBroker(
            amqp_url,
            app_id=f"pm-{service}",
            reconnect_interval=AMQP_RECONNECT_SECONDS,
            graceful_timeout=25.0,
            default_channel=Channel(prefetch_count=prefetch),
            middlewares=(
                RabbitTelemetryMiddleware(tracer_provider=trace.get_tracer_provider()),
                RabbitPrometheusMiddleware(registry=REGISTRY, app_name=f"pm-{service}"),
            ),
            log_level=logging.DEBUG,
        )
        self._started = False
        self._batch_consumers: list[_BatchConsumer] = []

    def subscribe(
        self,
        purpose: str,
        patterns: list[str],
        *,
        inbox: bool = True,
        retry_delays_ms: list[int] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register `handler` on queue `<service>.<purpose>` bound to `patterns`."""

        def register(handler: Handler) -> Handler:
            sub = Subscription(
                queue=f"{self.service}.{purpose}",
                patterns=patterns,
                handler=handler,
                inbox=inbox,
                delays_ms=list(retry_delays_ms or self.retry_delays_ms),
            )
            if sub.inbox and self.pool is None:
                raise ValueError("an inbox consumer needs a database pool")
            self.subscriptions.append(sub)
            self._attach(sub)
            return handler

        return register

    def subscribe_batch(
        self,
        purpose: str,
        patterns: list[str],
        *,
        max_batch: int = 500,
        inbox: bool = True,
        retry_delays_ms: list[int] | None = None,
    ) -> Callable[[BatchHandler], BatchHandler]:
        """Register a batch handler on queue `<service>.<purpose>` bound to `patterns`: it gets
        up to `max_batch` events at a time (what arrived while the previous batch committed),
        in arrival order, each id once; with the inbox, only events not handled before, and
        the connection of the transaction that records them."""

        def register(batch_handler: BatchHandler) -> BatchHandler:
            async def one(event: Envelope, conn: asyncpg.Connection | None) -> None:
                await batch_handler([event], conn)

            one.__doc__ = batch_handler.__doc__
            one.__name__ = batch_handler.__name__
            sub = Subscription(
                queue=f"{self.service}.{purpose}",
                patterns=patterns,
                handler=one,
                inbox=inbox,
                delays_ms=list(retry_delays_ms or self.retry_delays_ms),
                batch_handler=batch_handler,
                max_batch=max_batch,
            )
            if sub.inbox and self.pool is None:
                raise ValueError("an inbox consumer needs a database pool")
            self.subscriptions.append(sub)
            return batch_handler

        return register

    def on(
        self,
        purpose: str,
        *types: type[E],
        inbox: bool = True,
        retry_delays_ms: list[int] | None = None,
    ) -> Callable[[TypedHandler[E]], TypedHandler[E]]:
        """Register a typed handler of the event classes `types` on queue
        `<service>.<purpose>` (bound to their types): it gets the validated payload model,
        e.g. `async def on_requested(data: EmailRequested, event: Envelope, conn) -> None`."""

        def register(handler: TypedHandler[E]) -> TypedHandler[E]:
            async def handle(event: Envelope, conn: asyncpg.Connection | None) -> None:
                data = event.payload()
                if not isinstance(data, types):
                    raise PermanentError(f"{event.type} is not handled by {handler.__name__}")
                await handler(data, event, conn)

            handle.__doc__ = handler.__doc__
            handle.__name__ = handler.__name__
            self.subscribe(
                purpose,
                [t.event_type for t in types],
                inbox=inbox,
                retry_delays_ms=retry_delays_ms,
            )(handle)
            return handler

        return register

    def handle_command(
        self, command: type[C], *, retry_delays_ms: list[int] | None = None
    ) -> Callable[[Callable[[C], Awaitable[None]]], Callable[[C], Awaitable[None]]]:
        """Register the one handler of `command` on its private queue `command.queue`
        (`<service>.<purpose>`); the handler gets the validated command. No inbox: a command
        handler is idempotent by the state it changes."""
        if not command.queue.startswith(f"{self.service}."):
            raise ValueError(f"{command.queue}: a command queue is the service's own")

        def register(handler: Callable[[C], Awaitable[None]]) -> Callable[[C], Awaitable[None]]:
            async def handle(event: Envelope, _conn: asyncpg.Connection | None) -> None:
                await handler(command.model_validate(event.data))

            handle.__doc__ = handler.__doc__
            sub = Subscription(
                queue=command.queue,
                patterns=[],
                handler=handle,
                inbox=False,
                delays_ms=list(retry_delays_ms or self.retry_delays_ms),
                command=command,
            )
            self.subscriptions.append(sub)
            self._attach(sub)
            return handler

        return register

    def _attach(self, sub: Subscription) -> None:
        if sub.command is not None:

            @self.broker.subscriber(
                main_queue(sub.queue, sub.queue),
                service_exchange(sub.queue),
                ack_policy=AckPolicy.MANUAL,
                title=sub.queue,
                description=f"{sub.handler.__doc__ or sub.command.__name__}",
                include_in_schema=False,  # private to the service: not in the AsyncAPI
            )
            async def consume_command() -> None:
                await self._process(sub, self._current_message())

            return

        @self.broker.subscriber(
            main_queue(sub.queue, sub.patterns[0]),
            events_exchange(self.exchange_name),
            ack_policy=AckPolicy.MANUAL,
            title=sub.queue,
            description=f"{sub.handler.__doc__ or sub.handler.__name__}",
        )
        async def consume() -> None:
            await self._process(sub, self._current_message())

    def _current_message(self) -> RabbitMessage:
        """The message being handled, from FastStream's context. Not a `RabbitMessage`
        parameter: FastStream resolves such a context parameter with a synchronous call that
        fast_depends runs in a worker thread, one hop per message, so messages that arrived
        together reached their handler in whichever order the threads finished (a tenant's
        event stream numbered its events out of order), and the hops capped a consumer at a
        few hundred messages a second on a busy machine."""
        message: RabbitMessage = self.broker.context.get_local("message")
        return message

    async def start(self) -> None:
        await self.broker.connect()
        await self.declare_topology()
        await self.broker.start()
        for sub in self.subscriptions:
            if sub.batch_handler is not None:
                consumer = _BatchConsumer(self, sub)
                await consumer.start()
                self._batch_consumers.append(consumer)
        self._started = True

    async def declare_topology(self) -> None:
        exchange = await self.broker.declare_exchange(events_exchange(self.exchange_name))
        for sub in self.subscriptions:
            own = await self.broker.declare_exchange(service_exchange(sub.queue))
            queue = await self.broker.declare_queue(main_queue(sub.queue))
            for pattern in sub.patterns:
                await queue.bind(exchange, routing_key=pattern)
            await queue.bind(own, routing_key=sub.queue)
            for delay in sorted(set(sub.delays_ms)):
                name = retry_queue_name(sub.queue, delay)
                retry = await self.broker.declare_queue(
                    RabbitQueue(
                        name,
                        queue_type=QueueType.QUORUM,
                        durable=True,
                        arguments={
                            "x-message-ttl": delay,
                            "x-dead-letter-exchange": own.name,
                            "x-dead-letter-routing-key": sub.queue,
                            "x-dead-letter-strategy": "at-least-once",
                            "x-overflow": "reject-publish",
                        },
                    )
                )
                await retry.bind(own, routing_key=name)
            dlq = await self.broker.declare_queue(
                RabbitQueue(dlq_name(sub.queue), queue_type=QueueType.QUORUM, durable=True)
            )
            await dlq.bind(own, routing_key=dlq_name(sub.queue))

    async def stop(self) -> None:
        if self._started:
            self._started = False
            # The batch in the database finishes and is acked; messages not yet in a batch
            # go back to the queue when the channel closes.
            for consumer in self._batch_consumers:
                await consumer.stop()
            self._batch_consumers.clear()
            await self.broker.stop()

    async def is_ready(self) -> bool:
        return bool(self._started and await self.broker.ping(timeout=2.0))

    async def _process(self, sub: Subscription, message: RabbitMessage) -> None:
        raw = message.raw_message
        try:
            event = _parse(sub, raw.body)
        except ValueError as exc:
            await self._dead_letter_unparseable(sub, raw, exc)
        else:
            await self._handle_one(sub, raw, event)
        await message.ack()

    async def _dead_letter_unparseable(
        self, sub: Subscription, raw: IncomingMessage, exc: ValueError
    ) -> None:
        headers: dict[str, Any] = dict(raw.headers or {})
        attempt = int(headers.get(ATTEMPT_HEADER, 0) or 0) + 1
        await self._dead_letter(sub, raw, headers, attempt, f"unparseable event: {exc}")
        HANDLED.labels(sub.queue, "dead_lettered").inc()

    async def _process_batch(self, sub: Subscription, messages: list[Delivery]) -> None:
        """Handle a batch of messages of a batch subscription and settle every one of them."""
        batch: list[tuple[Delivery, Envelope]] = []
        seen: set[UUID] = set()
        for message in messages:
            try:
                event = _parse(sub, message.body)
            except ValueError as exc:
                raw = aio_pika.IncomingMessage(message)
                await self._dead_letter_unparseable(sub, raw, exc)
                await _settle(raw)
                continue
            batch.append((message, event))
        if not batch:
            return
        events = []
        for _, event in batch:
            # The same event twice in one batch (a redelivery beside its first delivery):
            # handled once, both messages acked with the batch.
            if event.id not in seen:
                seen.add(event.id)
                events.append(event)
        with tracer.start_as_current_span(
            f"{sub.queue} process",
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "rabbitmq",
                "messaging.destination.name": sub.queue,
                "messaging.batch.message_count": len(batch),
            },
            # One span for the batch, linked to each message's producer span (OpenTelemetry's
            # messaging conventions for batch receiving): every event's trace still reaches
            # the consumer that stored it.
            links=_producer_links(message for message, _ in batch),
        ):
            try:
                await self._handle_batch(sub, events)
            except Exception as exc:
                # Which message fails? Each goes its own way, as a single message would
                # (an aio-pika message of its own, for its headers and its ack).
                log.warning(
                    "batch failed; handling its messages one by one",
                    extra={"queue": sub.queue, "size": len(batch), "error": _describe(exc)},
                )
                for message, event in batch:
                    await self._settle_one(sub, aio_pika.IncomingMessage(message), event)
                return
        HANDLED.labels(sub.queue, "ok").inc(len(events))
        await _settle_through([message for message, _ in batch])

    async def _handle_batch(self, sub: Subscription, events: list[Envelope]) -> None:
        assert sub.batch_handler is not None
        if not sub.inbox:
            await sub.batch_handler(events, None)
            return
        assert self.pool is not None
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = await claim_events(conn, sub.queue, events)
            if len(fresh) < len(events):
                HANDLED.labels(sub.queue, "duplicate").inc(len(events) - len(fresh))
            if fresh:
                await sub.batch_handler(fresh, conn)

    async def _settle_one(
        self, sub: Subscription, message: IncomingMessage, event: Envelope
    ) -> None:
        """A message of a failed batch: handled alone, as `_process` handles one."""
        await self._handle_one(sub, message, event)
        await _settle(message)

    async def _handle_one(self, sub: Subscription, raw: IncomingMessage, event: Envelope) -> None:
        """Handle one event; on failure make its retry or dead letter durable (the caller
        acks the message after this returns)."""
        headers: dict[str, Any] = dict(raw.headers or {})
        attempt = int(headers.get(ATTEMPT_HEADER, 0) or 0) + 1
        try:
            await self._handle(sub, event)
        except PermanentError as exc:
            await self._dead_letter(sub, raw, headers, attempt, _describe(exc))
            HANDLED.labels(sub.queue, "dead_lettered").inc()
        except Exception as exc:
            if attempt < sub.max_attempts:
                await self._schedule_retry(sub, raw, headers, attempt, exc)
                HANDLED.labels(sub.queue, "retried").inc()
            else:
                await self._dead_letter(sub, raw, headers, attempt, _describe(exc))
                HANDLED.labels(sub.queue, "dead_lettered").inc()
        else:
            HANDLED.labels(sub.queue, "ok").inc()

    async def _handle(self, sub: Subscription, event: Envelope) -> None:
        if not sub.inbox:
            await sub.handler(event, None)
            return
        assert self.pool is not None
        async with self.pool.acquire() as conn, conn.transaction():
            if not await claim_event(conn, sub.queue, event):
                log.info("duplicate event skipped", extra={"event_id": str(event.id)})
                HANDLED.labels(sub.queue, "duplicate").inc()
                return
            await sub.handler(event, conn)

    async def _schedule_retry(
        self,
        sub: Subscription,
        raw: IncomingMessage,
        headers: dict[str, Any],
        attempt: int,
        exc: BaseException,
    ) -> None:
        delay = sub.delays_ms[attempt - 1]
        log.warning(
            "event handler failed; retrying",
            extra={
                "queue": sub.queue,
                "attempt": attempt,
                "delay_ms": delay,
                "error": _describe(exc),
            },
        )
        await self._republish(
            raw,
            retry_queue_name(sub.queue, delay),
            {**headers, ATTEMPT_HEADER: attempt, ERROR_HEADER: _describe(exc)},
        )

    async def _dead_letter(
        self,
        sub: Subscription,
        raw: IncomingMessage,
        headers: dict[str, Any],
        attempt: int,
        error: str,
    ) -> None:
        log.error(
            "event dead-lettered",
            extra={"queue": sub.queue, "attempt": attempt, "error": error},
        )
        await self._republish(
            raw,
            dlq_name(sub.queue),
            {
                **headers,
                ATTEMPT_HEADER: attempt,
                ERROR_HEADER: error,
                "x-pm-failed-at": datetime.now(UTC).isoformat(),
            },
        )

    async def _republish(self, raw: IncomingMessage, queue: str, headers: dict[str, Any]) -> None:
        headers.setdefault(ROUTING_KEY_HEADER, raw.routing_key or "")
        await self.broker.publish(
            raw.body,
            queue=queue,
            exchange=service_exchange(queue),
            headers=headers,
            message_id=raw.message_id,
            content_type=raw.content_type,
            message_type=raw.type,
            persist=True,
            mandatory=True,
        )


def _producer_links(messages: Iterable[Delivery]) -> list[trace.Link]:
    links = []
    for message in messages:
        context = trace.get_current_span(
            extract_trace_context(message.header.properties.headers or {})
        ).get_span_context()
        if context.is_valid:
            links.append(trace.Link(context))
    return links


class _BatchConsumer:
    """Consumes one batch subscription's queue on a channel of its own (prefetch twice the
    batch) and hands `EventBus._process_batch` what arrived, one batch at a time, in order.

    It consumes on the aiormq channel under aio-pika's: a delivery is appended as aiormq
    parsed it, with no aio-pika message (its properties copied, a second task) per message,
    which was most of the stream consumer's receive cost (docs/scheduling.md). The robust
    channel restores the queue after a channel or connection loss (FastStream's connection)
    and this consumer consumes again on the new channel (`reopen_callbacks`); what arrived
    on the lost channel is dropped unacked: the broker delivers it again."""

    def __init__(self, bus: EventBus, sub: Subscription) -> None:
        self.bus = bus
        self.sub = sub
        self._pending: list[Delivery] = []
        self._arrived = asyncio.Event()
        self._channel: aio_pika.abc.AbstractRobustChannel | None = None
        self._tag = f"pm-batch.{sub.queue}.{uuid4().hex}"
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        # The broker's own connection (FastStream's channel manager: its reconnects restore
        # this channel and the queue); a channel of our own for the prefetch.
        manager = self.bus.broker.config.channel_manager
        self._channel = await manager.get_channel(Channel(prefetch_count=2 * self.sub.max_batch))
        await self._channel.declare_queue(
            self.sub.queue, durable=True, arguments={"x-queue-type": "quorum"}
        )
        self._channel.reopen_callbacks.add(self._on_reopen)
        self._task = asyncio.create_task(self._run(), name=f"batch-consumer {self.sub.queue}")
        await self._consume()

    async def _consume(self) -> None:
        assert self._channel is not None
        underlay = await self._channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(self._on_cancel)
        await underlay.basic_consume(self.sub.queue, self._on_message, consumer_tag=self._tag)

    async def _on_reopen(self, _channel: object) -> None:
        # Unacked deliveries of the lost channel come again on the new one.
        self._pending = [m for m in self._pending if not m.channel.is_closed]
        if self._stopping:
            return
        try:
            await self._consume()
        except Exception:
            log.exception("batch consumer: consuming again on the reopened channel failed")

    def _on_cancel(self, _frame: object) -> None:
        # The broker cancelled the consumer (its queue deleted): consume again; a queue that
        # is gone closes the channel, whose restore declares the queue and consumes again.
        if not self._stopping:
            task = asyncio.create_task(self._consume())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def stop(self) -> None:
        self._stopping = True
        if self._channel is not None:
            self._channel.reopen_callbacks.discard(self._on_reopen)
            with contextlib.suppress(Exception):
                underlay = await self._channel.get_underlay_channel()
                await underlay.basic_cancel(self._tag)
        self._arrived.set()
        if self._task is not None:
            await self._task

    async def _on_message(self, message: Delivery) -> None:
        # No await before the append: aiormq runs one task per delivery, in delivery
        # order, so the list keeps the queue's order.
        self._pending.append(message)
        self._arrived.set()

    async def _run(self) -> None:
        while not self._stopping:
            await self._arrived.wait()
            if self._stopping:
                return
            batch = self._pending[: self.sub.max_batch]
            del self._pending[: self.sub.max_batch]
            if not self._pending:
                self._arrived.clear()
            if not batch:
                continue
            try:
                await self.bus._process_batch(self.sub, batch)
            except Exception:
                # A retry or DLQ publish failed (broker away): what is not settled goes back
                # to the queue now, before a later `ack(multiple)` could cover it.
                log.exception("batch consumer: settling a batch failed; requeued")
                await _settle_through(batch, requeue=True)


async def _settle(message: IncomingMessage) -> None:
    try:
        await message.ack()
    except Exception as exc:  # a channel lost meanwhile: the broker redelivers the message
        log.warning("ack failed (%s); the message will be redelivered", exc)


async def _settle_through(messages: list[Delivery], *, requeue: bool = False) -> None:
    """Settle a batch: on each channel its messages came on, one `ack(multiple)` through its
    last one (every earlier delivery of that channel is settled already: batches go one at a
    time, in order; a message of the batch settled alone is not covered twice), or with
    `requeue` one `nack(multiple, requeue)`: what is not settled yet goes back to the queue.
    A channel lost meanwhile is skipped: the broker delivers its messages again."""
    last: dict[aiormq.abc.AbstractChannel, int] = {}
    for message in messages:
        last[message.channel] = message.delivery_tag or 0
    for channel, tag in last.items():
        if channel.is_closed:
            continue
        try:
            if requeue:
                await channel.basic_nack(tag, multiple=True, requeue=True)
            else:
                await channel.basic_ack(tag, multiple=True)
        except Exception as exc:
            log.warning("settling a batch failed (%s); it will be redelivered", exc)


def _parse(sub: Subscription, body: bytes) -> Envelope:
    """The message's envelope: an event of the catalog, or the subscription's command."""
    if sub.command is None:
        return parse_event(body)
    try:
        envelope = Envelope.model_validate_json(body)
        sub.command.model_validate(envelope.data)
    except ValidationError as exc:
        raise ValueError(f"invalid command: {exc.error_count()} error(s)") from exc
    return envelope


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:1000]


# ---------------------------------------------------------------- DLQ tools


async def dlq_depth(amqp_url: str, queue: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        q = await channel.declare_queue(dlq_name(queue), passive=True)
        return int(q.declaration_result.message_count or 0)


async def replay_dlq(amqp_url: str, queue: str, *, limit: int | None = None) -> int:
    """Move messages from `<queue>.dlq` back to `<queue>` with a fresh attempt budget.

    Each message is published (confirmed) before it is acked on the DLQ, so a crash mid-way
    can duplicate a message (consumers deduplicate) but never lose one.
    """
    connection = await aio_pika.connect(amqp_url)
    moved = 0
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        dlq = await channel.declare_queue(dlq_name(queue), passive=True)
        await channel.declare_queue(queue, passive=True)
        # Through the service's own exchange: its user may not write to the default one.
        own = await channel.declare_exchange(
            direct_exchange(queue), aio_pika.ExchangeType.DIRECT, durable=True
        )
        while limit is None or moved < limit:
            msg = await dlq.get(no_ack=False, fail=False)
            if msg is None:
                break
            headers = dict(msg.headers or {})
            headers[ATTEMPT_HEADER] = 0
            headers["x-pm-replayed"] = int(str(headers.get("x-pm-replayed") or 0)) + 1
            await own.publish(
                aio_pika.Message(
                    body=msg.body,
                    headers=headers,
                    message_id=msg.message_id,
                    content_type=msg.content_type,
                    type=msg.type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=queue,
            )
            await msg.ack()
            moved += 1
    return moved


def main(argv: list[str] | None = None) -> int:
    from libs.common.settings import ServiceSettings

    parser = argparse.ArgumentParser(prog="python -m libs.common.bus")
    sub = parser.add_subparsers(dest="command", required=True)
    replay = sub.add_parser("replay-dlq", help="re-deliver a consumer queue's dead letters")
    replay.add_argument("queue", help="the consumer queue, e.g. webhooks.fanout")
    replay.add_argument("--limit", type=int, default=None)
    depth = sub.add_parser("dlq-depth", help="how many messages wait in a queue's DLQ")
    depth.add_argument("queue")
    args = parser.parse_args(argv)
    amqp_url = ServiceSettings().amqp_url
    if args.command == "replay-dlq":
        moved = asyncio.run(replay_dlq(amqp_url, args.queue, limit=args.limit))
        print(f"replayed {moved} message(s) from {dlq_name(args.queue)} to {args.queue}")
    else:
        print(asyncio.run(dlq_depth(amqp_url, args.queue)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
