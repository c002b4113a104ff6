"""A message's timeline: its `message_events` rows and the `sent` entry read from its row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from services.delivery.service import _timeline

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _event(status: str, seconds: float, **detail: Any) -> dict[str, Any]:
    return {
        "status": status,
        "provider": "mailgun",
        "provider_message_id": None,
        "detail": detail,
        "occurred_at": T0 + timedelta(seconds=seconds),
    }


def _row(sent_at: datetime | None) -> dict[str, Any]:
    return {"sent_at": sent_at, "provider": "mailgun", "provider_message_id": "mg-1"}


def test_the_sent_entry_comes_from_the_row_in_time_order() -> None:
    events = [_event("delivered", 0), _event("opened", 5), _event("clicked", 9, url="u")]
    timeline = _timeline(_row(T0), events)
    assert [e["status"] for e in timeline] == ["sent", "delivered", "opened", "clicked"]
    assert timeline[0] == {
        "status": "sent",
        "occurred_at": T0,
        "provider": "mailgun",
        "provider_message_id": "mg-1",
        "details": {},
    }
    assert timeline[3]["details"] == {"url": "u"}


def test_entries_before_the_send_stay_before_it() -> None:
    events = [_event("bounced", -1), _event("delivered", 1)]
    assert [e["status"] for e in _timeline(_row(T0), events)] == ["bounced", "sent", "delivered"]


def test_a_message_sent_before_sent_at_keeps_its_sent_row() -> None:
    events = [_event("sent", 0), _event("delivered", 1)]
    assert [e["status"] for e in _timeline(_row(None), events)] == ["sent", "delivered"]


def test_an_unsent_message_has_no_sent_entry() -> None:
    assert _timeline(_row(None), [_event("failed", 0, reason="x")])[0]["status"] == "failed"
