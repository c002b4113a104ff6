"""Processes of the gateway service: `python -m services.gateway api`."""

import sys

from libs.common.runner import Command, Process, run_cli, run_process
from services.gateway.api import create_api
from services.gateway.settings import GatewaySettings


async def api(settings: GatewaySettings) -> None:
    await run_process(settings, "api", create_api(settings))


PROCESSES: dict[str, Process] = {"api": api}
COMMANDS: dict[str, Command] = {}

if __name__ == "__main__":
    sys.exit(run_cli("gateway", GatewaySettings, PROCESSES, COMMANDS))
