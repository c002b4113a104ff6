"""Processes of the inbox service: `python -m services.inbox api|relay|worker|smtp|migrate`.

- `api`: the inbox API (`/api/v1/inbox/*`) and the ESP inbound hooks
  (`/hooks/esp/{provider}/inbound`).
- `relay`: publishes the inbox's outbox (`inbox_message.received`, `email.replied`,
  `email.auto_replied`, `inbox_feedback.received`, `email.requested` for replies).
- `worker`: the sent-message read model (queue `inbox.sent`) and the sweep of raw MIME past
  its retention.
- `smtp`: the inbound SMTP listener for self-hosted MX (aiosmtpd).
"""

import sys

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
from services.inbox import consumers
from services.inbox.api import create_api
from services.inbox.service import InboxService
from services.inbox.settings import InboxSettings
from services.inbox.smtp import run_smtp


async def api(settings: InboxSettings) -> None:
    await run_process(settings, "api", create_api(settings))


async def worker(settings: InboxSettings) -> None:
    resources = Resources(settings, schema="inbox", amqp=False)
    await resources.open()
    service = InboxService(settings, resources.pool, None)
    sweep = periodic("raw-sweep", service.sweep_raw, lambda: settings.raw_sweep_interval_seconds)
    try:
        await serve_bus(
            settings, resources, lambda bus: consumers.setup(bus, service), background=[sweep]
        )
    finally:
        await service.close()
        await resources.close()


PROCESSES: dict[str, Process] = {
    "api": api,
    "relay": relay_process("inbox"),
    "worker": worker,
    "smtp": run_smtp,
}
COMMANDS: dict[str, Command] = {"migrate": migrate_command("inbox")}

if __name__ == "__main__":
    sys.exit(run_cli("inbox", InboxSettings, PROCESSES, COMMANDS))
