"""The `worker` process: event fan-out consumer, attempt consumer, sweeper, outcome writer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from libs.common.app import create_app
from libs.common.bus import EventBus
from libs.common.resources import Resources
from libs.common.runner import bus_for, run_process
from services.webhooks.address_guard import parse_networks
from services.webhooks.attempt_queue import AttemptQueue
from services.webhooks.consumers import setup
from services.webhooks.dispatcher import Dispatcher
from services.webhooks.secret_store import SecretStore
from services.webhooks.service import AttemptContext
from services.webhooks.settings import WebhooksSettings
from services.webhooks.transport import WebhookTransport


@dataclass
class Engine:
    """The worker's delivery engine: fan-out consumer, attempt consumer, sweeper and outcome
    writer over one transport (also what the integration tests run in-process)."""

    settings: WebhooksSettings
    transport: WebhookTransport
    queue: AttemptQueue
    dispatcher: Dispatcher
    bus: EventBus

    @classmethod
    def build(cls, settings: WebhooksSettings, resources: Resources) -> Engine:
        transport = WebhookTransport(
            timeout=settings.webhooks_attempt_timeout_seconds,
            body_limit=settings.webhooks_response_body_limit,
            max_connections=settings.webhooks_max_in_flight,
        )
        ctx = AttemptContext(
            settings,
            SecretStore(resources.vault),
            transport,
            parse_networks(settings.webhooks_allowed_networks),
        )
        queue = AttemptQueue(settings.amqp_url, prefetch=settings.webhooks_attempt_prefetch)
        dispatcher = Dispatcher(settings, resources.pool, ctx, queue)
        bus = bus_for(settings, resources)
        setup(bus, dispatcher)
        return cls(settings, transport, queue, dispatcher, bus)

    async def start(self) -> None:
        await self.queue.connect()
        await self.dispatcher.start()
        await self.bus.start()

    async def stop(self, drain_seconds: float | None = None) -> None:
        """Stop consuming, let attempts in flight finish and commit, close the transport."""
        await self.bus.stop()
        await self.dispatcher.stop(drain_seconds)
        await self.queue.close()
        await self.transport.close()


async def run_worker(settings: WebhooksSettings) -> None:
    resources = Resources(settings, schema="webhooks", vault=True, amqp=False)
    await resources.open()
    engine = Engine.build(settings, resources)

    async def attempts_ready() -> bool:
        return engine.queue.is_ready()

    async def body(stop: asyncio.Event) -> None:
        await engine.start()
        try:
            await stop.wait()
        finally:
            await engine.stop()

    app = create_app(
        settings,
        process="worker",
        readiness={
            **resources.readiness(),
            "rabbitmq": engine.bus.is_ready,
            "attempts": attempts_ready,
        },
    )
    try:
        await run_process(settings, "worker", app, body)
    finally:
        await resources.close()
