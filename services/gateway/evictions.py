"""How every gateway replica learns, within a second, that a key was revoked or regenerated or
that a tenant's plan changed.

Two feeds, both per replica:
- RabbitMQ: an exclusive, auto-deleted queue bound to `api_key.revoked`,
  `api_key.regenerated` and `tenant.plan_changed` on `pm.events` (the durable, outbox-backed
  facts). A replica that was disconnected clears its in-process caches on reconnect, since
  it may have missed events.
- Redis pub/sub channel `<ns>:gw:evict`: the replica that forwarded a successful revoke or
  regenerate announces it at once, before the outbox relay has even published the fact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aio_pika
import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from libs.common.events import (
    ApiKeyRegenerated,
    ApiKeyRevoked,
    Envelope,
    TenantPlanChanged,
    parse_event,
)
from libs.common.plans import plan_change_allowed
from libs.common.settings import AMQP_RECONNECT_SECONDS
from services.gateway.authentication import Authenticator

log = logging.getLogger(__name__)

EVICTIONS = Counter(
    "pm_gateway_cache_evictions", "Cache evictions applied by this replica", ["source", "kind"]
)
BINDINGS = ("api_key.revoked", "api_key.regenerated", "tenant.plan_changed")


def channel_name(namespace: str) -> str:
    return f"{namespace}:gw:evict"


class EvictionFeed:
    def __init__(
        self,
        auth: Authenticator,
        redis: aioredis.Redis,
        redis_url: str,
        amqp_url: str,
        namespace: str,
        exchange: str = "pm.events",
    ) -> None:
        self.auth = auth
        self.redis = redis
        # Its own connection without a read timeout: a quiet channel is not an error.
        self._subscriber = aioredis.from_url(redis_url, socket_connect_timeout=1.0)
        self._redis_lost = False
        self.amqp_url = amqp_url
        self.ns = namespace
        self.exchange = exchange
        self._connection: aio_pika.abc.AbstractRobustConnection | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.amqp_bound = asyncio.Event()

    # ------------------------------------------------------------ lifecycle

    async def start(self, wait_seconds: float = 10.0) -> None:
        self._tasks.append(asyncio.create_task(self._amqp_loop(), name="evictions-amqp"))
        self._tasks.append(asyncio.create_task(self._redis_loop(), name="evictions-redis"))
        # Serve only once revocations can reach us; a broker outage must not block start-up.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.amqp_bound.wait(), wait_seconds)
        if not self.amqp_bound.is_set():
            log.warning("eviction feed not bound yet; starting anyway (caches are TTL-bound)")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
        with contextlib.suppress(Exception):
            await self._subscriber.aclose()

    # ------------------------------------------------------------ feeds

    async def _amqp_loop(self) -> None:
        while True:
            try:
                self._connection = await aio_pika.connect_robust(
                    self.amqp_url,
                    client_properties={"connection_name": "gateway-evictions"},
                    reconnect_interval=AMQP_RECONNECT_SECONDS,
                )
                break
            except (OSError, aio_pika.exceptions.AMQPError) as exc:
                log.warning(
                    "eviction feed: broker unreachable", extra={"error": type(exc).__name__}
                )
                await asyncio.sleep(1.0)
        self._connection.reconnect_callbacks.add(self._on_reconnect)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(
            self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in BINDINGS:
            await queue.bind(exchange, routing_key=key)
        await queue.consume(self._on_message, no_ack=True)
        self.amqp_bound.set()
        await asyncio.Future()  # consume until cancelled

    def _on_reconnect(self, *_: Any) -> None:
        log.warning("eviction feed reconnected: clearing in-process caches")
        self.auth.clear_local()

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            event = parse_event(message.body)
        except ValueError:
            log.warning("eviction feed: unparseable event ignored")
            return
        await self.apply(event, source="amqp")

    async def apply(self, event: Envelope, source: str) -> None:
        data = event.payload()
        if isinstance(data, ApiKeyRevoked | ApiKeyRegenerated):
            self.auth.evict_local(data.key_id)
            await self.auth.evict_shared(data.key_id)
            EVICTIONS.labels(source, event.type).inc()
        elif isinstance(data, TenantPlanChanged):
            if not plan_change_allowed(event.source, data.new_plan):
                log.warning(
                    "plan change refused",
                    extra={"event_source": event.source, "plan": data.new_plan},
                )
                return
            await self.auth.set_plan(event.tenant_id, data.new_plan)
            EVICTIONS.labels(source, event.type).inc()

    async def announce_key(self, key_id: str) -> None:
        """This replica forwarded a successful revoke/regenerate: evict everywhere now."""
        self.auth.evict_local(key_id)
        await self.auth.evict_shared(key_id)
        try:
            await self.redis.publish(channel_name(self.ns), f"key:{key_id}")
        except RedisError as exc:
            self.auth.guard.failed("evictions", exc)

    async def _redis_loop(self) -> None:
        while True:
            pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel_name(self.ns))
                if self._redis_lost:
                    self._redis_lost = False
                    log.warning("eviction pub/sub resubscribed")
                async for message in pubsub.listen():
                    kind, _, value = message["data"].decode().partition(":")
                    if kind == "key" and value:
                        self.auth.evict_local(value)
                        EVICTIONS.labels("redis", "key").inc()
            except (RedisError, OSError) as exc:
                if not self._redis_lost:
                    self._redis_lost = True
                    log.warning("eviction pub/sub lost", extra={"error": type(exc).__name__})
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
