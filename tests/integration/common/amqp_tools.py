"""Test-side AMQP tools: collect what reaches `pm.events`, publish raw envelopes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import aio_pika
import orjson

from libs.common.events import Envelope


class Collector:
    """An exclusive queue bound to `pm.events` that records every message it receives."""

    def __init__(self, amqp_url: str, *patterns: str) -> None:
        self.amqp_url = amqp_url
        self.patterns = patterns
        self.messages: list[aio_pika.abc.AbstractIncomingMessage] = []
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None

    async def __aenter__(self) -> Collector:
        self._connection = await aio_pika.connect_robust(self.amqp_url)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=1000)
        exchange = await channel.declare_exchange(
            "pm.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        for p in self.patterns:
            await queue.bind(exchange, routing_key=p)

        async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
            self.messages.append(msg)
            await msg.ack()

        await queue.consume(on_message)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._connection is not None
        await self._connection.close()

    def ids(self, tenant_id: str | None = None) -> list[str]:
        out = []
        for m in self.messages:
            body: dict[str, Any] = orjson.loads(m.body)
            if tenant_id is None or body.get("tenant_id") == tenant_id:
                out.append(str(m.message_id))
        return out


def relay_message(env: Envelope, headers: dict[str, Any] | None = None) -> aio_pika.Message:
    """An event as the outbox relay publishes it (persistent, id as message_id)."""
    return aio_pika.Message(
        env.to_json(),
        message_id=str(env.id),
        content_type="application/cloudevents+json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        type=env.type,
        headers=headers or {},
    )


async def events_exchange(channel: aio_pika.abc.AbstractChannel) -> aio_pika.abc.AbstractExchange:
    return await channel.declare_exchange("pm.events", aio_pika.ExchangeType.TOPIC, durable=True)


async def publish_on(exchange: aio_pika.abc.AbstractExchange, events: Sequence[Envelope]) -> None:
    """Publish `events` on `exchange` as the relay does, 200 confirms in flight at a time."""
    for start in range(0, len(events), 200):
        await asyncio.gather(
            *(
                exchange.publish(relay_message(e), routing_key=e.type)
                for e in events[start : start + 200]
            )
        )


async def publish_raw(amqp_url: str, env: Envelope, headers: dict[str, Any] | None = None) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        exchange = await events_exchange(await connection.channel(publisher_confirms=True))
        await exchange.publish(relay_message(env, headers), routing_key=env.routing_key)


async def publish_all(amqp_url: str, events: Sequence[Envelope]) -> None:
    """Connect, publish `events` as the relay does, disconnect."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        await publish_on(
            await events_exchange(await connection.channel(publisher_confirms=True)), events
        )


async def eventually(
    check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05
) -> Any:
    """Poll `check` (sync or async) until it returns a truthy value; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")
