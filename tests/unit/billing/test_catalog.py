"""The plan rule: which subscription decides a tenant's plan, and price → plan mapping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.billing.catalog import PLANS, SubscriptionState, effective_plan, plan_for_price

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PRICES = {"starter": "price_s", "pro": "price_p", "enterprise": "price_e"}


def sub(id_: str, plan: str | None, status: str, minutes: int = 0) -> SubscriptionState:
    return SubscriptionState(id_, plan, status, T0 + timedelta(minutes=minutes))


def test_no_subscription_means_the_default_plan() -> None:
    assert effective_plan([], "starter") == ("starter", None)


def test_good_standing_statuses_keep_the_plan() -> None:
    for status in ("active", "trialing", "past_due"):
        assert effective_plan([sub("s1", "pro", status)], "starter") == ("pro", "s1")


def test_ended_or_unpaid_subscriptions_fall_back_to_default() -> None:
    for status in ("canceled", "unpaid", "incomplete", "incomplete_expired", "paused"):
        assert effective_plan([sub("s1", "enterprise", status)], "starter") == ("starter", None)


def test_newest_subscription_in_good_standing_wins() -> None:
    subs = [
        sub("old", "enterprise", "active", 0),
        sub("new", "pro", "active", 10),
        sub("newest", "enterprise", "canceled", 20),
    ]
    assert effective_plan(subs, "starter") == ("pro", "new")


def test_unknown_plan_is_ignored() -> None:
    assert effective_plan([sub("s1", None, "active")], "starter") == ("starter", None)


def test_price_mapping() -> None:
    assert plan_for_price(PRICES, "price_p") == "pro"
    assert plan_for_price(PRICES, "price_unknown") is None
    assert plan_for_price(PRICES, None) is None
    assert set(PLANS) == {"starter", "pro", "enterprise"}
    assert [PLANS[p].requests_per_minute for p in ("starter", "pro", "enterprise")] == [
        60,
        300,
        1000,
    ]
