"""Processes of the delivery service: `python -m services.delivery api|worker|relay|migrate`.

`worker` consumes `email.requested` and `email_batch.queued` and runs the sweeper (due
retries, delayed batches, claims of vanished workers); run as many as the providers allow.
"""

import asyncio
import contextlib
import logging
import sys

from libs.common.app import create_app
from libs.common.bus import EventBus
from libs.common.resources import Resources
from libs.common.runner import (
    Command,
    Process,
    migrate_command,
    relay_process,
    run_cli,
    run_process,
)
from services.delivery import consumers
from services.delivery.api import create_api
from services.delivery.service import DeliveryService
from services.delivery.settings import DeliverySettings

log = logging.getLogger(__name__)


async def api(settings: DeliverySettings) -> None:
    await run_process(settings, "api", create_api(settings))


async def worker(settings: DeliverySettings) -> None:
    resources = Resources(settings, schema="delivery", redis=True, vault=True, amqp=False)
    await resources.open()
    service = DeliveryService(settings, resources.pool, resources.redis, resources.vault)
    bus = EventBus(
        service="delivery",
        amqp_url=settings.amqp_url,
        pool=resources.pool,
        exchange=settings.events_exchange,
        retry_delays_ms=settings.retry_delays_ms,
        prefetch=settings.consumer_prefetch,
    )
    consumers.setup(bus, service)

    async def sweeper(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                while await service.sweep() and not stop.is_set():
                    pass
            except Exception:
                log.exception("sweep failed; next round continues")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.sweep_interval_seconds)

    async def body(stop: asyncio.Event) -> None:
        await bus.start()
        sweeping = asyncio.create_task(sweeper(stop))
        try:
            await stop.wait()
        finally:
            await bus.stop()
            await sweeping

    app = create_app(
        settings, process="worker", readiness={**resources.readiness(), "rabbitmq": bus.is_ready}
    )
    try:
        await run_process(settings, "worker", app, body)
    finally:
        await service.close()
        await resources.close()


PROCESSES: dict[str, Process] = {
    "api": api,
    "worker": worker,
    "relay": relay_process("delivery"),
}
COMMANDS: dict[str, Command] = {"migrate": migrate_command("delivery")}

if __name__ == "__main__":
    sys.exit(run_cli("delivery", DeliverySettings, PROCESSES, COMMANDS))
