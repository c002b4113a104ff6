"""Sending windows of a campaign: days and hours in the campaign's timezone, local days for
the daily cap, and random spacing between sends. Pure functions of a clock value."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

DayName = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAY_NAMES: tuple[DayName, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Window:
    """Sends happen on `days` (0 = Monday) between `start_hour` and `end_hour` local time."""

    timezone: str = "UTC"
    days: tuple[int, ...] = tuple(range(7))
    start_hour: int = 0
    end_hour: int = 24

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> Window:
        if not raw:
            return cls()
        return cls(
            timezone=raw.get("timezone", "UTC"),
            days=tuple(DAY_NAMES.index(d) for d in raw.get("days", DAY_NAMES)),
            start_hour=int(raw.get("start_hour", 0)),
            end_hour=int(raw.get("end_hour", 24)),
        )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def is_open(self, now: datetime) -> bool:
        local = now.astimezone(self.zone)
        return local.weekday() in self.days and self.start_hour <= local.hour < self.end_hour

    def next_open(self, now: datetime) -> datetime:
        """`now` when the window is open, else the next moment it opens (UTC)."""
        if self.is_open(now):
            return now
        zone = self.zone
        local = now.astimezone(zone)
        for offset in range(8):
            day = local.date() + timedelta(days=offset)
            if day.weekday() not in self.days:
                continue
            opens = datetime.combine(day, time(self.start_hour), tzinfo=zone)
            if opens > local:
                return opens.astimezone(UTC)
        # Unreachable with at least one day configured; fail safe by trying again tomorrow.
        return now + timedelta(days=1)

    def local_day(self, now: datetime) -> date:
        return now.astimezone(self.zone).date()

    def next_local_day(self, now: datetime) -> datetime:
        """Local midnight after `now` (UTC): when a reached daily cap resets."""
        tomorrow = self.local_day(now) + timedelta(days=1)
        return datetime.combine(tomorrow, time(0), tzinfo=self.zone).astimezone(UTC)


def spacing_delay(min_seconds: int, max_seconds: int, rng: random.Random | None = None) -> float:
    """A random pause between two sends of one campaign (uniform in [min, max])."""
    if max_seconds <= 0:
        return 0.0
    return (rng or random).uniform(min_seconds, max_seconds)
