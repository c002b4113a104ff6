"""Processes of the campaigns service: `python -m services.campaigns api|relay|migrate`."""

import sys

from libs.common.runner import (
    Command,
    Process,
    migrate_command,
    relay_process,
    run_cli,
    run_process,
)
from services.campaigns.api import create_api
from services.campaigns.settings import CampaignsSettings


async def api(settings: CampaignsSettings) -> None:
    await run_process(settings, "api", create_api(settings))


PROCESSES: dict[str, Process] = {"api": api, "relay": relay_process("campaigns")}
COMMANDS: dict[str, Command] = {"migrate": migrate_command("campaigns")}

if __name__ == "__main__":
    sys.exit(run_cli("campaigns", CampaignsSettings, PROCESSES, COMMANDS))
