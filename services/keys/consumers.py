"""Event handlers of the keys service: a tenant's plan follows `tenant.plan_changed`."""

from __future__ import annotations

import logging

import asyncpg

from libs.common.bus import EventBus, PermanentError
from libs.common.events import Envelope, TenantPlanChanged
from libs.common.plans import plan_change_allowed
from libs.common.resources import Resources
from services.keys import repository as repo
from services.keys.schemas import PLANS

log = logging.getLogger(__name__)


async def apply_plan_change(
    data: TenantPlanChanged, event: Envelope, conn: asyncpg.Connection | None
) -> None:
    """Store the tenant's new plan (billing publishes the event; so does the admin command,
    whose own write this repeats harmlessly)."""
    assert conn is not None
    if data.new_plan not in PLANS:
        raise PermanentError(f"unknown plan {data.new_plan!r}")
    if not plan_change_allowed(event.source, data.new_plan):
        # Anyone who can publish to the exchange could otherwise grant themselves a plan.
        raise PermanentError(f"plan change to {data.new_plan!r} from {event.source!r} refused")
    if await repo.set_tenant_plan(conn, event.tenant_id, data.new_plan) is None:
        raise PermanentError(f"unknown tenant {event.tenant_id}")
    log.info("tenant plan changed", extra={"plan": data.new_plan, "event_tenant": event.tenant_id})


def setup(bus: EventBus, resources: Resources) -> None:
    bus.on("plans", TenantPlanChanged)(apply_plan_change)
