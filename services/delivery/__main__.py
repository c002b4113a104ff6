"""Processes of the delivery service: `python -m services.delivery api|relay|migrate`."""

import sys

from libs.common.runner import (
    Command,
    Process,
    migrate_command,
    relay_process,
    run_cli,
    run_process,
)
from services.delivery.api import create_api
from services.delivery.settings import DeliverySettings


async def api(settings: DeliverySettings) -> None:
    await run_process(settings, "api", create_api(settings))


PROCESSES: dict[str, Process] = {"api": api, "relay": relay_process("delivery")}
COMMANDS: dict[str, Command] = {"migrate": migrate_command("delivery")}

if __name__ == "__main__":
    sys.exit(run_cli("delivery", DeliverySettings, PROCESSES, COMMANDS))
