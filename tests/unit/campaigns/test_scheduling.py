"""Sending windows: days and hours in the campaign's timezone, local days, spacing."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime

from services.campaigns.scheduling import Window, spacing_delay

WEEKDAYS_9_TO_17_PARIS = Window.from_json(
    {
        "timezone": "Europe/Paris",
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "start_hour": 9,
        "end_hour": 17,
    }
)


def test_open_inside_local_hours_on_a_weekday() -> None:
    # Tuesday 2026-03-03 08:30 UTC = 09:30 in Paris (UTC+1).
    now = datetime(2026, 3, 3, 8, 30, tzinfo=UTC)
    assert WEEKDAYS_9_TO_17_PARIS.is_open(now)
    assert WEEKDAYS_9_TO_17_PARIS.next_open(now) == now


def test_before_hours_opens_the_same_local_morning() -> None:
    now = datetime(2026, 3, 3, 7, 0, tzinfo=UTC)  # 08:00 Paris
    assert not WEEKDAYS_9_TO_17_PARIS.is_open(now)
    assert WEEKDAYS_9_TO_17_PARIS.next_open(now) == datetime(2026, 3, 3, 8, 0, tzinfo=UTC)


def test_friday_evening_waits_for_monday() -> None:
    now = datetime(2026, 3, 6, 17, 0, tzinfo=UTC)  # Friday 18:00 Paris
    assert WEEKDAYS_9_TO_17_PARIS.next_open(now) == datetime(2026, 3, 9, 8, 0, tzinfo=UTC)


def test_daylight_saving_change_is_respected() -> None:
    # Monday 2026-03-30: Paris is UTC+2 after the switch, so 09:00 local is 07:00 UTC.
    now = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)  # Saturday
    assert WEEKDAYS_9_TO_17_PARIS.next_open(now) == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)


def test_local_day_and_next_local_day_follow_the_timezone() -> None:
    tokyo = Window(timezone="Asia/Tokyo")
    now = datetime(2026, 1, 1, 20, 0, tzinfo=UTC)  # already Jan 2 in Tokyo
    assert tokyo.local_day(now) == date(2026, 1, 2)
    assert tokyo.next_local_day(now) == datetime(2026, 1, 2, 15, 0, tzinfo=UTC)


def test_no_schedule_is_always_open() -> None:
    assert Window.from_json(None).is_open(datetime(2026, 1, 4, 3, 0, tzinfo=UTC))


def test_spacing_is_uniform_within_bounds() -> None:
    rng = random.Random(7)
    delays = [spacing_delay(30, 90, rng) for _ in range(1000)]
    assert min(delays) >= 30 and max(delays) <= 90
    assert len({round(d) for d in delays}) > 30  # really random, not a constant
    assert spacing_delay(0, 0) == 0.0
