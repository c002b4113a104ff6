"""The plan catalog and the rule that turns a tenant's Stripe subscriptions into its plan.

Plans are fixed (starter, pro, enterprise: the gateway's rate-limit tiers); the Stripe price
of each is configuration (`PM_STRIPE_PRICES`). Stripe is the source of truth for which
price a subscription is on and in what status; this module only maps that to a plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

PlanId = Literal["starter", "pro", "enterprise"]


@dataclass(frozen=True)
class Plan:
    id: str
    name: str
    monthly_amount: int  # smallest currency unit, as Stripe counts
    currency: str
    requests_per_minute: int  # the gateway's limit for the plan (seed 002)


PLANS: dict[str, Plan] = {
    "starter": Plan("starter", "Starter", 2900, "usd", 60),
    "pro": Plan("pro", "Pro", 9900, "usd", 300),
    "enterprise": Plan("enterprise", "Enterprise", 29900, "usd", 1000),
}

# Statuses in which the customer keeps the paid plan. `past_due` keeps it while Stripe's
# retries of a failed payment run; Stripe then moves the subscription to `canceled` or
# `unpaid` (per the account's dunning settings), and the plan falls back to the default.
GOOD_STANDING = frozenset({"active", "trialing", "past_due"})


@dataclass(frozen=True)
class SubscriptionState:
    id: str
    plan_id: str | None
    status: str
    created: datetime


def plan_for_price(prices: Mapping[str, str], price_id: str | None) -> str | None:
    """The plan whose configured Stripe price is `price_id`; None for a price we do not sell."""
    for plan_id, configured in prices.items():
        if price_id is not None and configured == price_id:
            return plan_id
    return None


def effective_plan(
    subscriptions: Iterable[SubscriptionState], default_plan: str
) -> tuple[str, str | None]:
    """(plan, subscription id) of a tenant: its newest subscription in good standing on a
    known plan, else the default plan and no subscription."""
    standing = [s for s in subscriptions if s.status in GOOD_STANDING and s.plan_id in PLANS]
    if not standing:
        return default_plan, None
    newest = max(standing, key=lambda s: (s.created, s.id))
    assert newest.plan_id is not None
    return newest.plan_id, newest.id
