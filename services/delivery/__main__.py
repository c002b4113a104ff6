"""Processes of the delivery service:
`python -m services.delivery api|worker|express|relay|migrate`.

`worker` consumes `email.requested` and the private `SendBatch` commands (every send, delayed
chunks and retries included: the bulk lane) and runs the sweeper (claims of vanished workers,
a backstop for overdue messages) and the sending-domain checker; run as many as the providers
allow. `express` sends the express lane (`services/delivery/express.py`: small sends from
tenants with a small backlog, woken by NOTIFY), apart from every bulk batch.
"""

import logging
import sys

from libs.common.app import create_app
from libs.common.resources import Resources
from libs.common.runner import (
    Command,
    Process,
    migrate_command,
    periodic,
    relay_process,
    run_cli,
    run_process,
    serve_bus,
)
from services.delivery import consumers
from services.delivery.api import create_api
from services.delivery.express import ExpressLane
from services.delivery.service import DeliveryService
from services.delivery.settings import DeliverySettings

log = logging.getLogger(__name__)


async def api(settings: DeliverySettings) -> None:
    await run_process(settings, "api", create_api(settings))


async def worker(settings: DeliverySettings) -> None:
    resources = Resources(settings, schema="delivery", redis=True, vault=True, amqp=False)
    await resources.open()
    service = DeliveryService(settings, resources.pool, resources.redis, resources.vault)

    async def sweep() -> None:
        while await service.sweep():
            pass

    async def check_domains() -> None:
        # Re-verify due sending domains (daily for verified ones, spread over the day).
        while await service.domains.check_due():
            pass

    try:
        await serve_bus(
            settings,
            resources,
            lambda bus: consumers.setup(bus, service),
            background=[
                periodic("sweep", sweep, lambda: settings.sweep_interval_seconds),
                periodic(
                    "domain-checks",
                    check_domains,
                    lambda: settings.domain_checker_interval_seconds,
                ),
            ],
        )
    finally:
        await service.close()
        await resources.close()


async def express(settings: DeliverySettings) -> None:
    resources = Resources(settings, schema="delivery", redis=True, vault=True, amqp=False)
    await resources.open()
    service = DeliveryService(settings, resources.pool, resources.redis, resources.vault)
    lane = ExpressLane(service, listen_dsn=settings.database_direct_url)
    app = create_app(settings, process="express", readiness=resources.readiness())
    try:
        await run_process(settings, "express", app, lane.run)
    finally:
        await service.close()
        await resources.close()


PROCESSES: dict[str, Process] = {
    "api": api,
    "worker": worker,
    "express": express,
    "relay": relay_process("delivery"),
}
COMMANDS: dict[str, Command] = {"migrate": migrate_command("delivery")}

if __name__ == "__main__":
    sys.exit(run_cli("delivery", DeliverySettings, PROCESSES, COMMANDS))
