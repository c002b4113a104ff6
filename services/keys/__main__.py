"""Processes of the keys service: `python -m services.keys api|relay|migrate`."""

import sys

from libs.common.runner import (
    Command,
    Process,
    migrate_command,
    relay_process,
    run_cli,
    run_process,
)
from services.keys.api import create_api
from services.keys.settings import KeysSettings


async def api(settings: KeysSettings) -> None:
    await run_process(settings, "api", create_api(settings))


PROCESSES: dict[str, Process] = {"api": api, "relay": relay_process("keys")}
COMMANDS: dict[str, Command] = {"migrate": migrate_command("keys")}

if __name__ == "__main__":
    sys.exit(run_cli("keys", KeysSettings, PROCESSES, COMMANDS))
