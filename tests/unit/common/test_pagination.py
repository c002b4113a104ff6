"""Keyset cursors round-trip, are opaque and sealed, and unusable ones are a 400
`invalid_cursor`; `ListParams.page` makes the one page shape of every list."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from libs.common import pagination
from libs.common.http import ApiError
from libs.common.pagination import ListParams, decode_cursor, encode_cursor


@pytest.fixture(autouse=True)
def _key() -> None:
    pagination.configure_cursors("unit-test-cursor-secret")


def test_round_trip_datetime_and_plain_values() -> None:
    at = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    ks = decode_cursor(encode_cursor(at, "row-1"))
    assert (ks.value, ks.row_id) == (at, "row-1")
    ks = decode_cursor(encode_cursor("b@x.io", 7, sort="email"), sort="email", datetime_value=False)
    assert (ks.value, ks.row_id) == ("b@x.io", "7")


def test_cursor_never_shows_its_values() -> None:
    cursor = encode_cursor("ada.lovelace@example.com", "contact-1", sort="email")
    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    for secret in (b"ada", b"lovelace", b"example", b"contact-1", b"email"):
        assert secret not in raw
        assert secret.decode() not in cursor


@pytest.mark.parametrize(
    "cursor",
    ["", "!!!", "bm90IGpzb24", "e30", "WzEsMl0", "é€😀", "a" * 40, "\x00\x01", "%%", "=="],
)
def test_malformed_cursor_is_invalid_cursor(cursor: str) -> None:
    with pytest.raises(ApiError) as err:
        decode_cursor(cursor)
    assert (err.value.status_code, err.value.code) == (400, "invalid_cursor")
    assert err.value.details[0].field == "query.cursor"


def test_tampered_cursor_is_refused() -> None:
    cursor = encode_cursor(datetime(2026, 1, 1, tzinfo=UTC), "row-1")
    raw = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    for i in (0, len(raw) // 2, len(raw) - 1):
        changed = bytearray(raw)
        changed[i] ^= 0x01
        forged = base64.urlsafe_b64encode(bytes(changed)).decode().rstrip("=")
        with pytest.raises(ApiError) as err:
            decode_cursor(forged)
        assert err.value.code == "invalid_cursor"


def test_cursor_sealed_with_another_key_is_refused() -> None:
    cursor = encode_cursor(datetime(2026, 1, 1, tzinfo=UTC), "row-1")
    pagination.configure_cursors("another-deployment")
    with pytest.raises(ApiError) as err:
        decode_cursor(cursor)
    assert err.value.code == "invalid_cursor"


def test_cursor_of_another_sort_is_refused() -> None:
    cursor = encode_cursor("a@x.io", "1", sort="email")
    with pytest.raises(ApiError, match="another sort order"):
        decode_cursor(cursor, sort="created_at")


def test_cursor_with_a_value_of_the_wrong_type_is_refused() -> None:
    cursor = encode_cursor("not-a-time", "1", sort="created_at")
    with pytest.raises(ApiError) as err:
        decode_cursor(cursor, sort="created_at", datetime_value=True)
    assert err.value.code == "invalid_cursor"


def test_page_has_more_and_next_cursor_from_the_extra_row() -> None:
    rows = [{"id": f"r{i}", "created_at": datetime(2026, 1, 10 - i, tzinfo=UTC)} for i in range(3)]
    params = ListParams(limit=2, sort_by="created_at", order="desc")
    page = params.page(rows, lambda r: r["id"])
    assert page.items == ["r0", "r1"]
    assert page.pagination.has_more is True and page.pagination.offset == 0
    assert page.pagination.next_cursor is not None
    follow = ListParams(limit=2, cursor=page.pagination.next_cursor)
    after = follow.after()
    assert after is not None and (after.value, after.row_id) == (rows[1]["created_at"], "r1")
    last = ListParams(limit=5).page(rows, lambda r: r["id"])
    assert last.pagination.has_more is False and last.pagination.next_cursor is None


def test_cursor_from_another_order_is_refused() -> None:
    rows = [{"id": "a", "created_at": datetime(2026, 1, 1, tzinfo=UTC)}] * 2
    cursor = ListParams(limit=1, order="asc").page(rows, dict).pagination.next_cursor
    assert cursor is not None
    with pytest.raises(ApiError) as err:
        ListParams(limit=1, order="desc", cursor=cursor).after()
    assert err.value.code == "invalid_cursor"
