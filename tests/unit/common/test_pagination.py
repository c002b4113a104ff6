"""Keyset cursors round-trip, and unusable ones are a 400 `invalid_cursor`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from libs.common.http import ApiError
from libs.common.pagination import decode_cursor, encode_cursor


def test_round_trip_datetime_and_plain_values() -> None:
    at = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    ks = decode_cursor(encode_cursor(at, "row-1"))
    assert (ks.value, ks.row_id) == (at, "row-1")
    ks = decode_cursor(encode_cursor("b@x.io", 7, sort="email"), sort="email", datetime_value=False)
    assert (ks.value, ks.row_id) == ("b@x.io", "7")


@pytest.mark.parametrize("cursor", ["", "!!!", "bm90IGpzb24", "e30", "WzEsMl0"])
def test_malformed_cursor_is_invalid_cursor(cursor: str) -> None:
    with pytest.raises(ApiError) as err:
        decode_cursor(cursor)
    assert (err.value.status_code, err.value.code) == (400, "invalid_cursor")


def test_cursor_of_another_sort_is_refused() -> None:
    cursor = encode_cursor("a@x.io", "1", sort="email")
    with pytest.raises(ApiError, match="another sort order"):
        decode_cursor(cursor, sort="created_at")
