"""`Timestamp`: RFC 3339 with an offset, and every such value usable in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import TypeAdapter, ValidationError

from libs.common.timestamps import FIRST_INSTANT, LAST_INSTANT, Timestamp

TS: TypeAdapter[datetime] = TypeAdapter(Timestamp)


@pytest.mark.parametrize("bad", ["2026-01-05", "2026-01-05T09:00:00", "1700000000", 0, ""])
def test_what_the_spec_does_not_allow_is_refused(bad: object) -> None:
    with pytest.raises(ValidationError, match="RFC 3339"):
        TS.validate_python(bad)


def test_an_instant_keeps_its_offset() -> None:
    value = TS.validate_python("2026-01-05T09:00:00+02:00")
    assert value == datetime(2026, 1, 5, 7, tzinfo=UTC)
    assert value.utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        # Year 0 in UTC: the stateful fuzz sent this to webhook recovery and got a 500.
        ("0001-01-01T21:39:48.5941+22:22", FIRST_INSTANT),
        ("0001-01-01T00:00:00+00:01", FIRST_INSTANT),
        ("9999-12-31T23:00:00-05:00", LAST_INSTANT),
    ],
)
def test_an_instant_beyond_utc_years_1_to_9999_is_clamped(sent: str, expected: datetime) -> None:
    value = TS.validate_python(sent)
    assert value == expected
    assert value.astimezone(UTC) == expected  # usable wherever the code converts it


def test_the_edges_themselves_are_kept() -> None:
    assert TS.validate_python("0001-01-01T00:00:00Z") == FIRST_INSTANT
    east = TS.validate_python("0001-01-01T23:00:00+22:00")
    assert east.tzinfo == timezone(timedelta(hours=22))
    assert east.astimezone(UTC) == datetime(1, 1, 1, 1, tzinfo=UTC)
