"""Processes of the campaigns service: `python -m services.campaigns
api|relay|worker|runner|migrate`.

- api: the HTTP API (contacts, templates, campaigns, analytics);
- relay: publishes the campaigns outbox to `pm.events`;
- worker: consumes delivery's `email.*` facts (analytics read model, replies, suppressions);
- runner: turns due campaign recipient steps into `email.requested` events.
"""

import sys

from libs.common.app import create_app
from libs.common.resources import Resources
from libs.common.runner import (
    Command,
    Process,
    migrate_command,
    relay_process,
    run_cli,
    run_process,
    worker_process,
)
from services.campaigns.api import create_api
from services.campaigns.consumers import setup
from services.campaigns.runner import CampaignRunner
from services.campaigns.settings import CampaignsSettings


async def api(settings: CampaignsSettings) -> None:
    await run_process(settings, "api", create_api(settings))


async def runner(settings: CampaignsSettings) -> None:
    resources = Resources(settings, schema="campaigns", amqp=False)
    await resources.open()
    campaign_runner = CampaignRunner(
        resources.pool,
        batch_size=settings.runner_batch_size,
        idle_seconds=settings.runner_idle_seconds,
    )
    app = create_app(settings, process="runner", readiness=resources.readiness())
    try:
        await run_process(settings, "runner", app, campaign_runner.run)
    finally:
        await resources.close()


PROCESSES: dict[str, Process] = {
    "api": api,
    "relay": relay_process("campaigns"),
    "worker": worker_process(setup, schema="campaigns"),
    "runner": runner,
}
COMMANDS: dict[str, Command] = {"migrate": migrate_command("campaigns")}

if __name__ == "__main__":
    sys.exit(run_cli("campaigns", CampaignsSettings, PROCESSES, COMMANDS))
