"""Processes of the billing service:
`python -m services.billing api|relay|worker|reconciler|migrate|reconcile-once`.

- `api`: the billing API and `POST /hooks/stripe` (verify, store once, outbox).
- `relay`: publishes billing's outbox (`stripe_event.received`, `tenant.plan_changed`).
- `worker`: applies Stripe events (queue `billing.stripe`); any number of replicas.
- `reconciler`: every `PM_RECONCILE_INTERVAL_SECONDS`, lists Stripe events since its cursor
  and every subscription, applies what was missed and records the drift. One replica is
  enough; an advisory lock keeps concurrent runs apart anyway.
- `reconcile-once [live|test]`: one run, printed as JSON (operations, tests).
"""

import asyncio
import json
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
from services.billing import consumers
from services.billing.api import create_api
from services.billing.service import BillingService
from services.billing.settings import BillingSettings, Mode
from services.billing.stripe_api import StripeApi

log = logging.getLogger(__name__)
MODES: tuple[Mode, ...] = ("live", "test")


async def api(settings: BillingSettings) -> None:
    await run_process(settings, "api", create_api(settings))


async def worker(settings: BillingSettings) -> None:
    resources = Resources(settings, schema="billing", amqp=False)
    await resources.open()
    stripe_api = StripeApi(settings)
    service = BillingService(settings, resources.pool, stripe_api)
    try:
        await serve_bus(settings, resources, lambda bus: consumers.setup(bus, service))
    finally:
        await stripe_api.close()
        await resources.close()


async def reconciler(settings: BillingSettings) -> None:
    resources = Resources(settings, schema="billing", amqp=False)
    await resources.open()
    stripe_api = StripeApi(settings)
    service = BillingService(settings, resources.pool, stripe_api)

    async def reconcile() -> None:
        for mode in MODES:
            try:
                await service.reconcile(mode)
            except Exception:
                # Recorded on the run's row; the next round starts from the same cursor.
                log.exception("reconciliation failed", extra={"mode": mode})

    app = create_app(settings, process="reconciler", readiness=resources.readiness())
    body = periodic("reconcile", reconcile, lambda: settings.reconcile_interval_seconds)
    try:
        await run_process(settings, "reconciler", app, body)
    finally:
        await stripe_api.close()
        await resources.close()


def reconcile_once(settings: BillingSettings, args: list[str]) -> int:
    modes = [m for m in MODES if not args or m in args]

    async def run() -> list[dict[str, object]]:
        resources = Resources(settings, schema="billing", amqp=False)
        await resources.open()
        stripe_api = StripeApi(settings)
        try:
            service = BillingService(settings, resources.pool, stripe_api)
            reports = [await service.reconcile(mode) for mode in modes]
            return [r.as_dict() for r in reports if r is not None]
        finally:
            await stripe_api.close()
            await resources.close()

    print(json.dumps(asyncio.run(run()), default=str))
    return 0


PROCESSES: dict[str, Process] = {
    "api": api,
    "relay": relay_process("billing"),
    "worker": worker,
    "reconciler": reconciler,
}
COMMANDS: dict[str, Command] = {
    "migrate": migrate_command("billing"),
    "reconcile-once": reconcile_once,
}

if __name__ == "__main__":
    sys.exit(run_cli("billing", BillingSettings, PROCESSES, COMMANDS))
