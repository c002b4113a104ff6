"""Every SQL statement of the delivery service (schema `delivery`).

Tenant isolation: every read or write reached from the public API filters on `tenant_id`.
Tracking tokens and ESP webhooks carry no tenant: there the message id (signed, or echoed
by the provider) names the row, and the tenant comes from the row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any, Literal, NamedTuple

import asyncpg
import orjson

from libs.common.pagination import ListParams, keyset_sql
from libs.common.tenancy import TenantScope

# Lifecycle order: a later event never moves a message back (a late "delivered" after
# "opened" is kept in the timeline but not as the status).
STATUS_ORDER = (
    "queued",
    "sending",
    "failed",
    "sent",
    "delivered",
    "opened",
    "clicked",
    "replied",
    "unsubscribed",
    "bounced",
    "complained",
)

# What a claim returns of each message (its content comes once per tenant and claim, from
# `send_policy`: a bulk's 1,000 rows share one content, which the claim used to join, return
# and decode 1,000 times).
_CLAIMED_COLUMNS = """
    m.id, m.tenant_id, m.mode, m.content_id, m.campaign_id, m.contact_id, m.step, m.to_email,
    m.variables, m.category, m.tags, m.metadata, m.track_opens, m.track_clicks, m.attempts,
    m.contact_tags, m.request_id, m.lane
"""


# The send lane of a message (migration 000222, docs/sending.md "Send lanes").
Lane = Literal["bulk", "express"]


class MessageRow(NamedTuple):
    """One `messages` row as the accept path writes it; field order is the COPY column
    order (`MESSAGE_COLUMNS`), so a row goes to `copy_messages` or `insert_message` as is."""

    id: str
    tenant_id: str
    mode: str
    content_id: str
    batch_id: str | None
    request_id: str | None
    campaign_id: str | None
    contact_id: str | None
    step: int | None
    to_email: str
    variables: dict[str, Any]
    category: str
    tags: list[str]
    metadata: dict[str, str]
    track_opens: bool
    track_clicks: bool
    status: str
    next_attempt_at: datetime
    contact_tags: list[str]
    lane: Lane = "bulk"


class TimelineRow(NamedTuple):
    """One `message_events` row (a timeline entry); field order is the COPY column order."""

    message_id: str
    tenant_id: str
    status: str
    provider: str | None
    provider_message_id: str | None
    detail: dict[str, Any]
    occurred_at: datetime


MESSAGE_COLUMNS: tuple[str, ...] = MessageRow._fields
TIMELINE_COLUMNS: tuple[str, ...] = TimelineRow._fields


# ---------------------------------------------------------------- accepting


async def insert_content(conn: asyncpg.Connection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO contents (id, tenant_id, from_email, subject, html, text_body,"
        " template_id, reply_to, literal) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        row["id"],
        row["tenant_id"],
        row["from_email"],
        row["subject"],
        row["html"],
        row["text_body"],
        row["template_id"],
        row["reply_to"],
        row.get("literal", False),
    )


async def insert_batch(conn: asyncpg.Connection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO batches (id, tenant_id, mode, campaign_id, total, batch_size,"
        " delay_between_batches) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        row["id"],
        row["tenant_id"],
        row["mode"],
        row["campaign_id"],
        row["total"],
        row["batch_size"],
        row["delay_between_batches"],
    )


async def insert_message(conn: asyncpg.Connection, row: MessageRow) -> bool:
    """One message; False when its (tenant, request_id) was accepted before."""
    placeholders = ", ".join(f"${i}" for i in range(1, len(MESSAGE_COLUMNS) + 1))
    inserted = await conn.fetchval(
        f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) VALUES ({placeholders})"
        " ON CONFLICT (tenant_id, request_id) WHERE request_id IS NOT NULL DO NOTHING"
        " RETURNING true",
        *row,
    )
    return bool(inserted)


_JSON_COLUMNS = frozenset({"variables", "metadata", "detail"})
_ARRAY_COLUMNS = frozenset({"tags", "contact_tags"})


def _array_literal(values: Sequence[str]) -> str:
    return (
        "{"
        + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
        + "}"
    )


async def _copy_rows(
    conn: asyncpg.Connection, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Many rows with one COPY (CSV: the pool's json codecs are text-only, so asyncpg's
    binary COPY cannot carry jsonb). An empty or None value is NULL: callers never store ""."""
    json_at = [i for i, c in enumerate(columns) if c in _JSON_COLUMNS]
    array_at = [i for i, c in enumerate(columns) if c in _ARRAY_COLUMNS]
    buffer = io.StringIO()
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    for row in rows:
        out = list(row)
        for i in json_at:
            out[i] = orjson.dumps(out[i]).decode()
        for i in array_at:
            out[i] = _array_literal(out[i])
        writer.writerow(out)
    await conn.copy_to_table(
        table,
        source=io.BytesIO(buffer.getvalue().encode()),
        columns=list(columns),
        format="csv",
    )


async def copy_messages(conn: asyncpg.Connection, rows: Sequence[MessageRow]) -> None:
    await _copy_rows(conn, "messages", MESSAGE_COLUMNS, rows)


async def copy_timeline(conn: asyncpg.Connection, rows: Sequence[TimelineRow]) -> None:
    if rows:
        await _copy_rows(conn, "message_events", TIMELINE_COLUMNS, rows)


async def transaction_time(conn: asyncpg.Connection) -> datetime:
    """`now()`: the current transaction's start, which column defaults also use."""
    at: datetime = await conn.fetchval("SELECT now()")
    return at


async def message_for_request(
    conn: asyncpg.Connection, tenant_id: str, request_id: str
) -> str | None:
    found: str | None = await conn.fetchval(
        "SELECT id FROM messages WHERE tenant_id = $1 AND request_id = $2", tenant_id, request_id
    )
    return found


# ---------------------------------------------------------------- sending


# Fair claiming: every tenant with queued work (a skip scan over `messages_queued_tenant`)
# offers its oldest due messages, and the claim takes them round by round (each tenant's
# first, then each tenant's second, ...), so one tenant's 100,000-message backlog never
# stands in front of another tenant's single message. With one tenant alone in the queue
# there is nobody to be fair to: the claim takes up to `$5` (a provider call's worth) instead
# of `$1`/`$3`, as many messages in five times fewer claims and provider calls. `$4` (grace)
# set: only the sweeper's backstop, messages overdue by that long (their SendBatch was lost
# or dead-lettered). `{lane}` picks the lane's messages: the bulk lane (workers) takes an
# express message only once it has waited `$6` seconds (the express process is down or
# behind); the express lane (`claim_express`) reads only `messages_queued_express`.
_CLAIM_FAIR_TEMPLATE = """
WITH RECURSIVE {no_flush}, tenants AS (
    (SELECT tenant_id FROM messages m WHERE m.status = 'queued' AND {lane}
     ORDER BY tenant_id LIMIT 1)
    UNION ALL
    SELECT (SELECT m.tenant_id FROM messages m WHERE m.status = 'queued' AND {lane}
            AND m.tenant_id > t.tenant_id ORDER BY m.tenant_id LIMIT 1)
    FROM tenants t WHERE t.tenant_id IS NOT NULL
), alone AS (
    SELECT count(*) <= 1 AS yes FROM tenants WHERE tenant_id IS NOT NULL
), offered AS (
    SELECT o.id, row_number() OVER (PARTITION BY t.tenant_id ORDER BY o.next_attempt_at, o.id)
           AS turn
    FROM tenants t CROSS JOIN LATERAL (
        SELECT m.id, m.next_attempt_at FROM messages m
        WHERE m.tenant_id = t.tenant_id AND m.status = 'queued' AND {lane}
          AND m.next_attempt_at <= now()
          AND ($4::float8 IS NULL
               OR m.next_attempt_at < now() - make_interval(secs => $4::float8))
        ORDER BY m.next_attempt_at, m.id
        LIMIT CASE WHEN (SELECT yes FROM alone) THEN $5::int ELSE $3::int END
        FOR UPDATE SKIP LOCKED
    ) o
    WHERE t.tenant_id IS NOT NULL
), chosen AS (
    SELECT id FROM offered ORDER BY turn, id
    LIMIT CASE WHEN (SELECT yes FROM alone) THEN $5::int ELSE $1::int END
)"""
# A claim's commit does not wait for the WAL flush (`synchronous_commit` off for its own
# transaction, set inside the statement: no extra round trip). Safe: a claim lost in a
# Postgres crash leaves its messages `queued`, never sent, because nothing reaches a provider
# before `call_started_at` commits synchronously, which flushes the WAL up to and including
# the claim. It spares every claim one fsync wait, behind a bulk's heavy WAL traffic too.
# Claims run as statements of their own: inside a caller's transaction the setting would
# last to that transaction's end.
_NO_FLUSH = "no_flush AS (SELECT set_config('synchronous_commit', 'off', true) AS off)"
# Every claim ends alike: the `chosen` ids leased as `sending`, returned without their content.
# The update finds them by primary key (`= ANY(ARRAY(...))`): joined to `chosen`, whose size
# the planner cannot know (a LIMIT of a CASE), it hashed a sequential scan of the whole table,
# a cost growing with the backlog on every claim.
_CLAIM_TAIL = f"""
, claimed AS (
    UPDATE messages m SET status = 'sending', attempts = attempts + 1,
        lease_until = now() + make_interval(secs => $2), call_started_at = NULL,
        updated_at = now()
    FROM no_flush WHERE m.id = ANY(ARRAY(SELECT id FROM chosen))
    RETURNING {_CLAIMED_COLUMNS}
)
SELECT * FROM claimed ORDER BY id
"""
_CLAIM_FAIR = (
    _CLAIM_FAIR_TEMPLATE.format(
        no_flush=_NO_FLUSH,
        lane="(m.lane = 'bulk' OR m.next_attempt_at < now() - make_interval(secs => $6::float8))",
    )
    + _CLAIM_TAIL
)
# The express lane's poll: `lane = 'express'` is the partial index's predicate, so with
# current statistics the planner reads only `messages_queued_express`. Statistics taken
# before a bulk's backlog arrived can make it walk `messages_due` through that backlog (55 ms
# for 100,000 messages): the lane's NOTIFY path claims by id instead (`_CLAIM_LISTED`).
_CLAIM_EXPRESS = (
    _CLAIM_FAIR_TEMPLATE.format(no_flush=_NO_FLUSH, lane="m.lane = 'express'") + _CLAIM_TAIL
)


async def claim_fair(
    conn: asyncpg.Connection,
    limit: int,
    lease_seconds: float,
    *,
    grace_seconds: float | None = None,
    per_tenant: int | None = None,
    alone: int | None = None,
    express_after: float = 0.0,
) -> list[asyncpg.Record]:
    """The bulk lane's claim: up to `limit` due queued messages, fairly across tenants
    (round-robin by turn; other workers skip what this one locks). `per_tenant` bounds what
    one tenant offers (default `limit`); `alone`: the limit when a single tenant has queued
    messages (default `limit`); `grace_seconds`: only what the sweeper owns; express-lane
    messages only once they have waited `express_after` seconds."""
    return await conn.fetch(
        _CLAIM_FAIR,
        limit,
        lease_seconds,
        per_tenant or limit,
        grace_seconds,
        alone or limit,
        express_after,
    )


async def claim_express(
    conn: asyncpg.Connection, limit: int, lease_seconds: float, *, per_tenant: int | None = None
) -> list[asyncpg.Record]:
    """The express lane's claim: up to `limit` due express messages, fairly across tenants,
    read from `messages_queued_express` only (a bulk backlog is never scanned)."""
    per = per_tenant or limit
    return await conn.fetch(_CLAIM_EXPRESS, limit, lease_seconds, per, None, per)


# The express lane's claim of the messages a NOTIFY named (by primary key: no plan can make it
# read a bulk backlog, whatever the statistics say about queued messages).
_CLAIM_LISTED = (
    f"""
WITH {_NO_FLUSH}, chosen AS (
    SELECT id FROM messages WHERE id = ANY($1::text[]) AND status = 'queued'
      AND lane = 'express' AND next_attempt_at <= now()
    ORDER BY id
    FOR UPDATE SKIP LOCKED
)"""
    + _CLAIM_TAIL
)


async def claim_listed(
    conn: asyncpg.Connection, ids: Sequence[str], lease_seconds: float
) -> list[asyncpg.Record]:
    """The express lane's claim of the listed express messages still queued and due (those
    a NOTIFY named; another claim may have taken some)."""
    return await conn.fetch(_CLAIM_LISTED, list(ids), lease_seconds)


async def accept_context(
    conn: asyncpg.Connection, scope: TenantScope, backlog: int | None, emails: Sequence[str]
) -> tuple[datetime, bool, dict[str, list[str]]]:
    """What an accept reads, in one round trip (each is one more wait for a busy server's
    CPU, on an express send's path too): the transaction time (`now()`, which column defaults
    also use); whether the tenant has `backlog` or more queued messages (reading at most
    `backlog` entries of `messages_queued_tenant`; None: not asked, False); the known tags of
    `emails` by lower-cased address."""
    row = await conn.fetchrow(
        "SELECT now() AS now,"
        " CASE WHEN $3::int IS NULL THEN false ELSE (SELECT count(*) FROM (SELECT 1 FROM"
        "  messages WHERE tenant_id = $1 AND status = 'queued' LIMIT $3::int) q) >= $3::int"
        " END AS backlogged,"
        " CASE WHEN cardinality($4::text[]) = 0 THEN '{}'::jsonb ELSE (SELECT"
        "  coalesce(jsonb_object_agg(email_key, to_jsonb(tags)), '{}') FROM contact_tags"
        "  WHERE tenant_id = $1 AND mode = $2 AND email_key = ANY($4::text[])) END AS tags",
        scope.tenant_id,
        scope.mode,
        backlog,
        [e.lower() for e in emails],
    )
    return row["now"], bool(row["backlogged"]), row["tags"]


EXPRESS_CHANNEL = "delivery_express"
# Ids per NOTIFY payload (Postgres refuses a payload of 8,000 bytes or more; ids are ~30).
EXPRESS_IDS_PER_NOTIFY = 200


async def wake_express(conn: asyncpg.Connection, ids: Sequence[str]) -> None:
    """NOTIFY the express lane with the messages' ids (comma-separated); Postgres delivers
    it when (and only if) the caller's transaction commits."""
    for lo in range(0, len(ids), EXPRESS_IDS_PER_NOTIFY):
        payload = ",".join(ids[lo : lo + EXPRESS_IDS_PER_NOTIFY])
        await conn.execute("SELECT pg_notify($1, $2)", EXPRESS_CHANNEL, payload)


async def claim_due(
    conn: asyncpg.Connection, limit: int, lease_seconds: float, grace_seconds: float
) -> list[asyncpg.Record]:
    """The sweeper's backstop: claim queued messages overdue by `grace_seconds` (their
    SendBatch was dead-lettered, or no worker consumed it), fairly across tenants as every
    claim. Every other send, delayed chunks and retries included, starts from its own
    SendBatch (`commands.py`)."""
    return await claim_fair(conn, limit, lease_seconds, grace_seconds=grace_seconds)


async def waiting_among(conn: asyncpg.Connection, ids: Sequence[str]) -> bool:
    """Whether any listed message is still queued and due (a SendBatch not done yet)."""
    found = await conn.fetchval(
        "SELECT true FROM messages WHERE id = ANY($1::text[]) AND status = 'queued'"
        " AND next_attempt_at <= now() LIMIT 1",
        list(ids),
    )
    return bool(found)


async def mark_call_started(conn: asyncpg.Connection, ids: Sequence[str], provider: str) -> None:
    await conn.execute(
        "UPDATE messages SET call_started_at = now(), provider = $2"
        " WHERE id = ANY($1::text[]) AND status = 'sending'",
        list(ids),
        provider,
    )


async def mark_sent(
    conn: asyncpg.Connection,
    ids: Sequence[str],
    provider_ids: Sequence[str | None],
    provider: str,
    at: datetime,
) -> None:
    """Accepted by the provider at `at`: the row is the message's `sent` record (`sent_at`,
    `provider`, `provider_message_id`; the timeline's `sent` entry, `timeline_of`)."""
    await conn.execute(
        "UPDATE messages m SET status = 'sent', provider = $3, provider_message_id = u.pid,"
        " sent_at = $4, lease_until = NULL, last_error = NULL, updated_at = now()"
        " FROM unnest($1::text[], $2::text[]) AS u(id, pid)"
        " WHERE m.id = u.id AND m.status = 'sending'",
        list(ids),
        list(provider_ids),
        provider,
        at,
    )


async def mark_retry(
    conn: asyncpg.Connection,
    ids: Sequence[str],
    delays: Sequence[float],
    reasons: Sequence[str],
    *,
    count_attempt: bool = True,
    unstarted_only: bool = False,
) -> None:
    """Back to the queue after a delay; `unstarted_only` spares claims whose provider
    call had started (their outcome is unknown: they must not be sent again)."""
    await conn.execute(
        "UPDATE messages m SET status = 'queued', lease_until = NULL, call_started_at = NULL,"
        " next_attempt_at = now() + make_interval(secs => u.delay), last_error = u.reason,"
        " attempts = attempts - CASE WHEN $4 THEN 0 ELSE 1 END, updated_at = now()"
        " FROM unnest($1::text[], $2::float8[], $3::text[]) AS u(id, delay, reason)"
        " WHERE m.id = u.id AND m.status = 'sending'"
        " AND (NOT $5 OR m.call_started_at IS NULL)",
        list(ids),
        list(delays),
        list(reasons),
        count_attempt,
        unstarted_only,
    )


async def mark_failed(
    conn: asyncpg.Connection, ids: Sequence[str], reasons: Sequence[str], provider: str | None
) -> None:
    await conn.execute(
        "UPDATE messages m SET status = 'failed', lease_until = NULL, last_error = u.reason,"
        " provider = COALESCE($3, m.provider), updated_at = now()"
        " FROM unnest($1::text[], $2::text[]) AS u(id, reason)"
        " WHERE m.id = u.id AND m.status = 'sending'",
        list(ids),
        list(reasons),
        provider,
    )


async def requeue_unsent_stale(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Claims of vanished workers that never reached the provider: safe to send again
    (id, tenant_id, mode of each, for their SendBatch)."""
    return await conn.fetch(
        "UPDATE messages SET status = 'queued', lease_until = NULL, attempts = attempts - 1,"
        " next_attempt_at = now(), updated_at = now() WHERE status = 'sending'"
        " AND lease_until < now()"
        " AND call_started_at IS NULL RETURNING id, tenant_id, mode"
    )


async def fail_uncertain_stale(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Claims of vanished workers killed during the provider call: never resent."""
    return await conn.fetch(
        "WITH s AS (SELECT id FROM messages WHERE status = 'sending' AND lease_until < now()"
        " AND call_started_at IS NOT NULL FOR UPDATE SKIP LOCKED)"
        " UPDATE messages m SET status = 'failed', lease_until = NULL,"
        " last_error = 'provider_outcome_unknown', updated_at = now() FROM s WHERE m.id = s.id"
        " RETURNING m.id, m.tenant_id, m.mode, m.to_email, m.campaign_id, m.contact_id,"
        " m.step, m.provider, m.contact_tags"
    )


# ---------------------------------------------------------------- policy


async def add_suppression(
    conn: asyncpg.Connection, tenant_id: str, email: str, reason: str, message_id: str | None
) -> bool:
    added = await conn.fetchval(
        "INSERT INTO suppressions (tenant_id, email, reason, message_id) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING RETURNING true",
        tenant_id,
        email.lower(),
        reason,
        message_id,
    )
    return bool(added)


async def delete_suppression(conn: asyncpg.Connection, tenant_id: str, email: str) -> bool:
    result: str = await conn.execute(
        "DELETE FROM suppressions WHERE tenant_id = $1 AND email = $2", tenant_id, email.lower()
    )
    return result.endswith(" 1")


async def list_suppressions(
    conn: asyncpg.Connection,
    tenant_id: str,
    params: ListParams,
    *,
    reason: str | None,
    email: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
) -> list[asyncpg.Record]:
    args: list[Any] = [tenant_id, reason, email, created_after, created_before]
    # The primary key (tenant_id, email) orders by address; created_at scans the tenant's rows.
    keyset, tail = keyset_sql(
        params, {"email": "email", "created_at": "created_at"}, args, id_column="email"
    )
    return await conn.fetch(
        "SELECT email, reason, message_id, created_at FROM suppressions WHERE tenant_id = $1"
        " AND ($2::text IS NULL OR reason = $2) AND ($3::text IS NULL OR email = lower($3))"
        " AND ($4::timestamptz IS NULL OR created_at >= $4)"
        " AND ($5::timestamptz IS NULL OR created_at < $5)"
        f"{' AND ' + keyset if keyset else ''} {tail}",
        *args,
    )


async def take_daily_sends(
    conn: asyncpg.Connection, scope: TenantScope, day: date, n: int, limit: int
) -> int | None:
    """Count `n` sends on `day` unless that passes `limit`: the new count, or None (nothing
    counted). Row-locked until the caller's transaction ends, so concurrent accepts of one
    tenant queue here and can never pass the quota together; a rolled-back accept un-counts."""
    count: int | None = await conn.fetchval(
        "INSERT INTO daily_sends (tenant_id, mode, day, sends)"
        " SELECT $1::text, $2::text, $3::date, $4::int"
        " WHERE $4::int <= $5::int ON CONFLICT (tenant_id, mode, day) DO UPDATE"
        " SET sends = daily_sends.sends + excluded.sends"
        " WHERE daily_sends.sends + excluded.sends <= $5::int RETURNING sends",
        scope.tenant_id,
        scope.mode,
        day,
        n,
        limit,
    )
    return count


async def daily_sends(conn: asyncpg.Connection, scope: TenantScope, day: date) -> int:
    count: int | None = await conn.fetchval(
        "SELECT sends FROM daily_sends WHERE tenant_id = $1 AND mode = $2 AND day = $3",
        scope.tenant_id,
        scope.mode,
        day,
    )
    return count or 0


async def first_day_with_room(
    conn: asyncpg.Connection, scope: TenantScope, start: date, days: int, n: int, limit: int
) -> date | None:
    """The first of `days` days from `start` whose count leaves room for `n` more."""
    found: date | None = await conn.fetchval(
        "SELECT d::date FROM generate_series($3::date, $3::date + ($4::int - 1),"
        " interval '1 day') d"
        " LEFT JOIN daily_sends s ON s.tenant_id = $1 AND s.mode = $2 AND s.day = d::date"
        " WHERE coalesce(s.sends, 0) + $5::int <= $6::int ORDER BY d LIMIT 1",
        scope.tenant_id,
        scope.mode,
        start,
        days,
        n,
        limit,
    )
    return found


async def defer_message(
    conn: asyncpg.Connection, message_id: str, due: datetime, reason: str
) -> None:
    await conn.execute(
        "UPDATE messages SET next_attempt_at = $2, last_error = $3 WHERE id = $1",
        message_id,
        due,
        reason,
    )


async def tenant_plan(conn: asyncpg.Connection, tenant_id: str) -> str | None:
    plan: str | None = await conn.fetchval(
        "SELECT plan FROM tenant_plans WHERE tenant_id = $1", tenant_id
    )
    return plan


async def learn_tenant_plan(
    conn: asyncpg.Connection | asyncpg.Pool,
    tenant_id: str,
    plan: str,
    at: datetime,
    *,
    only_if_unknown: bool = False,
) -> None:
    """Record a tenant's plan unless a later fact was applied (or, `only_if_unknown`, any)."""
    await conn.execute(
        "INSERT INTO tenant_plans (tenant_id, plan, event_time) VALUES ($1, $2, $3)"
        " ON CONFLICT (tenant_id) DO UPDATE SET plan = excluded.plan,"
        " event_time = excluded.event_time"
        " WHERE NOT $4 AND tenant_plans.event_time <= excluded.event_time",
        tenant_id,
        plan,
        at,
        only_if_unknown,
    )


class ClaimedContent(NamedTuple):
    """A claimed message's content, as `send_policy` reads it once per tenant and claim."""

    from_email: str
    subject: str
    html: str | None
    text_body: str | None
    reply_to: str | None
    literal: bool


class SendPolicy(NamedTuple):
    """What a send of one tenant's claimed messages checks and needs (`send_policy`)."""

    suppressed: dict[str, str]
    rules: list[dict[str, Any]]
    caps: list[dict[str, Any]]
    contents: dict[str, ClaimedContent]


async def send_policy(
    conn: asyncpg.Connection, tenant_id: str, emails: Iterable[str], content_ids: Iterable[str]
) -> SendPolicy:
    """What a send of the tenant's claimed messages checks, in one round trip: the
    suppressed addresses among `emails` (lowercased -> reason), the routing rules (as
    `routing_rules`), the sending caps (as `sending_caps`), and the tenant's contents among
    `content_ids` (each once, however many messages share it)."""
    row = await conn.fetchrow(
        "SELECT"
        " (SELECT coalesce(jsonb_object_agg(email, reason), '{}') FROM suppressions"
        "  WHERE tenant_id = $1 AND email = ANY($2::text[])) AS suppressed,"
        " (SELECT coalesce(jsonb_agg(r ORDER BY r.priority, r.created_at), '[]') FROM"
        "  (SELECT id, category, sending_domain, primary_provider, secondary_provider, priority,"
        "   created_at FROM routing_rules WHERE tenant_id = $1) r) AS rules,"
        " (SELECT coalesce(jsonb_agg(c), '[]') FROM"
        "  (SELECT scope, value, daily_limit FROM sending_caps WHERE tenant_id = $1) c) AS caps,"
        " (SELECT coalesce(jsonb_object_agg(id, jsonb_build_array(from_email, subject, html,"
        "   text_body, reply_to, literal)), '{}') FROM contents"
        "  WHERE tenant_id = $1 AND id = ANY($3::text[])) AS contents",
        tenant_id,
        [e.lower() for e in emails],
        list(set(content_ids)),
    )
    contents = {k: ClaimedContent(*v) for k, v in row["contents"].items()}
    return SendPolicy(row["suppressed"], row["rules"], row["caps"], contents)


async def routing_rules(conn: asyncpg.Connection, tenant_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, category, sending_domain, primary_provider, secondary_provider, priority"
        " FROM routing_rules WHERE tenant_id = $1 ORDER BY priority, created_at",
        tenant_id,
    )


async def insert_routing_rule(conn: asyncpg.Connection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO routing_rules (id, tenant_id, category, sending_domain, primary_provider,"
        " secondary_provider, priority) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        row["id"],
        row["tenant_id"],
        row["category"],
        row["sending_domain"],
        row["primary_provider"],
        row["secondary_provider"],
        row["priority"],
    )


async def delete_routing_rule(conn: asyncpg.Connection, tenant_id: str, rule_id: str) -> bool:
    result: str = await conn.execute(
        "DELETE FROM routing_rules WHERE tenant_id = $1 AND id = $2", tenant_id, rule_id
    )
    return result.endswith(" 1")


async def sending_caps(conn: asyncpg.Connection, tenant_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT scope, value, daily_limit FROM sending_caps WHERE tenant_id = $1", tenant_id
    )


async def upsert_sending_cap(
    conn: asyncpg.Connection, tenant_id: str, scope: str, value: str, daily_limit: int
) -> None:
    await conn.execute(
        "INSERT INTO sending_caps (tenant_id, scope, value, daily_limit) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (tenant_id, scope, value) DO UPDATE SET daily_limit = EXCLUDED.daily_limit",
        tenant_id,
        scope,
        value.lower(),
        daily_limit,
    )


# ---------------------------------------------------------------- lifecycle events


async def message_by_id(conn: asyncpg.Connection, message_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, tenant_id, mode, to_email, campaign_id, contact_id, step, status, provider,"
        " provider_message_id, contact_tags FROM messages WHERE id = $1",
        message_id,
    )


async def message_by_provider_id(
    conn: asyncpg.Connection, provider: str, provider_message_id: str, recipient: str | None
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, tenant_id, mode, to_email, campaign_id, contact_id, step, status, provider,"
        " provider_message_id, contact_tags FROM messages"
        " WHERE provider_message_id = $1 AND provider = $2"
        " AND ($3::text IS NULL OR lower(to_email) = lower($3)) ORDER BY created_at DESC LIMIT 1",
        provider_message_id,
        provider,
        recipient,
    )


async def advance_status(conn: asyncpg.Connection, message_id: str, status: str) -> None:
    await conn.execute(
        "UPDATE messages SET status = $2, updated_at = now() WHERE id = $1"
        " AND array_position($3::text[], status) < array_position($3::text[], $2)",
        message_id,
        status,
        list(STATUS_ORDER),
    )


async def count_open(conn: asyncpg.Connection, message_id: str) -> int:
    """Count an open; returns the message's opens so far (1: its first)."""
    n: int = await conn.fetchval(
        "UPDATE messages SET open_count = open_count + 1 WHERE id = $1 RETURNING open_count",
        message_id,
    )
    return n


async def count_click(conn: asyncpg.Connection, message_id: str, url: str) -> bool:
    """Count a click; True when it is the first click of `url` in this message."""
    earlier = await conn.fetchval(
        "SELECT true FROM message_events WHERE message_id = $1 AND status = 'clicked'"
        " AND detail->>'url' = $2 LIMIT 1",
        message_id,
        url,
    )
    await conn.execute(
        "UPDATE messages SET click_count = click_count + 1 WHERE id = $1", message_id
    )
    return not earlier


async def claim_provider_event(conn: asyncpg.Connection, provider: str, key: str) -> bool:
    claimed = await conn.fetchval(
        "INSERT INTO provider_events (provider, event_key) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING RETURNING true",
        provider,
        key,
    )
    return bool(claimed)


# ---------------------------------------------------------------- reading


async def get_message(
    conn: asyncpg.Connection, scope: TenantScope, message_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT m.*, c.from_email, c.subject FROM messages m JOIN contents c"
        " ON c.id = m.content_id WHERE m.tenant_id = $1 AND m.id = $2 AND m.mode = $3",
        scope.tenant_id,
        message_id,
        scope.mode,
    )


async def timeline(conn: asyncpg.Connection, message_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT status, provider, provider_message_id, detail, occurred_at FROM message_events"
        " WHERE message_id = $1 ORDER BY occurred_at, id",
        message_id,
    )


async def unique_clicks(conn: asyncpg.Connection, message_id: str) -> int:
    n: int = await conn.fetchval(
        "SELECT count(DISTINCT detail->>'url') FROM message_events"
        " WHERE message_id = $1 AND status = 'clicked'",
        message_id,
    )
    return n


async def list_messages(
    conn: asyncpg.Connection,
    scope: TenantScope,
    params: ListParams,
    *,
    status: str | None,
    campaign_id: str | None,
    batch_id: str | None,
    recipient: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
) -> list[asyncpg.Record]:
    args: list[Any] = [
        scope.tenant_id,
        status,
        campaign_id,
        batch_id,
        recipient,
        created_from,
        created_to,
        scope.mode,
    ]
    keyset, tail = keyset_sql(params, {"created_at": "m.created_at"}, args, id_column="m.id")
    return await conn.fetch(
        "SELECT m.id, m.to_email, m.status, m.category, m.campaign_id, m.contact_id, m.batch_id,"
        " m.provider, m.provider_message_id, m.attempts, m.last_error, m.open_count,"
        " m.click_count, m.created_at, m.updated_at, m.mode, c.from_email, c.subject"
        " FROM messages m JOIN contents c ON c.id = m.content_id WHERE m.tenant_id = $1"
        " AND ($2::text IS NULL OR m.status = $2) AND ($3::text IS NULL OR m.campaign_id = $3)"
        " AND ($4::text IS NULL OR m.batch_id = $4)"
        " AND ($5::text IS NULL OR lower(m.to_email) = lower($5))"
        " AND ($6::timestamptz IS NULL OR m.created_at >= $6)"
        " AND ($7::timestamptz IS NULL OR m.created_at < $7)"
        f" AND m.mode = $8{' AND ' + keyset if keyset else ''} {tail}",
        *args,
    )


# ---------------------------------------------------------------- contact tags (read model)


class ContactTagsRow(NamedTuple):
    """One contact event for the `contact_tags` read model; field order is the statement's."""

    tenant_id: str
    mode: str
    email: str
    contact_id: str
    tags: list[str]
    event_time: datetime


async def apply_contact_tags(conn: asyncpg.Connection, rows: Sequence[ContactTagsRow]) -> None:
    """Upsert contacts' tags in order (one round trip), each unless a later event of that
    contact was applied already."""
    await conn.executemany(
        "INSERT INTO contact_tags (tenant_id, mode, email_key, contact_id, tags, event_time)"
        " VALUES ($1, $2, lower($3), $4, $5, $6) ON CONFLICT (tenant_id, mode, email_key)"
        " DO UPDATE SET contact_id = excluded.contact_id, tags = excluded.tags,"
        " event_time = excluded.event_time WHERE contact_tags.event_time <= excluded.event_time",
        rows,
    )


# ---------------------------------------------------------------- sending settings


async def sending_settings(
    conn: asyncpg.Connection | asyncpg.Pool, scope: TenantScope
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT default_from, default_from_name, default_reply_to, updated_at"
        " FROM sending_settings WHERE tenant_id = $1 AND mode = $2",
        scope.tenant_id,
        scope.mode,
    )


async def put_sending_settings(
    conn: asyncpg.Connection, scope: TenantScope, values: dict[str, Any]
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        "INSERT INTO sending_settings (tenant_id, mode, default_from, default_from_name,"
        " default_reply_to) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, mode) DO UPDATE"
        " SET default_from = excluded.default_from,"
        " default_from_name = excluded.default_from_name,"
        " default_reply_to = excluded.default_reply_to, updated_at = now()"
        " RETURNING default_from, default_from_name, default_reply_to, updated_at",
        scope.tenant_id,
        scope.mode,
        values["default_from"],
        values["default_from_name"],
        values["default_reply_to"],
    )
    return row


# ---------------------------------------------------------------- campaign contents (read model)


async def apply_campaign_content(
    conn: asyncpg.Connection, scope: TenantScope, data: dict[str, Any], at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO campaign_contents (tenant_id, mode, campaign_id, subject, html, text_body,"
        " template_id, from_email, from_name, reply_to, category, track_opens, track_clicks,"
        " event_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        " ON CONFLICT (tenant_id, mode, campaign_id) DO UPDATE SET subject = excluded.subject,"
        " html = excluded.html, text_body = excluded.text_body,"
        " template_id = excluded.template_id, from_email = excluded.from_email,"
        " from_name = excluded.from_name, reply_to = excluded.reply_to,"
        " category = excluded.category, track_opens = excluded.track_opens,"
        " track_clicks = excluded.track_clicks, event_time = excluded.event_time"
        " WHERE campaign_contents.event_time <= excluded.event_time",
        scope.tenant_id,
        scope.mode,
        data["campaign_id"],
        data.get("subject"),
        data.get("html"),
        data.get("text"),
        data.get("template_id"),
        data.get("from_email"),
        data.get("from_name"),
        data.get("reply_to"),
        data.get("category") or "marketing",
        data.get("track_opens", True),
        data.get("track_clicks", True),
        at,
    )


async def campaign_content(
    conn: asyncpg.Connection, scope: TenantScope, campaign_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM campaign_contents WHERE tenant_id = $1 AND mode = $2 AND campaign_id = $3",
        scope.tenant_id,
        scope.mode,
        campaign_id,
    )


async def get_batch(
    conn: asyncpg.Connection, scope: TenantScope, batch_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, campaign_id, total, batch_size, delay_between_batches, created_at"
        " FROM batches WHERE id = $1 AND tenant_id = $2 AND mode = $3",
        batch_id,
        scope.tenant_id,
        scope.mode,
    )


async def batch_status_counts(conn: asyncpg.Connection, batch_id: str) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT status, count(*) AS n FROM messages WHERE batch_id = $1 GROUP BY status",
        batch_id,
    )
    return {r["status"]: int(r["n"]) for r in rows}
