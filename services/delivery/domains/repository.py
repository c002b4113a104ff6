"""Every SQL statement of sending domains (table `delivery.sending_domains`).

Public API reads and writes filter on `tenant_id`; the periodic checker claims due domains
across tenants (`FOR UPDATE SKIP LOCKED`, so several workers share the checks).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

_COLUMNS = """
    id, tenant_id, name, status, dkim_selector, dkim_public_key, dkim_next_selector,
    dkim_next_public_key, record_status, default_from, default_from_name, created_at,
    verified_at, last_checked_at, next_check_at
"""


def _row(record: asyncpg.Record | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return dict(record)  # the pool's codec decodes jsonb


async def insert(
    conn: asyncpg.Connection,
    *,
    domain_id: str,
    tenant_id: str,
    name: str,
    selector: str,
    public_key: str,
    first_check_at: datetime,
) -> dict[str, Any] | None:
    """The new row, or None when the tenant already has this name."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO sending_domains
            (id, tenant_id, name, dkim_selector, dkim_public_key, next_check_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (tenant_id, name) DO NOTHING
        RETURNING {_COLUMNS}
        """,
        domain_id,
        tenant_id,
        name,
        selector,
        public_key,
        first_check_at,
    )
    return _row(row)


async def verified_elsewhere(conn: asyncpg.Connection, tenant_id: str, name: str) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM sending_domains WHERE name = $1 AND status = 'verified' AND tenant_id <> $2",
        name,
        tenant_id,
    )
    return found is not None


async def get(
    conn: asyncpg.Connection, tenant_id: str, domain_id: str, *, lock: bool = False
) -> dict[str, Any] | None:
    suffix = " FOR UPDATE" if lock else ""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM sending_domains WHERE tenant_id = $1 AND id = $2{suffix}",
        tenant_id,
        domain_id,
    )
    return _row(row)


async def list_page(
    conn: asyncpg.Connection,
    tenant_id: str,
    *,
    status: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
    offset: int,
) -> list[dict[str, Any]]:
    """Oldest first; keyset (`after` = last row's created_at, id) or offset paging."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM sending_domains
        WHERE tenant_id = $1
          AND ($2::text IS NULL OR status = $2)
          AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4))
        ORDER BY created_at, id
        LIMIT $5 OFFSET $6
        """,
        tenant_id,
        status,
        after[0] if after else None,
        after[1] if after else None,
        limit,
        offset,
    )
    return [r for r in map(_row, rows) if r is not None]


async def count(conn: asyncpg.Connection, tenant_id: str, status: str | None) -> int:
    total: int = await conn.fetchval(
        "SELECT count(*) FROM sending_domains WHERE tenant_id = $1"
        " AND ($2::text IS NULL OR status = $2)",
        tenant_id,
        status,
    )
    return total


async def delete(conn: asyncpg.Connection, tenant_id: str, domain_id: str) -> bool:
    done = await conn.execute(
        "DELETE FROM sending_domains WHERE tenant_id = $1 AND id = $2", tenant_id, domain_id
    )
    return bool(done.endswith(" 1"))


async def save_check(
    conn: asyncpg.Connection,
    domain_id: str,
    *,
    status: str,
    record_status: dict[str, str],
    next_check_at: datetime,
    promote_next_selector: bool,
) -> dict[str, Any]:
    """Store a check's outcome; `promote_next_selector` makes the rotated key the current."""
    row = await conn.fetchrow(
        f"""
        UPDATE sending_domains SET
            status = $2,
            record_status = $3::jsonb,
            last_checked_at = now(),
            next_check_at = $4,
            verified_at = CASE WHEN $2 = 'verified' AND status <> 'verified' THEN now()
                               ELSE verified_at END,
            dkim_selector = CASE WHEN $5 THEN dkim_next_selector ELSE dkim_selector END,
            dkim_public_key = CASE WHEN $5 THEN dkim_next_public_key ELSE dkim_public_key END,
            dkim_next_selector = CASE WHEN $5 THEN NULL ELSE dkim_next_selector END,
            dkim_next_public_key = CASE WHEN $5 THEN NULL ELSE dkim_next_public_key END
        WHERE id = $1
        RETURNING {_COLUMNS}
        """,
        domain_id,
        status,
        record_status,
        next_check_at,
        promote_next_selector,
    )
    out = _row(row)
    assert out is not None
    return out


async def set_next_key(
    conn: asyncpg.Connection, domain_id: str, selector: str, public_key: str
) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"""
        UPDATE sending_domains
        SET dkim_next_selector = $2, dkim_next_public_key = $3, next_check_at = now()
        WHERE id = $1 RETURNING {_COLUMNS}
        """,
        domain_id,
        selector,
        public_key,
    )
    out = _row(row)
    assert out is not None
    return out


async def set_sender(
    conn: asyncpg.Connection,
    domain_id: str,
    default_from: str | None,
    default_from_name: str | None,
) -> dict[str, Any]:
    row = await conn.fetchrow(
        f"""
        UPDATE sending_domains SET default_from = $2, default_from_name = $3
        WHERE id = $1 RETURNING {_COLUMNS}
        """,
        domain_id,
        default_from,
        default_from_name,
    )
    out = _row(row)
    assert out is not None
    return out


async def claim_due(conn: asyncpg.Connection, limit: int) -> list[dict[str, Any]]:
    """Due domains, locked for this transaction (other checkers skip them)."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM sending_domains
        WHERE next_check_at <= now()
        ORDER BY next_check_at
        LIMIT $1
        FOR UPDATE SKIP LOCKED
        """,
        limit,
    )
    return [r for r in map(_row, rows) if r is not None]


async def verified_covering(
    conn: asyncpg.Connection, tenant_id: str, names: list[str]
) -> tuple[str, str, str] | None:
    """(domain id, name, current selector) of the tenant's most specific verified domain
    among `names` (a sender's domain and its parents), if any."""
    row = await conn.fetchrow(
        "SELECT id, name, dkim_selector FROM sending_domains"
        " WHERE tenant_id = $1 AND name = ANY($2::text[]) AND status = 'verified'"
        " ORDER BY length(name) DESC LIMIT 1",
        tenant_id,
        names,
    )
    return (row["id"], row["name"], row["dkim_selector"]) if row else None
