"""Broker wake-ups for webhook attempts: the queue `webhooks.attempts` and its delay tiers.

A job names a delivery, its schedule generation (`seq`) and when it is due. Postgres holds the
truth (status, `next_attempt_at`); a job only wakes a worker at the right time. Waiting
happens in RabbitMQ, never in a sleeping worker: a job for later goes to the largest delay
queue `webhooks.attempts.wait.<ms>` not longer than what is left, whose TTL dead-letters it
back to `webhooks.attempts`; a job still early there is parked again (a hierarchical timing
wheel), so any delay, with jitter or a receiver's Retry-After, needs only a fixed set of
queues and a handful of hops.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aio_pika
import orjson

from libs.common.commands import direct_exchange
from libs.common.settings import AMQP_RECONNECT_SECONDS

QUEUE = "webhooks.attempts"
# Tiers in ms: fine near zero (short custom schedules, jitter), coarse for long waits.
DELAY_TIERS_MS: tuple[int, ...] = (
    50, 100, 250, 500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000,
    120_000, 300_000, 600_000, 1_800_000, 3_600_000,
)  # fmt: skip
# A job this close to its due time runs now: the claim tolerates the difference.
DUE_TOLERANCE_MS = 50


# Jobs reach the queues through webhooks' own direct exchange (routing key = queue name),
# never the default one, which no service user may write to (libs/common/amqp_users.py).
EXCHANGE = direct_exchange(QUEUE)


def delay_queue_name(ms: int) -> str:
    # `.wait.`, not the former `.delay.`: those dead-lettered through the default exchange,
    # and a queue's arguments cannot change (an old one drains by itself; delete it then).
    return f"{QUEUE}.wait.{ms}"


def tier_for(remaining_ms: float) -> int | None:
    """The delay queue for a job due in `remaining_ms`; None when it is due now."""
    if remaining_ms < DUE_TOLERANCE_MS:
        return None
    return DELAY_TIERS_MS[bisect.bisect_right(DELAY_TIERS_MS, remaining_ms) - 1]


@dataclass(frozen=True)
class AttemptJob:
    delivery_id: str
    endpoint_id: str
    seq: int
    due_ms: int  # epoch milliseconds

    def to_bytes(self) -> bytes:
        return orjson.dumps({"d": self.delivery_id, "e": self.endpoint_id, "s": self.seq,
                             "t": self.due_ms})  # fmt: skip

    @classmethod
    def from_bytes(cls, raw: bytes) -> AttemptJob:
        data = orjson.loads(raw)
        return cls(str(data["d"]), str(data["e"]), int(data["s"]), int(data["t"]))


JobHandler = Callable[[AttemptJob], Awaitable[None]]


class AttemptQueue:
    """Publishes (with confirms) and consumes attempt jobs."""

    def __init__(self, amqp_url: str, *, prefetch: int = 256) -> None:
        self.amqp_url = amqp_url
        self.prefetch = prefetch
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._publish_channel: aio_pika.abc.AbstractChannel | None = None
        self._consume_channel: aio_pika.abc.AbstractChannel | None = None
        self._consumer_tag: str | None = None
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    async def connect(self) -> None:
        self._connection = await aio_pika.connect_robust(
            self.amqp_url,
            client_properties={"connection_name": "webhooks-attempts"},
            reconnect_interval=AMQP_RECONNECT_SECONDS,
        )
        self._publish_channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await self.declare(self._publish_channel)

    @staticmethod
    async def declare(channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractExchange:
        exchange = await channel.declare_exchange(
            EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
        )
        queue = await channel.declare_queue(
            QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(exchange, routing_key=QUEUE)
        for ms in DELAY_TIERS_MS:
            delay = await channel.declare_queue(
                delay_queue_name(ms),
                durable=True,
                arguments={
                    "x-queue-type": "quorum",
                    "x-message-ttl": ms,
                    "x-dead-letter-exchange": EXCHANGE,
                    "x-dead-letter-routing-key": QUEUE,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
            await delay.bind(exchange, routing_key=delay_queue_name(ms))
        return exchange

    def is_ready(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def schedule(self, job: AttemptJob) -> None:
        """Publish `job` to wait until it is due (confirmed by the broker on return)."""
        assert self._exchange is not None, "connect() first"
        tier = tier_for(job.due_ms - time.time() * 1000)
        await self._exchange.publish(
            aio_pika.Message(job.to_bytes(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=QUEUE if tier is None else delay_queue_name(tier),
        )

    async def consume(self, handler: JobHandler) -> None:
        """Deliver due jobs to `handler`; a job is acked only after the handler returned (a
        handler that raises leaves it to be redelivered)."""
        assert self._connection is not None, "connect() first"
        self._consume_channel = await self._connection.channel()
        await self._consume_channel.set_qos(prefetch_count=self.prefetch)
        self._queue = await self._consume_channel.declare_queue(QUEUE, passive=True)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            try:
                job = AttemptJob.from_bytes(message.body)
            except (ValueError, KeyError, TypeError):
                await message.reject(requeue=False)  # not ours to understand: drop it
                return
            try:
                if tier_for(job.due_ms - time.time() * 1000) is not None:
                    await self.schedule(job)  # still early: park it again
                else:
                    await handler(job)
            except Exception:
                await message.nack(requeue=True)
                raise
            await message.ack()

        self._consumer_tag = await self._queue.consume(on_message)

    async def stop_consuming(self) -> None:
        if self._queue is not None and self._consumer_tag is not None:
            await self._queue.cancel(self._consumer_tag)
            self._consumer_tag = None

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
