"""The one plan table: what each tenant plan allows (docs/rate-limits.md shows the same).

Read by the gateway (request limits per key and per tenant), the keys service (API key cap,
valid plan names) and delivery (daily sends). Plans a customer can hold: free, starter, pro,
enterprise (billing sells the paid three). `unlimited` is internal: only the admin command
`python -m services.keys set-plan TENANT unlimited` sets it, for benchmarks, load tests and
platform-owned tenants; plan changes from billing or the public API never can.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "CUSTOMER_PLANS",
    "DEFAULT_PLAN",
    "INTERNAL_PLANS",
    "PLANS",
    "PLAN_CHANGE_SOURCES",
    "PLAN_NAMES",
    "PlanLimits",
    "PlanName",
    "limits_for",
    "plan_change_allowed",
]

PlanName = Literal["free", "starter", "pro", "enterprise", "unlimited"]


@dataclass(frozen=True)
class PlanLimits:
    # Requests through the gateway: per API key (or dashboard user) and, the same numbers,
    # per tenant across all its keys: more keys never buy more throughput.
    per_minute: int
    per_hour: int
    # Active (not revoked) API keys a tenant may hold; None: no cap.
    key_cap: int | None = None
    # Emails accepted for sending per tenant per UTC day; None: no quota.
    daily_sends: int | None = None


PLANS: dict[str, PlanLimits] = {
    # Seed 004's Free tier: 1,000 requests/hour; 20/minute.
    "free": PlanLimits(20, 1_000, key_cap=2, daily_sends=100),
    "starter": PlanLimits(60, 10_000, key_cap=10, daily_sends=10_000),
    "pro": PlanLimits(300, 100_000, key_cap=50, daily_sends=100_000),
    "enterprise": PlanLimits(1_000, 1_000_000, key_cap=500, daily_sends=1_000_000),
    # Internal (admin command only): benches and platform tenants.
    "unlimited": PlanLimits(1_000_000, 1_000_000_000, key_cap=None, daily_sends=None),
}
PLAN_NAMES: tuple[str, ...] = get_args(PlanName)
INTERNAL_PLANS: frozenset[str] = frozenset({"unlimited"})
CUSTOMER_PLANS: tuple[str, ...] = tuple(p for p in PLAN_NAMES if p not in INTERNAL_PLANS)
DEFAULT_PLAN = "starter"


def limits_for(plan: str) -> PlanLimits:
    """The limits of `plan`; an unknown name gets the default plan's (never more)."""
    return PLANS.get(plan, PLANS[DEFAULT_PLAN])


# Producers whose `tenant.plan_changed` consumers act on (CloudEvents `source`): billing
# (after Stripe) and keys (the admin command). Only keys may grant an internal plan.
PLAN_CHANGE_SOURCES: frozenset[str] = frozenset({"/services/billing", "/services/keys"})


def plan_change_allowed(source: str, plan: str) -> bool:
    """Whether a `tenant.plan_changed` from `source` to `plan` may be applied."""
    if source not in PLAN_CHANGE_SOURCES or plan not in PLANS:
        return False
    return plan not in INTERNAL_PLANS or source == "/services/keys"
