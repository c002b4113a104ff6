"""Opaque keyset cursors for `cursor` / `next_cursor` pagination, and their error code.

A cursor is the URL-safe base64 of a small JSON object: the sort it belongs to and the last
row's sort value and id. It is not signed: every list query is tenant-scoped, so a forged
cursor can only move within the caller's own rows; a malformed one, or one from a list
with another sort, is a 400 `invalid_cursor`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from libs.common.http import BadRequest, ErrorDetail, register_error_code

register_error_code("invalid_cursor", 400, "The pagination cursor is malformed or expired.")


@dataclass(frozen=True)
class Keyset:
    """Where the next page starts: after (`value`, `row_id`) in the list's sort order."""

    value: Any
    row_id: str


def encode_cursor(value: Any, row_id: object, *, sort: str = "created_at") -> str:
    if isinstance(value, datetime):
        value = value.isoformat()
    raw = orjson.dumps({"s": sort, "v": value, "i": str(row_id)})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, sort: str = "created_at", datetime_value: bool = True) -> Keyset:
    """The keyset `cursor` points at; raises 400 `invalid_cursor` when it cannot be used."""
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(data, dict) or not isinstance(data.get("i"), str):
            raise ValueError("not a cursor")
    except (ValueError, TypeError) as exc:
        raise _invalid("The cursor is not valid.") from exc
    if data.get("s") != sort:
        raise _invalid("The cursor belongs to a list with another sort order.")
    value = data.get("v")
    if datetime_value:
        try:
            value = datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise _invalid("The cursor is not valid.") from exc
    return Keyset(value=value, row_id=data["i"])


def decode_keyset(cursor: str) -> tuple[datetime, str]:
    """The (created_at, id) position of a cursor from a list sorted by creation time."""
    keyset = decode_cursor(cursor)
    return keyset.value, keyset.row_id


def _invalid(message: str) -> BadRequest:
    return BadRequest(
        message,
        code="invalid_cursor",
        details=[ErrorDetail(field="query.cursor", message=message)],
    )
