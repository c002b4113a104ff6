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
)
from services.webhooks.api import create_api
from services.webhooks.settings import WebhooksSettings
from services.webhooks.worker import run_stream, run_worker


async def api(settings: WebhooksSettings) -> None:
    await run_process(settings, "api", create_api(settings))


PROCESSES: dict[str, Process] = {
    "api": api,
    "worker": run_worker,
    "stream": run_stream,
    "relay": relay_process("webhooks"),
}
COMMANDS: dict[str, Command] = {"migrate": migrate_command("webhooks")}

if __name__ == "__main__":
    sys.exit(run_cli("webhooks", WebhooksSettings, PROCESSES, COMMANDS))
