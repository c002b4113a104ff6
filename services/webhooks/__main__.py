"""Processes of the webhooks service:
`python -m services.webhooks api|worker|stream|relay|migrate`."""

import sys

from libs.common.runner import (
    Command,
    Process,
    migrate_command,
    relay_process,
    run_cli,
    run_process,
    worker_process,
)
from services.webhooks.api import create_api
from services.webhooks.consumers import setup_stream
from services.webhooks.settings import WebhooksSettings
from services.webhooks.worker import run_worker


async def api(settings: WebhooksSettings) -> None:
    await run_process(settings, "api", create_api(settings))


PROCESSES: dict[str, Process] = {
    "api": api,
    "worker": run_worker,
    # The event stream's consumer in a process of its own: its latency does not depend on how
    # busy webhook fan-out is (docs/webhooks.md "Event stream"). Postgres and RabbitMQ only.
    "stream": worker_process(setup_stream, schema="webhooks", process="stream"),
    "relay": relay_process("webhooks"),
}
COMMANDS: dict[str, Command] = {"migrate": migrate_command("webhooks")}

if __name__ == "__main__":
    sys.exit(run_cli("webhooks", WebhooksSettings, PROCESSES, COMMANDS))
