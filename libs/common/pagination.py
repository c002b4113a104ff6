"""Lists: one page shape (`Page[T]`), sealed keyset cursors, and the query parameters every
list shares (`limit`, `offset`, `cursor`, `sort_by`, `order`; unknown ones refused).

A cursor is AES-GCM-encrypted JSON (the list's sort and the last row's sort value and id),
URL-safe base64: opaque to callers (an email address sort value is never readable), and
sealed (a changed byte fails authentication). The key is derived from `PM_CURSOR_KEY`, or
from the principal signing key every service already reads from Vault, so a cursor made by
one replica is read by any other. Anything that does not open, or opens for another sort, is
a 400 `invalid_cursor`.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency's annotations.

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, TypeVar
from uuid import UUID

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fastapi import Query, Request
from fastapi.routing import APIRoute

from libs.common.http import (
    BadRequest,
    ErrorDetail,
    Pagination,
    ValidationFailed,
    ok,
    register_error_code,
)

if TYPE_CHECKING:
    from fastapi.dependencies.models import Dependant

register_error_code("invalid_cursor", 400, "The pagination cursor is malformed or expired.")

T = TypeVar("T")
Order = Literal["asc", "desc"]
MAX_CURSOR_CHARS = 1024
_AAD = b"pm-cursor-v1"
_NONCE = 12
_key: bytes | None = None


# --------------------------------------------------------------------------- sealing


def configure_cursors(secret: str | bytes) -> None:
    """Derive the cursor key from `secret` (create_app calls this with the settings)."""
    global _key
    raw = secret.encode() if isinstance(secret, str) else secret
    _key = hmac.new(raw, b"pm-cursor-key-v1", hashlib.sha256).digest()


def _aead() -> AESGCM:
    if _key is None:
        # Processes built without create_app (scripts, unit tests) read the same settings.
        from libs.common.settings import ServiceSettings

        configured = os.environ.get("PM_CURSOR_KEY")
        configure_cursors(configured or ServiceSettings().cursor_key.get_secret_value())
    assert _key is not None
    return AESGCM(_key)


@dataclass(frozen=True)
class Keyset:
    """Where the next page starts: after (`value`, `row_id`) in the list's sort order."""

    value: Any
    row_id: str


def encode_cursor(value: Any, row_id: object, *, sort: str = "created_at") -> str:
    """A sealed cursor pointing after (`value`, `row_id`) in the list sorted by `sort`."""
    kind = "d" if isinstance(value, datetime) else "j"
    plain = orjson.dumps(
        {"s": sort, "k": kind, "v": value.isoformat() if kind == "d" else value, "i": str(row_id)}
    )
    nonce = os.urandom(_NONCE)
    sealed = nonce + _aead().encrypt(nonce, plain, _AAD)
    return base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def decode_cursor(cursor: str, *, sort: str = "created_at", datetime_value: bool = True) -> Keyset:
    """The keyset `cursor` points at; raises 400 `invalid_cursor` when it cannot be used
    (not ours, tampered with, from a list with another sort, or of the wrong value type)."""
    try:
        sealed = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
        if len(sealed) <= _NONCE:
            raise ValueError("too short")
        data = orjson.loads(_aead().decrypt(sealed[:_NONCE], sealed[_NONCE:], _AAD))
        if not isinstance(data, dict) or not isinstance(data.get("i"), str):
            raise ValueError("not a cursor")
    except (ValueError, TypeError, UnicodeEncodeError, binascii.Error, InvalidTag) as exc:
        raise _invalid("The cursor is not valid.") from exc
    if data.get("s") != sort:
        raise _invalid("The cursor belongs to a list with another sort order.")
    value = data.get("v")
    if data.get("k") == "d":
        try:
            value = datetime.fromisoformat(str(value))
        except ValueError as exc:
            raise _invalid("The cursor is not valid.") from exc
    if datetime_value != isinstance(value, datetime):
        raise _invalid("The cursor is not valid.")
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


# --------------------------------------------------------------------------- one page shape


@dataclass
class Page(Generic[T]):
    """One page of a list: its items and `meta.pagination`. Every list answers with
    `page.envelope()`, typed `SuccessEnvelope[list[Item]]`."""

    items: list[T]
    pagination: Pagination

    def envelope(self) -> dict[str, Any]:
        return ok(self.items, pagination=self.pagination)


@dataclass(frozen=True)
class ListParams:
    """The paging and sorting half of a list request (filters are the list's own)."""

    limit: int
    offset: int = 0
    cursor: str | None = None
    sort_by: str = "created_at"
    order: Order = "desc"
    datetime_sorts: frozenset[str] = field(
        default=frozenset({"created_at", "updated_at", "occurred_at", "last_used_at"})
    )

    @property
    def sort_key(self) -> str:
        return f"{self.sort_by}:{self.order}"

    def after(self) -> "Keyset | None":
        """The decoded cursor, or None on the first page / with offset paging."""
        if self.cursor is None:
            return None
        return decode_cursor(
            self.cursor, sort=self.sort_key, datetime_value=self.sort_by in self.datetime_sorts
        )

    def page(
        self,
        rows: Sequence[Any],
        shape: Callable[[Any], T],
        *,
        sort_value: Callable[[Any], Any] | None = None,
        row_id: Callable[[Any], Any] | None = None,
        total: int | None = None,
    ) -> "Page[T]":
        """The page from `rows`, fetched with `limit + 1` so one extra row tells `has_more`."""
        more = len(rows) > self.limit
        rows = rows[: self.limit]
        value_of = sort_value or (lambda r: r[self.sort_by])
        id_of = row_id or (lambda r: r["id"])
        next_cursor = (
            encode_cursor(value_of(rows[-1]), id_of(rows[-1]), sort=self.sort_key)
            if more and rows
            else None
        )
        pagination = Pagination(
            limit=self.limit,
            offset=None if self.cursor else self.offset,
            total=total,
            next_cursor=next_cursor,
            has_more=more,
        )
        return Page([shape(r) for r in rows], pagination)


# Postgres's OFFSET is a bigint: a larger one was a 500 (found by the full contract fuzz).
MAX_OFFSET = 2**63 - 1


def list_params(
    sort_fields: Sequence[str],
    *,
    default_sort: str = "created_at",
    default_order: Order = "desc",
    default_limit: int = 50,
    max_limit: int = 100,
) -> Callable[..., ListParams]:
    """A FastAPI dependency reading `limit`, `offset`, `cursor`, `sort_by` (one of
    `sort_fields`, else 422 naming `query.sort_by`) and `order`."""
    if default_sort not in sort_fields:
        raise ValueError(f"default sort {default_sort!r} is not in {sort_fields}")
    sort_field: Any = Literal[tuple(sort_fields)]

    def dependency(
        limit: Annotated[
            int, Query(ge=1, le=max_limit, description=f"Page size (1-{max_limit}).")
        ] = default_limit,
        offset: Annotated[
            int,
            Query(
                ge=0,
                le=MAX_OFFSET,
                description="Rows to skip (limit/offset paging; at most 2^63 - 1).",
            ),
        ] = 0,
        cursor: Annotated[
            str | None,
            Query(
                max_length=MAX_CURSOR_CHARS,
                description="`meta.pagination.next_cursor` of the previous page (opaque).",
            ),
        ] = None,
        sort_by: Annotated[sort_field, Query(description="Sort field.")] = default_sort,
        order: Annotated[Order, Query(description="Sort direction.")] = default_order,
    ) -> ListParams:
        if cursor is not None and offset:
            raise ValidationFailed(
                "Use either cursor or offset pagination, not both.",
                details=[
                    ErrorDetail(field="query.cursor", message="cannot be combined with offset")
                ],
            )
        return ListParams(
            limit=limit, offset=0 if cursor else offset, cursor=cursor, sort_by=sort_by, order=order
        )

    return dependency


def keyset_sql(
    params: ListParams,
    columns: Mapping[str, str],
    args: list[Any],
    *,
    id_column: str = "id",
    id_type: str | None = None,
) -> tuple[str | None, str]:
    """For a repository's list query: the keyset condition (None on a first page) and the
    `ORDER BY ... LIMIT ... OFFSET ...` tail, both with placeholders appended to `args`.
    `columns` maps each allowed sort field to its (NOT NULL) column; nothing from the request
    reaches the SQL text but those whitelisted names. `id_type` ("uuid"): the id column's
    type, compared and ordered as itself (a uuid orders like its text form), so an index
    ending in (sort column, id) gives the order and bounds a cursor page; without it the id
    is compared as text."""
    column = columns[params.sort_by]
    direction = "ASC" if params.order == "asc" else "DESC"
    id_sql = id_column if id_type else f"{id_column}::text"
    condition = None
    after = params.after()
    if after is not None:
        op = ">" if params.order == "asc" else "<"
        if id_type == "uuid":
            try:
                UUID(after.row_id)
            except ValueError as exc:  # a sealed cursor of another list (text ids)
                raise _invalid("The cursor is not valid.") from exc
        args += [after.value, after.row_id]
        value, row_id = f"${len(args) - 1}", f"${len(args)}"
        if id_type:
            row_id = f"{row_id}::{id_type}"
        # The plain bound on the sort column is what an index can start from (the row
        # comparison alone may be a filter over every row before the cursor).
        condition = f"{column} {op}= {value} AND ({column}, {id_sql}) {op} ({value}, {row_id})"
    args += [params.limit + 1, params.offset]
    tail = (
        f"ORDER BY {column} {direction}, {id_sql} {direction}"
        f" LIMIT ${len(args) - 1} OFFSET ${len(args)}"
    )
    return condition, tail


# --------------------------------------------------------------------------- strict queries


def _query_names(dependant: "Dependant") -> set[str]:
    names = {f.alias for f in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


_ALLOWED: dict[int, frozenset[str]] = {}


async def reject_unknown_query(request: Request) -> None:
    """Router dependency: a query parameter the route does not declare is a 422 naming it
    (a misspelt filter must not silently return the unfiltered list)."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    allowed = _ALLOWED.get(id(route))
    if allowed is None:
        allowed = _ALLOWED[id(route)] = frozenset(_query_names(route.dependant))
    unknown = sorted({k for k in request.query_params if k not in allowed})
    if unknown:
        raise ValidationFailed(
            "Unknown query parameter.",
            details=[
                ErrorDetail(field=f"query.{name}", message="unknown query parameter")
                for name in unknown
            ],
        )
