"""Processes of the billing service: `python -m services.billing api|relay|migrate`."""

import sys

from libs.common.runner import (
    Command,
    Process,
    migrate_command,
    relay_process,
    run_cli,
    run_process,
)
from services.billing.api import create_api
from services.billing.settings import BillingSettings


async def api(settings: BillingSettings) -> None:
    await run_process(settings, "api", create_api(settings))


PROCESSES: dict[str, Process] = {"api": api, "relay": relay_process("billing")}
COMMANDS: dict[str, Command] = {"migrate": migrate_command("billing")}

if __name__ == "__main__":
    sys.exit(run_cli("billing", BillingSettings, PROCESSES, COMMANDS))
