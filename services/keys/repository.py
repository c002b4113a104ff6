"""Every SQL statement of the keys service (schema `keys`): tenants, users, sessions, API key
metadata and usage. Tenant-owned reads and writes always filter by `tenant_id`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from libs.common.pagination import ListParams, keyset_sql

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

_KEY_COLUMNS = (
    "id, tenant_id, name, mode, lookup_id, last4, scopes, created_by, created_at, expires_at,"
    " revoked_at, regenerated_at, previous_lookup_id, previous_valid_until, request_count,"
    " error_count, last_used_at"
)

# ---------------------------------------------------------------- tenants and users


async def insert_tenant(conn: Conn, tenant_id: str, name: str, plan: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "INSERT INTO tenants (id, name, plan) VALUES ($1, $2, $3) RETURNING *",
        tenant_id,
        name,
        plan,
    )
    assert row is not None
    return row


async def get_tenant(conn: Conn, tenant_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM tenants WHERE id = $1", tenant_id)


async def set_tenant_plan(conn: Conn, tenant_id: str, plan: str) -> str | None:
    """Change the plan; returns the previous plan, None when the tenant does not exist."""
    old: str | None = await conn.fetchval(
        "UPDATE tenants t SET plan = $2, plan_changed_at = now()"
        " FROM (SELECT id, plan FROM tenants WHERE id = $1 FOR UPDATE) old"
        " WHERE t.id = old.id RETURNING old.plan",
        tenant_id,
        plan,
    )
    return old


async def insert_user(
    conn: Conn, user_id: str, tenant_id: str, email: str, password_hash: str, role: str
) -> asyncpg.Record:
    row = await conn.fetchrow(
        "INSERT INTO users (id, tenant_id, email, password_hash, role)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING id, tenant_id, email, role, created_at",
        user_id,
        tenant_id,
        email,
        password_hash,
        role,
    )
    assert row is not None
    return row


async def find_user_by_email(conn: Conn, email: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT u.id, u.tenant_id, u.email, u.password_hash, u.role,"
        " t.name AS tenant_name, t.plan"
        " FROM users u JOIN tenants t ON t.id = u.tenant_id WHERE lower(u.email) = lower($1)",
        email,
    )


async def get_user(conn: Conn, user_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT u.id, u.tenant_id, u.email, u.role, t.name AS tenant_name, t.plan"
        " FROM users u JOIN tenants t ON t.id = u.tenant_id WHERE u.id = $1",
        user_id,
    )


# ---------------------------------------------------------------- sessions


async def insert_session(
    conn: Conn,
    session_id: str,
    user_id: str,
    tenant_id: str,
    refresh_hash: bytes,
    expires_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO sessions (id, user_id, tenant_id, refresh_hash, expires_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        session_id,
        user_id,
        tenant_id,
        refresh_hash,
        expires_at,
    )


async def lock_tenant_plan(conn: Conn, tenant_id: str) -> str | None:
    """The tenant's plan, its row locked until the transaction ends (serialises key creation
    so two concurrent creates cannot both pass the plan's key cap)."""
    plan: str | None = await conn.fetchval(
        "SELECT plan FROM tenants WHERE id = $1 FOR UPDATE", tenant_id
    )
    return plan


async def count_active_api_keys(conn: Conn, tenant_id: str) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL"
        " AND (expires_at IS NULL OR expires_at > now())",
        tenant_id,
    )
    return count


async def find_session_by_refresh(conn: Conn, refresh_hash: bytes) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM sessions WHERE refresh_hash = $1 FOR UPDATE", refresh_hash
    )


async def find_session_by_previous_refresh(
    conn: Conn, refresh_hash: bytes
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM sessions WHERE previous_refresh_hash = $1", refresh_hash
    )


async def rotate_session(conn: Conn, session_id: str, new_hash: bytes) -> None:
    await conn.execute(
        "UPDATE sessions SET previous_refresh_hash = refresh_hash, refresh_hash = $2,"
        " refreshed_at = now() WHERE id = $1",
        session_id,
        new_hash,
    )


async def revoke_session(conn: Conn, session_id: str) -> None:
    await conn.execute(
        "UPDATE sessions SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1", session_id
    )


# ---------------------------------------------------------------- API keys


async def insert_api_key(
    conn: Conn,
    *,
    key_id: str,
    tenant_id: str,
    name: str,
    mode: str,
    lookup_id: str,
    last4: str,
    scopes: Sequence[str],
    created_by: str,
    expires_at: datetime | None,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        "INSERT INTO api_keys (id, tenant_id, name, mode, lookup_id, last4, scopes, created_by,"
        f" expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {_KEY_COLUMNS}",
        key_id,
        tenant_id,
        name,
        mode,
        lookup_id,
        last4,
        list(scopes),
        created_by,
        expires_at,
    )
    assert row is not None
    return row


async def list_api_keys(
    conn: Conn,
    tenant_id: str,
    params: ListParams,
    *,
    status: str | None,
    mode: str | None = None,
    name: str | None = None,
) -> list[asyncpg.Record]:
    """`status` filters active / revoked / expired; sorted by creation (the indexed column)."""
    args: list[Any] = [tenant_id, status, mode, name]
    keyset, tail = keyset_sql(params, {"created_at": "created_at"}, args)
    return list(
        await conn.fetch(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1"
            " AND ($2::text IS NULL"
            "  OR ($2 = 'revoked' AND revoked_at IS NOT NULL)"
            "  OR ($2 = 'expired' AND revoked_at IS NULL AND expires_at <= now())"
            "  OR ($2 = 'active' AND revoked_at IS NULL"
            "      AND (expires_at IS NULL OR expires_at > now())))"
            " AND ($3::text IS NULL OR mode = $3) AND ($4::text IS NULL OR name = $4)"
            f"{' AND ' + keyset if keyset else ''} {tail}",
            *args,
        )
    )


async def get_api_key(conn: Conn, tenant_id: str, key_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        key_id,
    )


async def find_key_by_lookup(conn: Conn, lookup_id: str) -> asyncpg.Record | None:
    """The key whose current or previous secret has `lookup_id`, with its tenant's plan and
    the current dashboard role of the user who created it (`creator_role`, None if gone).
    Verification is the one read not scoped by tenant: the key is what names the tenant."""
    return await conn.fetchrow(
        f"SELECT {', '.join('k.' + c.strip() for c in _KEY_COLUMNS.split(','))}, t.plan,"
        " u.role AS creator_role"
        " FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
        " LEFT JOIN users u ON u.id = k.created_by AND u.tenant_id = k.tenant_id"
        " WHERE k.lookup_id = $1 OR k.previous_lookup_id = $1",
        lookup_id,
    )


async def revoke_api_key(conn: Conn, tenant_id: str, key_id: str) -> asyncpg.Record | None:
    """Set revoked_at; returns the row only when this call revoked it."""
    return await conn.fetchrow(
        "UPDATE api_keys SET revoked_at = now()"
        f" WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL RETURNING {_KEY_COLUMNS}",
        tenant_id,
        key_id,
    )


async def lock_api_key(conn: Conn, tenant_id: str, key_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        tenant_id,
        key_id,
    )


async def regenerate_api_key(
    conn: Conn,
    tenant_id: str,
    key_id: str,
    *,
    lookup_id: str,
    last4: str,
    previous_valid_until: datetime | None,
) -> asyncpg.Record:
    row = await conn.fetchrow(
        "UPDATE api_keys SET previous_lookup_id = lookup_id, previous_valid_until = $5,"
        " lookup_id = $3, last4 = $4, regenerated_at = now()"
        f" WHERE tenant_id = $1 AND id = $2 RETURNING {_KEY_COLUMNS}",
        tenant_id,
        key_id,
        lookup_id,
        last4,
        previous_valid_until,
    )
    assert row is not None
    return row


# ---------------------------------------------------------------- usage


async def usage_buckets(
    conn: Conn,
    tenant_id: str,
    key_id: str,
    start: datetime,
    end: datetime,
    granularity: str = "minute",
) -> list[asyncpg.Record]:
    """Per-minute rows summed into `granularity` buckets ('minute', 'hour' or 'day', UTC)."""
    return list(
        await conn.fetch(
            "SELECT date_trunc($5, minute, 'UTC') AS minute,"
            " sum(requests)::bigint AS requests, sum(errors)::bigint AS errors"
            " FROM api_key_usage"
            " WHERE tenant_id = $1 AND key_id = $2 AND minute >= $3 AND minute < $4"
            " GROUP BY 1 ORDER BY 1",
            tenant_id,
            key_id,
            start,
            end,
            granularity,
        )
    )


async def claim_usage_batch(conn: Conn, batch_id: str) -> bool:
    """Record a flushed batch; false when it was already applied (a retried flush)."""
    claimed = await conn.fetchval(
        "INSERT INTO usage_flushes (batch_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING true",
        batch_id,
    )
    return bool(claimed)


async def add_usage(
    conn: Conn,
    key_id: str,
    buckets: Sequence[tuple[datetime, int, int]],
    last_used_at: datetime | None,
) -> bool:
    """Add per-minute counts and totals of one key; false when the key is unknown."""
    tenant_id = await conn.fetchval("SELECT tenant_id FROM api_keys WHERE id = $1", key_id)
    if tenant_id is None:
        return False
    await conn.executemany(
        "INSERT INTO api_key_usage (key_id, tenant_id, minute, requests, errors)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (key_id, minute) DO UPDATE SET"
        " requests = api_key_usage.requests + EXCLUDED.requests,"
        " errors = api_key_usage.errors + EXCLUDED.errors",
        [(key_id, tenant_id, m, r, e) for m, r, e in buckets],
    )
    await conn.execute(
        "UPDATE api_keys SET request_count = request_count + $2, error_count = error_count + $3,"
        " last_used_at = greatest(last_used_at, $4) WHERE id = $1",
        key_id,
        sum(r for _, r, _ in buckets),
        sum(e for _, _, e in buckets),
        last_used_at,
    )
    return True


async def purge_usage_flushes(conn: Conn, older_than_days: int = 7) -> None:
    await conn.execute(
        "DELETE FROM usage_flushes WHERE flushed_at < now() - make_interval(days => $1)",
        older_than_days,
    )


def as_dict(row: asyncpg.Record) -> dict[str, Any]:
    return dict(row.items())
