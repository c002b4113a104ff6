"""Every SQL statement of the billing service (schema `billing`, role `pm_billing`).

Tenant-facing reads always filter by tenant and mode. Writes of Stripe state are guarded by
`synced_at` (when the state was read from Stripe): an older read never replaces a newer one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from libs.common.pagination import ListParams, keyset_sql

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

# ---------------------------------------------------------------- clock and locks


async def db_now(db: Conn) -> datetime:
    value: datetime = await db.fetchval("SELECT clock_timestamp()")
    return value


async def lock_tenant(conn: asyncpg.Connection, tenant_id: str) -> None:
    """Serialise plan decisions of one tenant until the transaction ends."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('pm-billing-tenant:' || $1, 0))",
        tenant_id,
    )


async def try_reconcile_lock(conn: asyncpg.Connection, mode: str) -> bool:
    """One reconciler per mode at a time (session lock, released by `reconcile_unlock`)."""
    return bool(
        await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended('pm-billing-reconcile:' || $1, 0))",
            mode,
        )
    )


async def reconcile_unlock(conn: asyncpg.Connection, mode: str) -> None:
    await conn.execute(
        "SELECT pg_advisory_unlock(hashtextextended('pm-billing-reconcile:' || $1, 0))", mode
    )


# ---------------------------------------------------------------- stripe events


async def insert_event(
    conn: asyncpg.Connection,
    *,
    event_id: str,
    mode: str,
    type_: str,
    object_id: str | None,
    created_at: datetime,
    payload: dict[str, Any],
    source: str,
) -> bool:
    """Store a Stripe event once; False when its id is already stored."""
    inserted = await conn.fetchval(
        "INSERT INTO stripe_events (id, mode, type, object_id, stripe_created_at, payload, source)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING RETURNING true",
        event_id,
        mode,
        type_,
        object_id,
        created_at,
        payload,
        source,
    )
    return bool(inserted)


async def get_event(db: Conn, event_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT id, mode, type, object_id, stripe_created_at, source, processed_at, outcome"
        " FROM stripe_events WHERE id = $1",
        event_id,
    )


async def lock_event(conn: asyncpg.Connection, event_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, mode, type, processed_at FROM stripe_events WHERE id = $1 FOR UPDATE",
        event_id,
    )


async def mark_event_processed(conn: asyncpg.Connection, event_id: str, outcome: str) -> None:
    await conn.execute(
        "UPDATE stripe_events SET processed_at = clock_timestamp(), outcome = $2 WHERE id = $1",
        event_id,
        outcome,
    )


async def stale_unprocessed_events(
    db: Conn, mode: str, older_than_seconds: int, limit: int = 500
) -> list[str]:
    rows = await db.fetch(
        "SELECT id FROM stripe_events WHERE processed_at IS NULL AND mode = $1"
        " AND received_at < now() - make_interval(secs => $2)"
        " ORDER BY stripe_created_at, id LIMIT $3",
        mode,
        older_than_seconds,
        limit,
    )
    return [r["id"] for r in rows]


# ---------------------------------------------------------------- customers


async def customer_of_tenant(db: Conn, tenant_id: str, mode: str) -> str | None:
    value: str | None = await db.fetchval(
        "SELECT stripe_customer_id FROM customers WHERE tenant_id = $1 AND mode = $2",
        tenant_id,
        mode,
    )
    return value


async def tenant_of_customer(db: Conn, customer_id: str, mode: str) -> str | None:
    value: str | None = await db.fetchval(
        "SELECT tenant_id FROM customers WHERE stripe_customer_id = $1 AND mode = $2",
        customer_id,
        mode,
    )
    return value


async def insert_customer(db: Conn, tenant_id: str, mode: str, customer_id: str) -> str:
    """Record the tenant's customer; returns the customer id stored (an earlier one wins)."""
    stored: str = await db.fetchval(
        "WITH ins AS (INSERT INTO customers (tenant_id, mode, stripe_customer_id)"
        " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING stripe_customer_id)"
        " SELECT stripe_customer_id FROM ins UNION ALL"
        " SELECT stripe_customer_id FROM customers WHERE tenant_id = $1 AND mode = $2"
        " LIMIT 1",
        tenant_id,
        mode,
        customer_id,
    )
    return stored


# ---------------------------------------------------------------- subscriptions

_SUBSCRIPTION_COLUMNS = (
    "stripe_subscription_id, tenant_id, mode, stripe_customer_id, plan_id, price_id, status,"
    " current_period_end, cancel_at_period_end, canceled_at, stripe_created_at, synced_at"
)


async def upsert_subscription(conn: asyncpg.Connection, row: dict[str, Any]) -> bool:
    """Store the subscription as read at `row["synced_at"]`; False when a later read is
    already stored (the older state is dropped)."""
    applied = await conn.fetchval(
        f"INSERT INTO subscriptions ({_SUBSCRIPTION_COLUMNS})"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        " ON CONFLICT (stripe_subscription_id) DO UPDATE SET"
        " stripe_customer_id = EXCLUDED.stripe_customer_id, plan_id = EXCLUDED.plan_id,"
        " price_id = EXCLUDED.price_id, status = EXCLUDED.status,"
        " current_period_end = EXCLUDED.current_period_end,"
        " cancel_at_period_end = EXCLUDED.cancel_at_period_end,"
        " canceled_at = EXCLUDED.canceled_at, synced_at = EXCLUDED.synced_at,"
        " updated_at = now()"
        " WHERE subscriptions.synced_at <= EXCLUDED.synced_at"
        " RETURNING true",
        row["stripe_subscription_id"],
        row["tenant_id"],
        row["mode"],
        row["stripe_customer_id"],
        row["plan_id"],
        row["price_id"],
        row["status"],
        row["current_period_end"],
        row["cancel_at_period_end"],
        row["canceled_at"],
        row["stripe_created_at"],
        row["synced_at"],
    )
    return bool(applied)


async def get_subscription(db: Conn, subscription_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE stripe_subscription_id = $1",
        subscription_id,
    )


async def tenant_subscriptions(db: Conn, tenant_id: str, mode: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE tenant_id = $1 AND mode = $2"
        " ORDER BY stripe_created_at DESC, stripe_subscription_id DESC",
        tenant_id,
        mode,
    )
    return rows


async def local_subscriptions(db: Conn, mode: str) -> dict[str, asyncpg.Record]:
    rows = await db.fetch(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE mode = $1", mode
    )
    return {r["stripe_subscription_id"]: r for r in rows}


# ---------------------------------------------------------------- tenant plan


async def tenant_config(db: Conn, tenant_id: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT tenant_id, plan, stripe_subscription_id, updated_at FROM tenant_config"
        " WHERE tenant_id = $1",
        tenant_id,
    )


async def set_tenant_config(
    conn: asyncpg.Connection, tenant_id: str, plan: str, subscription_id: str | None
) -> None:
    await conn.execute(
        "INSERT INTO tenant_config (tenant_id, plan, stripe_subscription_id) VALUES ($1, $2, $3)"
        " ON CONFLICT (tenant_id) DO UPDATE SET plan = EXCLUDED.plan,"
        " stripe_subscription_id = EXCLUDED.stripe_subscription_id, updated_at = now()",
        tenant_id,
        plan,
        subscription_id,
    )


# ---------------------------------------------------------------- payments

_PAYMENT_COLUMNS = (
    "stripe_invoice_id, tenant_id, mode, stripe_customer_id, stripe_subscription_id, status,"
    " invoice_status, amount_due, amount_paid, currency, attempt_count, next_payment_attempt,"
    " hosted_invoice_url, period_start, period_end, paid_at, stripe_created_at, synced_at"
)


async def upsert_payment(conn: asyncpg.Connection, row: dict[str, Any]) -> bool:
    applied = await conn.fetchval(
        f"INSERT INTO payments ({_PAYMENT_COLUMNS})"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,"
        " $18)"
        " ON CONFLICT (stripe_invoice_id) DO UPDATE SET status = EXCLUDED.status,"
        " invoice_status = EXCLUDED.invoice_status, amount_due = EXCLUDED.amount_due,"
        " amount_paid = EXCLUDED.amount_paid, attempt_count = EXCLUDED.attempt_count,"
        " next_payment_attempt = EXCLUDED.next_payment_attempt,"
        " hosted_invoice_url = EXCLUDED.hosted_invoice_url, paid_at = EXCLUDED.paid_at,"
        " synced_at = EXCLUDED.synced_at, updated_at = now()"
        " WHERE payments.synced_at <= EXCLUDED.synced_at"
        " RETURNING true",
        *(row[c.strip()] for c in _PAYMENT_COLUMNS.split(",")),
    )
    return bool(applied)


async def list_payments(
    db: Conn,
    tenant_id: str,
    mode: str,
    params: ListParams,
    *,
    status: str | None = None,
    subscription_id: str | None = None,
) -> list[asyncpg.Record]:
    """Sorted by Stripe's creation time (the indexed column), invoice id breaking ties."""
    args: list[Any] = [tenant_id, mode, status, subscription_id]
    keyset, tail = keyset_sql(
        params, {"created_at": "stripe_created_at"}, args, id_column="stripe_invoice_id"
    )
    rows: list[asyncpg.Record] = await db.fetch(
        f"SELECT {_PAYMENT_COLUMNS} FROM payments WHERE tenant_id = $1 AND mode = $2"
        " AND ($3::text IS NULL OR status = $3)"
        " AND ($4::text IS NULL OR stripe_subscription_id = $4)"
        f"{' AND ' + keyset if keyset else ''} {tail}",
        *args,
    )
    return rows


# ---------------------------------------------------------------- reconciliation


async def reconcile_cursor(db: Conn, mode: str) -> datetime | None:
    value: datetime | None = await db.fetchval(
        "SELECT last_event_created_at FROM reconciliation_cursors WHERE mode = $1", mode
    )
    return value


async def set_reconcile_cursor(db: Conn, mode: str, created_at: datetime) -> None:
    await db.execute(
        "INSERT INTO reconciliation_cursors (mode, last_event_created_at) VALUES ($1, $2)"
        " ON CONFLICT (mode) DO UPDATE SET last_event_created_at = GREATEST("
        " reconciliation_cursors.last_event_created_at, EXCLUDED.last_event_created_at),"
        " updated_at = now()",
        mode,
        created_at,
    )


async def start_run(db: Conn, mode: str) -> int:
    run_id: int = await db.fetchval(
        "INSERT INTO reconciliation_runs (mode) VALUES ($1) RETURNING id", mode
    )
    return run_id


async def finish_run(
    db: Conn,
    run_id: int,
    *,
    events_listed: int,
    events_applied: int,
    subscriptions_checked: int,
    drift_corrected: int,
    error: str | None,
) -> None:
    await db.execute(
        "UPDATE reconciliation_runs SET finished_at = clock_timestamp(), events_listed = $2,"
        " events_applied = $3, subscriptions_checked = $4, drift_corrected = $5, error = $6"
        " WHERE id = $1",
        run_id,
        events_listed,
        events_applied,
        subscriptions_checked,
        drift_corrected,
        error,
    )


async def add_drift(
    db: Conn,
    run_id: int,
    mode: str,
    kind: str,
    object_id: str,
    tenant_id: str | None,
    detail: dict[str, Any],
) -> None:
    await db.execute(
        "INSERT INTO reconciliation_drift (run_id, mode, kind, object_id, tenant_id, detail)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        run_id,
        mode,
        kind,
        object_id,
        tenant_id,
        detail,
    )


async def run_drift(db: Conn, run_id: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        "SELECT kind, object_id, tenant_id, detail FROM reconciliation_drift WHERE run_id = $1"
        " ORDER BY id",
        run_id,
    )
    return rows
