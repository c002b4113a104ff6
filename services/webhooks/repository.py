"""Every SQL statement of the webhooks service (schema `webhooks`, role `pm_webhooks`).

Management queries always filter by tenant and mode: another tenant's endpoint is simply
not found. Engine queries (fan-out, claims, outcomes, sweeps) work by id across tenants.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from libs.common.pagination import ListParams, keyset_sql

# Columns of an endpoint as management and matching need them.
_ENDPOINT_COLUMNS = (
    "id, tenant_id, mode, url, description, event_types, filter_campaign_ids,"
    " filter_contact_tags, enabled, disabled_reason, disabled_at, retry_schedule_ms,"
    " secret_version, previous_secret_expires_at, failing_since, consecutive_failures,"
    " created_at, updated_at, payload_version"
)
# What an attempt needs: the delivery and its endpoint, returned by every claim.
_CLAIM_RETURNING = (
    "RETURNING d.id, d.endpoint_id, d.tenant_id, d.event_type, d.payload, d.seq,"
    " d.attempts, d.cycle_attempts, d.trigger, e.url, e.retry_schedule_ms, e.secret_version"
)

WAKE_CHANNEL = "webhooks_wake"
ACTIVE = ("pending", "retrying")


# ------------------------------------------------------------------ endpoints (management)


async def insert_endpoint(conn: asyncpg.Connection, row: dict[str, Any]) -> asyncpg.Record:
    return await conn.fetchrow(
        f"INSERT INTO endpoints (id, tenant_id, mode, url, description, event_types,"
        f" filter_campaign_ids, filter_contact_tags, enabled, retry_schedule_ms, payload_version)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {_ENDPOINT_COLUMNS}",
        row["id"],
        row["tenant_id"],
        row["mode"],
        row["url"],
        row["description"],
        row["event_types"],
        row["filter_campaign_ids"],
        row["filter_contact_tags"],
        row["enabled"],
        row["retry_schedule_ms"],
        row["payload_version"],
    )


async def get_endpoint(
    conn: asyncpg.Connection | asyncpg.Pool, tenant_id: str, mode: str, endpoint_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_ENDPOINT_COLUMNS} FROM endpoints WHERE id = $1 AND tenant_id = $2 AND mode = $3",
        endpoint_id,
        tenant_id,
        mode,
    )


async def list_endpoints(
    pool: asyncpg.Pool,
    tenant_id: str,
    mode: str,
    params: ListParams,
    *,
    enabled: bool | None = None,
    url: str | None = None,
) -> list[asyncpg.Record]:
    args: list[Any] = [tenant_id, mode, enabled, url]
    keyset, tail = keyset_sql(params, {"created_at": "created_at"}, args)
    return await pool.fetch(
        f"SELECT {_ENDPOINT_COLUMNS} FROM endpoints WHERE tenant_id = $1 AND mode = $2"
        " AND ($3::boolean IS NULL OR enabled = $3)"
        " AND ($4::text IS NULL OR url = $4)"
        f"{' AND ' + keyset if keyset else ''} {tail}",
        *args,
    )


async def update_endpoint(
    conn: asyncpg.Connection, tenant_id: str, mode: str, endpoint_id: str, changes: dict[str, Any]
) -> asyncpg.Record | None:
    allowed = {
        "url",
        "description",
        "event_types",
        "filter_campaign_ids",
        "filter_contact_tags",
        "enabled",
        "retry_schedule_ms",
        "disabled_reason",
        "disabled_at",
        "failing_since",
        "consecutive_failures",
        "payload_version",
    }
    assignments = []
    values: list[Any] = [endpoint_id, tenant_id, mode]
    for column, value in changes.items():
        if column not in allowed:
            raise ValueError(f"column {column} is not updatable")
        values.append(value)
        assignments.append(f"{column} = ${len(values)}")
    assignments.append("updated_at = now()")
    return await conn.fetchrow(
        f"UPDATE endpoints SET {', '.join(assignments)}"
        f" WHERE id = $1 AND tenant_id = $2 AND mode = $3 RETURNING {_ENDPOINT_COLUMNS}",
        *values,
    )


async def delete_endpoint(
    conn: asyncpg.Connection, tenant_id: str, mode: str, endpoint_id: str
) -> bool:
    deleted = await conn.fetchval(
        "DELETE FROM endpoints WHERE id = $1 AND tenant_id = $2 AND mode = $3 RETURNING true",
        endpoint_id,
        tenant_id,
        mode,
    )
    return bool(deleted)


async def bump_secret_version(
    conn: asyncpg.Connection, endpoint_id: str, previous_expires_at: datetime
) -> None:
    await conn.execute(
        "UPDATE endpoints SET secret_version = secret_version + 1,"
        " previous_secret_expires_at = $2, updated_at = now() WHERE id = $1",
        endpoint_id,
        previous_expires_at,
    )


async def resume_paused(conn: asyncpg.Connection, endpoint_id: str) -> int:
    """Re-enabled endpoint: its paused deliveries become due now (fresh retry cycle)."""
    result: str = await conn.execute(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = clock_timestamp(),"
        " seq = seq + 1, cycle_attempts = 0, updated_at = clock_timestamp()"
        " WHERE endpoint_id = $1 AND status = 'paused'",
        endpoint_id,
    )
    return int(result.split()[-1])


async def notify_wake(conn: asyncpg.Connection, endpoint_id: str) -> None:
    """Wake workers (on commit) to pull the endpoint's due deliveries."""
    await conn.execute("SELECT pg_notify($1, $2)", WAKE_CHANNEL, endpoint_id)


# ------------------------------------------------------------------ deliveries (log API)


async def list_deliveries(
    pool: asyncpg.Pool,
    endpoint_id: str,
    params: ListParams,
    *,
    status: str | None,
    event_type: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
) -> list[asyncpg.Record]:
    # Only the filters given are in the SQL: a `($n IS NULL OR status = $n)` condition is
    # no index condition in a generic plan (asyncpg prepares statements, and Postgres may
    # switch to one after five runs), so a status none has read the whole log (issue 21).
    # With `status = $n` the page walks deliveries_status_log (000270) whatever the plan.
    args: list[Any] = [endpoint_id]
    where = ["endpoint_id = $1"]
    for condition, value in (
        ("status = ${}", status),
        ("event_type = ${}", event_type),
        ("created_at >= ${}", created_after),
        ("created_at < ${}", created_before),
    ):
        if value is not None:
            args.append(value)
            where.append(condition.format(len(args)))
    keyset, tail = keyset_sql(params, {"created_at": "created_at"}, args)
    if keyset:
        where.append(keyset)
    return await pool.fetch(
        "SELECT id, endpoint_id, event_id, event_type, status, is_test, trigger, attempts,"
        " next_attempt_at, last_status_code, last_error, created_at, updated_at, completed_at"
        f" FROM deliveries WHERE {' AND '.join(where)} {tail}",
        *args,
    )


async def get_delivery(
    pool: asyncpg.Pool, endpoint_id: str, delivery_id: str
) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT id, endpoint_id, event_id, event_type, payload, status, is_test, trigger,"
        " attempts, next_attempt_at, last_status_code, last_error, created_at, updated_at,"
        " completed_at FROM deliveries WHERE id = $1 AND endpoint_id = $2",
        delivery_id,
        endpoint_id,
    )


async def delivery_attempts(pool: asyncpg.Pool, delivery_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT attempt, trigger, attempted_at, succeeded, status_code, response_ms,"
        " response_body, error FROM attempts WHERE delivery_id = $1 ORDER BY attempt, id",
        delivery_id,
    )


async def restart_delivery(
    conn: asyncpg.Connection, endpoint_id: str, delivery_id: str, trigger: str
) -> asyncpg.Record | None:
    """A finished delivery starts a fresh retry cycle, due now; None if not finished."""
    return await conn.fetchrow(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = clock_timestamp(),"
        " seq = seq + 1, cycle_attempts = 0, trigger = $3, completed_at = NULL,"
        " updated_at = clock_timestamp()"
        " WHERE id = $1 AND endpoint_id = $2 AND status IN ('succeeded', 'failed')"
        " RETURNING id",
        delivery_id,
        endpoint_id,
        trigger,
    )


async def recover_failed(
    conn: asyncpg.Connection, endpoint_id: str, since: datetime, until: datetime | None
) -> list[str]:
    rows = await conn.fetch(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = clock_timestamp(),"
        " seq = seq + 1, cycle_attempts = 0, trigger = 'recover', completed_at = NULL,"
        " updated_at = clock_timestamp()"
        " WHERE endpoint_id = $1 AND status = 'failed' AND NOT is_test AND created_at >= $2"
        " AND ($3::timestamptz IS NULL OR created_at < $3) RETURNING id",
        endpoint_id,
        since,
        until,
    )
    return [r["id"] for r in rows]


async def endpoint_stats(pool: asyncpg.Pool, endpoint_id: str, hours: int) -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT count(*) AS attempts, count(*) FILTER (WHERE succeeded) AS succeeded,"
        " avg(response_ms) AS avg_ms,"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY response_ms) AS p95_ms,"
        " count(DISTINCT delivery_id) AS deliveries"
        " FROM attempts WHERE endpoint_id = $1"
        " AND attempted_at >= now() - make_interval(hours => $2)",
        endpoint_id,
        hours,
    )


# ------------------------------------------------------------------ fan-out and claims


async def subscribed_endpoints_of(
    pool: asyncpg.Pool, owners: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], list[asyncpg.Record]]:
    """`subscribed_endpoints` of many (tenant, mode) pairs in one query."""
    rows = await pool.fetch(
        "SELECT tenant_id, mode, id, url, event_types, filter_campaign_ids, filter_contact_tags,"
        " retry_schedule_ms, secret_version, payload_version FROM endpoints"
        " WHERE (tenant_id, mode) IN (SELECT * FROM unnest($1::text[], $2::text[])) AND enabled",
        [t for t, _ in owners],
        [m for _, m in owners],
    )
    found: dict[tuple[str, str], list[asyncpg.Record]] = {owner: [] for owner in owners}
    for r in rows:
        found[(r["tenant_id"], r["mode"])].append(r)
    return found


async def insert_deliveries(pool: asyncpg.Pool, rows: Sequence[tuple[Any, ...]]) -> set[str]:
    """Insert new deliveries (idempotent per (endpoint, event)); returns the ids inserted.

    Row: (id, endpoint_id, tenant_id, event_id, event_type, payload, status, lease_seconds).
    """
    inserted = await pool.fetch(
        "INSERT INTO deliveries (id, endpoint_id, tenant_id, event_id, event_type, payload,"
        " status, next_attempt_at, lease_until)"
        " SELECT r.id, r.endpoint_id, r.tenant_id, r.event_id, r.event_type, r.payload,"
        " r.status, clock_timestamp(),"
        " CASE WHEN r.status = 'sending'"
        "  THEN clock_timestamp() + make_interval(secs => r.lease) END"
        " FROM unnest($1::text[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::text[],"
        " $7::text[], $8::float8[])"
        " AS r(id, endpoint_id, tenant_id, event_id, event_type, payload, status, lease)"
        " ON CONFLICT DO NOTHING RETURNING id",
        *[list(col) for col in zip(*rows, strict=True)],
    )
    return {r["id"] for r in inserted}


async def insert_test_delivery(conn: asyncpg.Connection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO deliveries (id, endpoint_id, tenant_id, event_id, event_type, payload,"
        " status, is_test, trigger, next_attempt_at, lease_until)"
        " VALUES ($1, $2, $3, NULL, $4, $5, 'sending', true, 'test', clock_timestamp(),"
        " clock_timestamp() + make_interval(secs => $6))",
        row["id"],
        row["endpoint_id"],
        row["tenant_id"],
        row["event_type"],
        row["payload"],
        row["lease_seconds"],
    )


async def claim_job(
    pool: asyncpg.Pool, delivery_id: str, seq: int, lease_seconds: float, tolerance_ms: int
) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "UPDATE deliveries d SET status = 'sending', updated_at = clock_timestamp(),"
        " lease_until = clock_timestamp() + make_interval(secs => $3)"
        " FROM endpoints e WHERE d.id = $1 AND d.seq = $2 AND e.id = d.endpoint_id"
        " AND e.enabled AND d.status IN ('pending', 'retrying')"
        " AND d.next_attempt_at <= clock_timestamp() + make_interval(secs => $4::float8 / 1000.0) "
        + _CLAIM_RETURNING,
        delivery_id,
        seq,
        lease_seconds,
        tolerance_ms,
    )


async def claim_due(
    pool: asyncpg.Pool,
    endpoint_id: str,
    limit: int,
    lease_seconds: float,
    tolerance_ms: int,
    min_overdue_seconds: float = 0.0,
) -> list[asyncpg.Record]:
    """Claim up to `limit` due deliveries of an enabled endpoint, oldest due first."""
    return await pool.fetch(
        "UPDATE deliveries d SET status = 'sending', updated_at = clock_timestamp(),"
        " lease_until = clock_timestamp() + make_interval(secs => $3)"
        " FROM endpoints e WHERE e.id = d.endpoint_id AND e.enabled AND d.id IN ("
        "  SELECT id FROM deliveries WHERE endpoint_id = $1"
        "  AND status IN ('pending', 'retrying')"
        "  AND next_attempt_at <= clock_timestamp()"
        "   + make_interval(secs => $4::float8 / 1000.0 - $5::float8)"
        "  ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) " + _CLAIM_RETURNING,
        endpoint_id,
        limit,
        lease_seconds,
        tolerance_ms,
        min_overdue_seconds,
    )


async def pause_if_disabled(pool: asyncpg.Pool, delivery_id: str) -> bool:
    """A due delivery of a disabled endpoint waits, paused, until it is re-enabled."""
    paused = await pool.fetchval(
        "UPDATE deliveries d SET status = 'paused', updated_at = clock_timestamp()"
        " FROM endpoints e WHERE d.id = $1 AND e.id = d.endpoint_id AND NOT e.enabled"
        " AND d.status IN ('pending', 'retrying') RETURNING true",
        delivery_id,
    )
    return bool(paused)


async def release_expired_leases(pool: asyncpg.Pool) -> int:
    """Deliveries whose worker died mid-attempt become due again."""
    result: str = await pool.execute(
        "UPDATE deliveries SET status = 'retrying', next_attempt_at = clock_timestamp(),"
        " seq = seq + 1, lease_until = NULL, last_error = 'worker lost during the attempt',"
        " updated_at = clock_timestamp()"
        " WHERE status = 'sending' AND lease_until < clock_timestamp()"
    )
    return int(result.split()[-1])


async def endpoints_with_overdue(pool: asyncpg.Pool, overdue_seconds: float) -> list[str]:
    rows = await pool.fetch(
        "SELECT DISTINCT endpoint_id FROM deliveries WHERE status IN ('pending', 'retrying')"
        " AND next_attempt_at <= clock_timestamp() - make_interval(secs => $1::float8)",
        overdue_seconds,
    )
    return [r["endpoint_id"] for r in rows]


async def pause_disabled_overdue(pool: asyncpg.Pool) -> int:
    result: str = await pool.execute(
        "UPDATE deliveries d SET status = 'paused', updated_at = clock_timestamp()"
        " FROM endpoints e WHERE e.id = d.endpoint_id AND NOT e.enabled"
        " AND d.status IN ('pending', 'retrying')"
    )
    return int(result.split()[-1])


# ------------------------------------------------------------------ outcomes


@dataclass(frozen=True)
class OutcomeRow:
    """One finished attempt and the delivery's next state."""

    delivery_id: str
    endpoint_id: str
    tenant_id: str
    attempt: int
    trigger: str
    attempted_at: datetime
    succeeded: bool
    status_code: int | None
    response_ms: float
    response_body: str | None
    error: str | None
    new_status: str  # succeeded | retrying | failed
    next_attempt_at: datetime | None


async def record_outcomes(conn: asyncpg.Connection, outcomes: Sequence[OutcomeRow]) -> None:
    """Log the attempts and move their deliveries on; run inside one transaction."""
    await conn.execute(
        "INSERT INTO attempts (delivery_id, endpoint_id, tenant_id, attempt, trigger,"
        " attempted_at, succeeded, status_code, response_ms, response_body, error)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[],"
        " $6::timestamptz[], $7::bool[], $8::int[], $9::float8[], $10::text[], $11::text[])",
        [o.delivery_id for o in outcomes],
        [o.endpoint_id for o in outcomes],
        [o.tenant_id for o in outcomes],
        [o.attempt for o in outcomes],
        [o.trigger for o in outcomes],
        [o.attempted_at for o in outcomes],
        [o.succeeded for o in outcomes],
        [o.status_code for o in outcomes],
        [o.response_ms for o in outcomes],
        [o.response_body for o in outcomes],
        [o.error for o in outcomes],
    )
    await conn.execute(
        "UPDATE deliveries d SET status = u.status, attempts = d.attempts + 1,"
        " cycle_attempts = d.cycle_attempts + 1,"
        " seq = d.seq + CASE WHEN u.status = 'retrying' THEN 1 ELSE 0 END,"
        " next_attempt_at = u.next_at, last_status_code = u.code, last_error = u.error,"
        " lease_until = NULL, updated_at = clock_timestamp(),"
        " completed_at = CASE WHEN u.status IN ('succeeded', 'failed')"
        "  THEN clock_timestamp() END"
        " FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::int[], $5::text[])"
        " AS u(id, status, next_at, code, error)"
        " WHERE d.id = u.id AND d.status = 'sending'",
        [o.delivery_id for o in outcomes],
        [o.new_status for o in outcomes],
        [o.next_attempt_at for o in outcomes],
        [o.status_code for o in outcomes],
        [o.error for o in outcomes],
    )


async def endpoint_succeeded(conn: asyncpg.Connection, endpoint_id: str) -> None:
    # Conditional, so a healthy endpoint's row is not locked and rewritten per attempt.
    await conn.execute(
        "UPDATE endpoints SET failing_since = NULL, consecutive_failures = 0"
        " WHERE id = $1 AND (failing_since IS NOT NULL OR consecutive_failures <> 0)",
        endpoint_id,
    )


async def endpoint_failed(
    conn: asyncpg.Connection, endpoint_id: str, failures: int, first_failure: datetime
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "UPDATE endpoints SET consecutive_failures = consecutive_failures + $2,"
        " failing_since = coalesce(failing_since, $3)"
        " WHERE id = $1 RETURNING id, tenant_id, url, enabled, failing_since,"
        " consecutive_failures",
        endpoint_id,
        failures,
        first_failure,
    )


async def disable_endpoint(
    conn: asyncpg.Connection, endpoint_id: str, reason: str
) -> asyncpg.Record | None:
    """Disable an enabled endpoint; None if it was already disabled (or is gone)."""
    return await conn.fetchrow(
        "UPDATE endpoints SET enabled = false, disabled_reason = $2, disabled_at = now(),"
        " updated_at = now() WHERE id = $1 AND enabled RETURNING id, tenant_id, mode, url",
        endpoint_id,
        reason,
    )


# ------------------------------------------------------------------ event stream store

STREAM_CHANNEL = "webhooks_stream"


@dataclass(frozen=True)
class StreamRow:
    tenant_id: str
    mode: str
    event_id: Any
    event_type: str
    campaign_id: str | None
    contact_tags: list[str]
    payload: str


_APPEND_STREAM_EVENT = (
    "WITH head AS ("
    " INSERT INTO stream_heads (tenant_id, mode, seq) VALUES ($1, $2, 1)"
    " ON CONFLICT (tenant_id, mode) DO UPDATE SET seq = stream_heads.seq + 1"
    " RETURNING seq),"
    " stored AS ("
    " INSERT INTO stream_events (tenant_id, mode, seq, event_id, event_type, campaign_id,"
    " contact_tags, payload) SELECT $1::text, $2::text, head.seq, $3::uuid, $4::text,"
    " $5::text, $6::text[], $7::text FROM head"
    " ON CONFLICT (event_id) DO NOTHING RETURNING seq)"
    " SELECT seq FROM stored, LATERAL (SELECT pg_notify($8::text, json_build_object("
    "'t', $1::text, 'm', $2::text, 's', stored.seq, 'y', $4::text, 'c', $5::text,"
    " 'g', $10::text[], 'i', $3::text, 'f', $9::text)::text)) AS n"
)


def _append_args(row: StreamRow, frame: str | None, notify_tags: list[str]) -> tuple[Any, ...]:
    return (
        row.tenant_id,
        row.mode,
        row.event_id,
        row.event_type,
        row.campaign_id,
        row.contact_tags,
        row.payload,
        STREAM_CHANNEL,
        frame,
        notify_tags,
    )


async def append_stream_event(
    pool: asyncpg.Pool, row: StreamRow, frame: str | None, notify_tags: list[str]
) -> int | None:
    """Append an event to its tenant's stream in one statement (one round trip): the next
    number of (tenant, mode), taken under the head's row lock so numbers commit in order, the
    row, and a NOTIFY on commit that wakes the API processes (with the frame when it fits).
    Returns the number, or None when the event is already stored (a redelivery; its number is
    then skipped, which readers treat like any gap: they read the store)."""
    seq = await pool.fetchval(_APPEND_STREAM_EVENT, *_append_args(row, frame, notify_tags))
    return int(seq) if seq is not None else None


# A batch in one statement: events already stored (a redelivery) are left out before
# numbering, so they skip no number; each (tenant, mode) head moves once, by its count, locked
# in (tenant, mode) order (writers in several processes never deadlock); each tenant's rows
# are numbered in the batch's order; one NOTIFY per stored row, in number order.
_APPEND_STREAM_BATCH = (
    "WITH batch AS (SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[],"
    " $5::text[], $6::text[], $7::text[], $8::text[], $9::text[]) WITH ORDINALITY"
    " AS b(tenant_id, mode, event_id, event_type, campaign_id, tags, payload, frame, note_tags,"
    " ord)),"
    " fresh AS (SELECT b.*, row_number() OVER (PARTITION BY b.tenant_id, b.mode ORDER BY b.ord)"
    " AS n FROM batch b WHERE NOT EXISTS (SELECT 1 FROM stream_events e"
    " WHERE e.event_id = b.event_id)),"
    " counts AS (SELECT tenant_id, mode, max(n) AS n FROM fresh GROUP BY tenant_id, mode),"
    " heads AS (INSERT INTO stream_heads AS h (tenant_id, mode, seq)"
    " SELECT tenant_id, mode, n FROM counts ORDER BY tenant_id, mode"
    " ON CONFLICT (tenant_id, mode) DO UPDATE SET seq = h.seq + excluded.seq"
    " RETURNING tenant_id, mode, seq AS last),"
    " stored AS (INSERT INTO stream_events (tenant_id, mode, seq, event_id, event_type,"
    " campaign_id, contact_tags, payload)"
    " SELECT f.tenant_id, f.mode, h.last - c.n + f.n, f.event_id, f.event_type, f.campaign_id,"
    " ARRAY(SELECT json_array_elements_text(f.tags::json)), f.payload"
    " FROM fresh f JOIN counts c USING (tenant_id, mode) JOIN heads h USING (tenant_id, mode)"
    " ON CONFLICT (event_id) DO NOTHING RETURNING event_id, seq)"
    " SELECT pg_notify($10::text, json_build_object('t', f.tenant_id, 'm', f.mode, 's', s.seq,"
    " 'y', f.event_type, 'c', f.campaign_id, 'g', f.note_tags::json, 'i', f.event_id::text,"
    " 'f', f.frame)::text)"
    " FROM (SELECT * FROM stored ORDER BY seq) s JOIN fresh f USING (event_id)"
    " ORDER BY f.tenant_id, f.mode, s.seq"
)


async def append_stream_events(
    pool: asyncpg.Pool, items: Sequence[tuple[StreamRow, str | None, list[str]]]
) -> None:
    """`append_stream_event` for a batch, in one statement and one commit (one round trip).
    Ids must be unique within `items`."""
    columns: list[list[Any]] = [[] for _ in range(9)]
    for row, frame, notify_tags in items:
        values = (
            row.tenant_id,
            row.mode,
            row.event_id,
            row.event_type,
            row.campaign_id,
            orjson.dumps(row.contact_tags).decode(),
            row.payload,
            frame,
            orjson.dumps(notify_tags).decode(),
        )
        for column, value in zip(columns, values, strict=True):
            column.append(value)
    await pool.execute(_APPEND_STREAM_BATCH, *columns, STREAM_CHANNEL)


async def stream_head(conn: asyncpg.Connection | asyncpg.Pool, tenant_id: str, mode: str) -> int:
    seq = await conn.fetchval(
        "SELECT seq FROM stream_heads WHERE tenant_id = $1 AND mode = $2", tenant_id, mode
    )
    return int(seq or 0)


async def stream_head_event(
    conn: asyncpg.Connection | asyncpg.Pool, tenant_id: str, mode: str
) -> tuple[int, str | None]:
    """The head's number and the id of the newest stored event at or before it (None: none
    kept), read together: a reader starting at the head names that id as its cursor."""
    row = await conn.fetchrow(
        "SELECT h.seq, (SELECT e.event_id FROM stream_events e WHERE e.tenant_id = h.tenant_id"
        " AND e.mode = h.mode AND e.seq <= h.seq ORDER BY e.seq DESC LIMIT 1) AS event_id"
        " FROM stream_heads h WHERE h.tenant_id = $1 AND h.mode = $2",
        tenant_id,
        mode,
    )
    if row is None:
        return 0, None
    event_id = row["event_id"]
    return int(row["seq"]), str(event_id) if event_id is not None else None


async def stream_seq_of(pool: asyncpg.Pool, tenant_id: str, mode: str, event_id: Any) -> int | None:
    """The number of a stored event of this tenant and mode (None: unknown or expired)."""
    seq = await pool.fetchval(
        "SELECT seq FROM stream_events WHERE event_id = $1 AND tenant_id = $2 AND mode = $3",
        event_id,
        tenant_id,
        mode,
    )
    return int(seq) if seq is not None else None


async def stream_events_after(
    pool: asyncpg.Pool, tenant_id: str, mode: str, after: int, limit: int
) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT seq, event_id, event_type, campaign_id, contact_tags, payload FROM stream_events"
        " WHERE tenant_id = $1 AND mode = $2 AND seq > $3 ORDER BY seq LIMIT $4",
        tenant_id,
        mode,
        after,
        limit,
    )


async def trim_stream(pool: asyncpg.Pool, retention_hours: float, tenant_cap: int) -> int:
    """Drop stream events older than the retention, and each tenant's beyond its cap."""
    aged = await pool.fetchval(
        "WITH gone AS (DELETE FROM stream_events WHERE stored_at < now() - make_interval("
        "secs => $1) RETURNING 1) SELECT count(*) FROM gone",
        retention_hours * 3600,
    )
    capped = await pool.fetchval(
        "WITH gone AS (DELETE FROM stream_events s USING stream_heads h"
        " WHERE s.tenant_id = h.tenant_id AND s.mode = h.mode AND s.seq <= h.seq - $1"
        " RETURNING 1) SELECT count(*) FROM gone",
        tenant_cap,
    )
    return int(aged) + int(capped)
