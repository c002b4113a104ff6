"""How a Stripe invoice becomes a payment row, and the payments cursor."""

from __future__ import annotations

from datetime import UTC, datetime

from services.billing.service import _payment_row

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def invoice(**over: object) -> dict[str, object]:
    base: dict[str, object] = {
        "id": "in_1",
        "customer": "cus_1",
        "status": "paid",
        "attempted": True,
        "amount_due": 9900,
        "amount_paid": 9900,
        "amount_remaining": 0,
        "currency": "usd",
        "created": 1_700_000_000,
        "status_transitions": {"paid_at": 1_700_000_100},
        "parent": {"subscription_details": {"subscription": "sub_1"}},
    }
    base.update(over)
    return base


def test_paid_invoice() -> None:
    row = _payment_row("t1", "live", invoice(), NOW)
    assert row["status"] == "paid" and row["stripe_subscription_id"] == "sub_1"
    assert row["paid_at"] == datetime.fromtimestamp(1_700_000_100, UTC)


def test_open_invoice_after_a_failed_attempt_is_failed() -> None:
    row = _payment_row(
        "t1", "live", invoice(status="open", amount_paid=0, amount_remaining=9900), NOW
    )
    assert row["status"] == "failed" and row["invoice_status"] == "open"


def test_older_api_versions_name_the_subscription_on_the_invoice() -> None:
    row = _payment_row("t1", "live", invoice(parent=None, subscription="sub_old"), NOW)
    assert row["stripe_subscription_id"] == "sub_old"
