"""Every SQL statement of the campaigns service (schema `campaigns`, asyncpg).

Every query on tenant data filters by the owner (tenant id and live/test mode), so another
tenant's row, or the other mode's, is simply not found.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
import orjson

from libs.common.pagination import Keyset, ListParams, keyset_sql
from libs.common.tenancy import TenantScope

CONTACT_COLUMNS = (
    "id, email, first_name, last_name, company, tags, custom_fields, status, created_at, updated_at"
)
TEMPLATE_COLUMNS = "id, name, key, subject, html, text, variables, created_at, updated_at"
CAMPAIGN_COLUMNS = (
    "id, tenant_id, mode, name, status, from_email, from_name, reply_to, steps, recipients,"
    " settings, schedule, daily_cap, spacing_min_seconds, spacing_max_seconds, scheduled_at,"
    " next_run_at, recipient_count, started_at, completed_at, created_at, updated_at, sent_at"
)
# Sort keys of the contact list: public name -> indexed column.
CONTACT_SORT_COLUMNS = {
    "created_at": "created_at",
    "updated_at": "updated_at",
    "email": "email_key",
}
# Templates and campaigns: only creation time is indexed (tenant_id, mode, created_at, id).
CREATED_SORT = {"created_at": "created_at"}


# ---------------------------------------------------------------- contacts


async def insert_contact(
    conn: asyncpg.Connection, owner: TenantScope, contact_id: UUID, fields: dict[str, Any]
) -> asyncpg.Record | None:
    """The new contact, or None when the tenant already has this email."""
    return await conn.fetchrow(
        "INSERT INTO contacts (id, tenant_id, mode, email, first_name, last_name, company, tags,"
        " custom_fields, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        f" ON CONFLICT (tenant_id, mode, email_key) DO NOTHING RETURNING {CONTACT_COLUMNS}",
        contact_id,
        owner.tenant_id,
        owner.mode,
        fields["email"],
        fields.get("first_name"),
        fields.get("last_name"),
        fields.get("company"),
        fields.get("tags") or [],
        fields.get("custom_fields") or {},
        fields.get("status") or "active",
    )


async def get_contact(
    conn: asyncpg.Connection | asyncpg.Pool,
    owner: TenantScope,
    contact_id: UUID,
    *,
    lock: bool = False,
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {CONTACT_COLUMNS} FROM contacts WHERE id = $1 AND tenant_id = $2 AND mode = $3"
        + (" FOR UPDATE" if lock else ""),
        contact_id,
        owner.tenant_id,
        owner.mode,
    )


_CONTACT_UPDATABLE = (
    "email",
    "first_name",
    "last_name",
    "company",
    "tags",
    "custom_fields",
    "status",
)


async def update_contact(
    conn: asyncpg.Connection, owner: TenantScope, contact_id: UUID, changes: dict[str, Any]
) -> asyncpg.Record | None:
    """Apply `changes` (column -> value); raises UniqueViolationError on a taken email."""
    columns = [c for c in _CONTACT_UPDATABLE if c in changes]
    sets = ", ".join(f"{c} = ${i + 4}" for i, c in enumerate(columns))
    return await conn.fetchrow(
        f"UPDATE contacts SET {sets}{', ' if sets else ''}updated_at = clock_timestamp()"
        f" WHERE id = $1 AND tenant_id = $2 AND mode = $3 RETURNING {CONTACT_COLUMNS}",
        contact_id,
        owner.tenant_id,
        owner.mode,
        *[changes[c] for c in columns],
    )


async def delete_contact(
    conn: asyncpg.Connection, owner: TenantScope, contact_id: UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "DELETE FROM contacts WHERE id = $1 AND tenant_id = $2 AND mode = $3"
        " RETURNING id, email, tags",
        contact_id,
        owner.tenant_id,
        owner.mode,
    )


@dataclass
class TemplateFilter:
    name: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass
class CampaignFilter:
    status: str | None = None
    name: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass
class ContactFilter:
    email: str | None = None
    tags: list[str] | None = None
    status: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    # (key, [accepted JSON values]): a value given as "5" matches both "5" and 5.
    custom_fields: list[tuple[str, list[Any]]] | None = None


async def list_contacts(
    conn: asyncpg.Pool, owner: TenantScope, flt: ContactFilter, params: ListParams
) -> list[asyncpg.Record]:
    """Up to `limit + 1` contacts (the extra row tells `has_more`)."""
    where, args = _contact_where(owner, flt)
    return await _list(conn, "contacts", CONTACT_COLUMNS, where, args, params, CONTACT_SORT_COLUMNS)


async def _list(
    conn: asyncpg.Pool,
    table: str,
    columns: str,
    where: list[str],
    args: list[Any],
    params: ListParams,
    sort_columns: dict[str, str],
) -> list[asyncpg.Record]:
    condition, tail = keyset_sql(params, sort_columns, args, id_type="uuid")
    if condition:
        where = [*where, condition]
    column = sort_columns[params.sort_by]
    return await conn.fetch(
        f"SELECT {columns}, {column} AS sort_value FROM {table} WHERE {' AND '.join(where)} {tail}",
        *args,
    )


async def count_contacts(conn: asyncpg.Pool, owner: TenantScope, flt: ContactFilter) -> int:
    where, args = _contact_where(owner, flt)
    n: int = await conn.fetchval(
        f"SELECT count(*) FROM contacts WHERE {' AND '.join(where)}", *args
    )
    return n


def _contact_where(owner: TenantScope, flt: ContactFilter) -> tuple[list[str], list[Any]]:
    where = ["tenant_id = $1", "mode = $2"]
    args: list[Any] = [owner.tenant_id, owner.mode]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if flt.email is not None:
        where.append(f"email_key = lower({arg(flt.email)})")
    if flt.tags:
        where.append(f"tags @> {arg(flt.tags)}::text[]")
    if flt.status is not None:
        where.append(f"status = {arg(flt.status)}")
        if flt.status != "active":
            # Spelled out so that even a generic plan may use contacts_suppressed_idx.
            where.append("status <> 'active'")
    if flt.created_after is not None:
        where.append(f"created_at >= {arg(flt.created_after)}")
    if flt.created_before is not None:
        where.append(f"created_at < {arg(flt.created_before)}")
    for key, values in flt.custom_fields or []:
        alternatives = " OR ".join(f"custom_fields @> {arg({key: v})}::jsonb" for v in values)
        where.append(f"({alternatives})")
    return where, args


class ImportRow(NamedTuple):
    id: UUID | str  # text is cheaper to make and asyncpg sends it as uuid
    email: str
    first_name: str | None
    last_name: str | None
    company: str | None
    tags: list[str]
    custom_fields: Any  # a JSON value, or orjson.Fragment of already serialised JSON
    status: str | None


def _jsonb_to_wire(value: Any) -> bytes:
    return b"\x01" + orjson.dumps(value)  # jsonb binary format: version 1, then JSON text


def _jsonb_from_wire(data: bytes) -> Any:
    return orjson.loads(data[1:])


@contextlib.asynccontextmanager
async def _binary_jsonb(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """asyncpg's COPY takes binary codecs only, and the pool's jsonb codec is text: use the
    same mapping (Python value <-> JSON by orjson) in binary form, then put the pool's back.
    Should the restore not run (cancelled), the connection still maps jsonb the same way."""
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=_jsonb_to_wire,
        decoder=_jsonb_from_wire,
        format="binary",
    )
    try:
        yield
    finally:
        if not conn.is_closed():
            await conn.set_type_codec(
                "jsonb",
                schema="pg_catalog",
                encoder=lambda v: orjson.dumps(v).decode(),
                decoder=orjson.loads,
            )


async def existing_contact_emails(
    conn: asyncpg.Connection, owner: TenantScope, emails: Sequence[str]
) -> set[str]:
    """Which of `emails` (returned as given) the owner already has, in any case."""
    rows = await conn.fetch(
        "SELECT e.email FROM unnest($3::text[]) AS e(email) WHERE EXISTS (SELECT 1 FROM"
        " contacts c WHERE c.tenant_id = $1 AND c.mode = $2 AND c.email_key = lower(e.email))",
        owner.tenant_id,
        owner.mode,
        list(emails),
    )
    return {r["email"] for r in rows}


async def copy_new_contacts(
    conn: asyncpg.Connection, owner: TenantScope, rows: AsyncIterable[ImportRow]
) -> bool:
    """COPY contacts the owner does not have straight into `contacts` (no staging table, no
    ON CONFLICT: the import's fast path), streaming `rows` as they come. False, with nothing
    written, when one of the addresses is taken (by a concurrent write); the caller then
    merges instead."""

    async def records() -> AsyncIterator[tuple[Any, ...]]:
        async for r in rows:
            yield (owner.tenant_id, owner.mode, *r[:7], r.status or "active")

    async with _binary_jsonb(conn):
        try:
            async with conn.transaction():  # a savepoint: a conflict undoes only this COPY
                await conn.copy_records_to_table(
                    "contacts", records=records(), columns=["tenant_id", "mode", *ImportRow._fields]
                )
        except asyncpg.UniqueViolationError:
            return False
    return True


async def upsert_contacts(
    conn: asyncpg.Connection, owner: TenantScope, rows: Sequence[ImportRow]
) -> list[asyncpg.Record]:
    """Insert or merge `rows` (emails unique among them): COPY into a temporary table, then
    one INSERT ... ON CONFLICT. Present fields overwrite, tags and custom fields merge, and a
    suppressed contact (unsubscribed, bounced, complained) never becomes active again.
    Returns (id, email, tags, inserted) per row, tags as merged."""
    async with _binary_jsonb(conn):
        await conn.execute(
            "CREATE TEMPORARY TABLE contact_import (id uuid, email text, first_name text,"
            " last_name text, company text, tags text[], custom_fields jsonb, status text)"
            " ON COMMIT DROP"
        )
        await conn.copy_records_to_table(
            "contact_import", records=rows, columns=list(ImportRow._fields)
        )
    return await conn.fetch(
        "INSERT INTO contacts AS c (id, tenant_id, mode, email, first_name, last_name, company,"
        " tags, custom_fields, status)"
        " SELECT id, $1, $2, email, first_name, last_name, company, tags,"
        " custom_fields, coalesce(status, 'active') FROM contact_import"
        " ON CONFLICT (tenant_id, mode, email_key) DO UPDATE SET"
        " first_name = coalesce(EXCLUDED.first_name, c.first_name),"
        " last_name = coalesce(EXCLUDED.last_name, c.last_name),"
        " company = coalesce(EXCLUDED.company, c.company),"
        " tags = CASE WHEN EXCLUDED.tags <@ c.tags THEN c.tags ELSE"
        " ARRAY(SELECT DISTINCT unnest(c.tags || EXCLUDED.tags)) END,"
        " custom_fields = c.custom_fields || EXCLUDED.custom_fields,"
        " status = CASE WHEN c.status = 'active' THEN EXCLUDED.status ELSE c.status END,"
        " updated_at = clock_timestamp()"
        " RETURNING c.id, c.email, c.tags, (c.xmax = 0) AS inserted",
        owner.tenant_id,
        owner.mode,
    )


_STATUS_RANK = (
    "CASE status WHEN 'active' THEN 0 WHEN 'bounced' THEN 1 WHEN 'unsubscribed' THEN 2 ELSE 3 END"
)


async def suppress_contacts(
    conn: asyncpg.Connection,
    tenant_id: str,
    new_status: str,
    rank: int,
    *,
    contact_id: UUID | None,
    email: str | None,
) -> list[asyncpg.Record]:
    """Move matching contacts to `new_status` when it outranks their current status (active
    < bounced < unsubscribed < complained): replays and late events never weaken it."""
    target = "id = $4" if contact_id is not None else "email_key = lower($4)"
    return await conn.fetch(
        f"UPDATE contacts SET status = $2, updated_at = clock_timestamp()"
        f" WHERE tenant_id = $1 AND {target} AND {_STATUS_RANK} < $3"
        " RETURNING id, mode, email, tags",
        tenant_id,
        new_status,
        rank,
        contact_id if contact_id is not None else email,
    )


# ---------------------------------------------------------------- templates


async def insert_template(
    conn: asyncpg.Pool | asyncpg.Connection,
    owner: TenantScope,
    template_id: UUID,
    f: dict[str, Any],
) -> asyncpg.Record:
    row = await conn.fetchrow(
        "INSERT INTO templates (id, tenant_id, mode, name, subject, html, text, variables, key)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {TEMPLATE_COLUMNS}",
        template_id,
        owner.tenant_id,
        owner.mode,
        f["name"],
        f["subject"],
        f.get("html"),
        f.get("text"),
        f.get("variables") or {},
        f.get("key"),
    )
    assert row is not None
    return row


async def get_template(
    conn: asyncpg.Pool | asyncpg.Connection, owner: TenantScope, template_id: UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {TEMPLATE_COLUMNS} FROM templates WHERE id = $1 AND tenant_id = $2 AND mode = $3",
        template_id,
        owner.tenant_id,
        owner.mode,
    )


async def update_template(
    conn: asyncpg.Pool, owner: TenantScope, template_id: UUID, changes: dict[str, Any]
) -> asyncpg.Record | None:
    columns = [c for c in ("name", "key", "subject", "html", "text", "variables") if c in changes]
    sets = "".join(f"{c} = ${i + 4}, " for i, c in enumerate(columns))
    return await conn.fetchrow(
        f"UPDATE templates SET {sets}updated_at = clock_timestamp()"
        f" WHERE id = $1 AND tenant_id = $2 AND mode = $3 RETURNING {TEMPLATE_COLUMNS}",
        template_id,
        owner.tenant_id,
        owner.mode,
        *[changes[c] for c in columns],
    )


async def delete_template(conn: asyncpg.Pool, owner: TenantScope, template_id: UUID) -> bool:
    deleted = await conn.fetchval(
        "DELETE FROM templates WHERE id = $1 AND tenant_id = $2 AND mode = $3 RETURNING true",
        template_id,
        owner.tenant_id,
        owner.mode,
    )
    return bool(deleted)


async def list_templates(
    conn: asyncpg.Pool, owner: TenantScope, flt: TemplateFilter, params: ListParams
) -> list[asyncpg.Record]:
    where, args = _owned(owner, created_after=flt.created_after, created_before=flt.created_before)
    if flt.name is not None:
        args.append(flt.name)
        where.append(f"lower(name) = lower(${len(args)})")
    return await _list(conn, "templates", TEMPLATE_COLUMNS, where, args, params, CREATED_SORT)


def _owned(
    owner: TenantScope, *, created_after: datetime | None, created_before: datetime | None
) -> tuple[list[str], list[Any]]:
    where = ["tenant_id = $1", "mode = $2"]
    args: list[Any] = [owner.tenant_id, owner.mode]
    if created_after is not None:
        args.append(created_after)
        where.append(f"created_at >= ${len(args)}")
    if created_before is not None:
        args.append(created_before)
        where.append(f"created_at < ${len(args)}")
    return where, args


# ---------------------------------------------------------------- campaigns


async def insert_campaign(
    conn: asyncpg.Pool, owner: TenantScope, campaign_id: UUID, f: dict[str, Any]
) -> asyncpg.Record:
    row = await conn.fetchrow(
        "INSERT INTO campaigns (id, tenant_id, mode, name, from_email, from_name, reply_to,"
        " steps, recipients, settings, schedule, daily_cap, spacing_min_seconds,"
        " spacing_max_seconds, scheduled_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
        f" $11, $12, $13, $14, $15) RETURNING {CAMPAIGN_COLUMNS}",
        campaign_id,
        owner.tenant_id,
        owner.mode,
        f["name"],
        f["from_email"],
        f.get("from_name"),
        f.get("reply_to"),
        f["steps"],
        f["recipients"],
        f["settings"],
        f.get("schedule"),
        f.get("daily_cap"),
        f.get("spacing_min_seconds", 0),
        f.get("spacing_max_seconds", 0),
        f.get("scheduled_at"),
    )
    assert row is not None
    return row


async def get_campaign(
    conn: asyncpg.Pool | asyncpg.Connection,
    owner: TenantScope,
    campaign_id: UUID,
    *,
    lock: bool = False,
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1 AND tenant_id = $2 AND mode = $3"
        + (" FOR UPDATE" if lock else ""),
        campaign_id,
        owner.tenant_id,
        owner.mode,
    )


_CAMPAIGN_UPDATABLE = (
    "name",
    "from_email",
    "from_name",
    "reply_to",
    "steps",
    "recipients",
    "settings",
    "schedule",
    "daily_cap",
    "spacing_min_seconds",
    "spacing_max_seconds",
    "scheduled_at",
    "status",
    "next_run_at",
    "recipient_count",
    "started_at",
    "completed_at",
)


async def update_campaign(
    conn: asyncpg.Connection, campaign_id: UUID, changes: dict[str, Any]
) -> asyncpg.Record:
    """Apply `changes` to a campaign the caller has already found (and locked) for its owner."""
    columns = [c for c in _CAMPAIGN_UPDATABLE if c in changes]
    sets = "".join(f"{c} = ${i + 2}, " for i, c in enumerate(columns))
    row = await conn.fetchrow(
        f"UPDATE campaigns SET {sets}updated_at = clock_timestamp() WHERE id = $1"
        f" RETURNING {CAMPAIGN_COLUMNS}",
        campaign_id,
        *[changes[c] for c in columns],
    )
    assert row is not None
    return row


async def delete_campaign(conn: asyncpg.Connection, campaign_id: UUID) -> None:
    await conn.execute("DELETE FROM campaigns WHERE id = $1", campaign_id)


async def list_campaigns(
    conn: asyncpg.Pool, owner: TenantScope, flt: CampaignFilter, params: ListParams
) -> list[asyncpg.Record]:
    where, args = _owned(owner, created_after=flt.created_after, created_before=flt.created_before)
    if flt.status is not None:
        args.append(flt.status)
        where.append(f"status = ${len(args)}")
    if flt.name is not None:
        args.append(flt.name)
        where.append(f"lower(name) = lower(${len(args)})")
    return await _list(conn, "campaigns", CAMPAIGN_COLUMNS, where, args, params, CREATED_SORT)


async def existing_contact_ids(
    conn: asyncpg.Pool, owner: TenantScope, ids: Sequence[UUID]
) -> set[UUID]:
    rows = await conn.fetch(
        "SELECT id FROM contacts WHERE tenant_id = $1 AND mode = $2 AND id = ANY($3::uuid[])",
        owner.tenant_id,
        owner.mode,
        list(ids),
    )
    return {r["id"] for r in rows}


async def freeze_recipients(
    conn: asyncpg.Connection,
    owner: TenantScope,
    campaign_id: UUID,
    *,
    contact_ids: Sequence[UUID] | None,
    tags: Sequence[str] | None,
    match_all: bool,
    due_at: datetime,
) -> int:
    """Snapshot the campaign's active recipients now; returns how many were frozen."""
    arg: list[UUID] | list[str]
    if contact_ids is not None:
        condition, arg = "id = ANY($4::uuid[])", list(contact_ids)
    else:
        condition, arg = (
            ("tags @> $4::text[]" if match_all else "tags && $4::text[]"),
            list(tags or []),
        )
    result: str = await conn.execute(
        "INSERT INTO campaign_recipients (campaign_id, contact_id, tenant_id, next_due_at)"
        " SELECT $3, id, tenant_id, $5 FROM contacts"
        f" WHERE tenant_id = $1 AND mode = $2 AND status = 'active' AND {condition}"
        " ON CONFLICT DO NOTHING",
        owner.tenant_id,
        owner.mode,
        campaign_id,
        arg,
        due_at,
    )
    return int(result.split()[-1])


async def stop_pending_recipients(conn: asyncpg.Connection, campaign_id: UUID, reason: str) -> int:
    result: str = await conn.execute(
        "UPDATE campaign_recipients SET state = 'stopped', stop_reason = $2"
        " WHERE campaign_id = $1 AND state = 'pending'",
        campaign_id,
        reason,
    )
    return int(result.split()[-1])


async def recipient_states(conn: asyncpg.Pool, campaign_id: UUID) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT state, count(*) AS n FROM campaign_recipients WHERE campaign_id = $1"
        " GROUP BY state",
        campaign_id,
    )
    return {r["state"]: r["n"] for r in rows}


async def requested_count(conn: asyncpg.Pool, campaign_id: UUID) -> int:
    """Sends requested so far (a counter its trigger keeps: migration 000300)."""
    n: int = await conn.fetchval("SELECT requested_sends FROM campaigns WHERE id = $1", campaign_id)
    return n


# ---------------------------------------------------------------- runner


async def claim_runnable_campaign(conn: asyncpg.Connection, now: datetime) -> asyncpg.Record | None:
    """The runnable campaign waiting longest, locked for this transaction (others skip it)."""
    return await conn.fetchrow(
        f"SELECT {CAMPAIGN_COLUMNS} FROM campaigns"
        " WHERE status IN ('scheduled', 'running') AND next_run_at <= $1"
        " ORDER BY next_run_at LIMIT 1 FOR UPDATE SKIP LOCKED",
        now,
    )


async def claim_due_recipients(
    conn: asyncpg.Connection, campaign_id: UUID, now: datetime, limit: int
) -> list[asyncpg.Record]:
    """Due recipient steps with their contact's current data, locked for this transaction."""
    return await conn.fetch(
        "SELECT r.contact_id, r.next_step, c.email, c.first_name, c.last_name, c.company,"
        " c.tags, c.custom_fields, c.status AS contact_status, p.data AS personalization"
        " FROM campaign_recipients r"
        " LEFT JOIN contacts c ON c.id = r.contact_id AND c.tenant_id = r.tenant_id"
        " LEFT JOIN campaign_personalization p"
        " ON p.campaign_id = r.campaign_id AND p.contact_id = r.contact_id"
        " WHERE r.campaign_id = $1 AND r.state = 'pending' AND r.next_due_at <= $2"
        " ORDER BY r.next_due_at, r.contact_id LIMIT $3 FOR UPDATE OF r SKIP LOCKED",
        campaign_id,
        now,
        limit,
    )


class SendRecord(NamedTuple):
    contact_id: UUID
    step: int
    request_id: str
    event_id: UUID | str  # the event's id (text, as `stamp_events` makes it)
    email: str


class RecipientAdvance(NamedTuple):
    contact_id: UUID
    next_step: int
    next_due_at: datetime
    state: str
    stop_reason: str | None
    sent: bool


async def record_sends(
    conn: asyncpg.Connection,
    campaign_id: UUID,
    sends: Sequence[SendRecord],
    advances: Sequence[RecipientAdvance],
    now: datetime,
) -> None:
    """Log the sends (the primary key refuses a second send of a step) and move each
    recipient to its next step or final state, in the caller's transaction."""
    if sends:
        await conn.execute(
            "INSERT INTO campaign_sends (campaign_id, contact_id, step, request_id, event_id,"
            " email, requested_at)"
            " SELECT $1, u.contact_id, u.step, u.request_id, u.event_id, u.email, $7"
            " FROM unnest($2::uuid[], $3::int[], $4::text[], $5::uuid[], $6::text[])"
            " AS u(contact_id, step, request_id, event_id, email)",
            campaign_id,
            [s.contact_id for s in sends],
            [s.step for s in sends],
            [s.request_id for s in sends],
            [s.event_id for s in sends],
            [s.email for s in sends],
            now,
        )
    if advances:
        await conn.execute(
            "UPDATE campaign_recipients r SET next_step = u.next_step,"
            " next_due_at = u.next_due_at, state = u.state, stop_reason = u.stop_reason,"
            " last_sent_at = CASE WHEN u.sent THEN $7 ELSE r.last_sent_at END"
            " FROM unnest($2::uuid[], $3::int[], $4::timestamptz[], $5::text[], $6::text[],"
            " $8::bool[]) AS u(contact_id, next_step, next_due_at, state, stop_reason, sent)"
            " WHERE r.campaign_id = $1 AND r.contact_id = u.contact_id",
            campaign_id,
            [a.contact_id for a in advances],
            [a.next_step for a in advances],
            [a.next_due_at for a in advances],
            [a.state for a in advances],
            [a.stop_reason for a in advances],
            now,
            [a.sent for a in advances],
        )


async def sent_on_day(conn: asyncpg.Connection, campaign_id: UUID, day: date) -> int:
    n = await conn.fetchval(
        "SELECT sent FROM campaign_daily_sends WHERE campaign_id = $1 AND day = $2",
        campaign_id,
        day,
    )
    return int(n or 0)


async def add_sent_on_day(conn: asyncpg.Connection, campaign_id: UUID, day: date, n: int) -> None:
    await conn.execute(
        "INSERT INTO campaign_daily_sends (campaign_id, day, sent) VALUES ($1, $2, $3)"
        " ON CONFLICT (campaign_id, day) DO UPDATE SET"
        " sent = campaign_daily_sends.sent + EXCLUDED.sent",
        campaign_id,
        day,
        n,
    )


async def next_pending_due(conn: asyncpg.Connection, campaign_id: UUID) -> datetime | None:
    """When the campaign's next recipient step falls due; None when nobody is pending."""
    due: datetime | None = await conn.fetchval(
        "SELECT min(next_due_at) FROM campaign_recipients"
        " WHERE campaign_id = $1 AND state = 'pending'",
        campaign_id,
    )
    return due


async def set_next_run(conn: asyncpg.Connection, campaign_id: UUID, at: datetime) -> None:
    await conn.execute("UPDATE campaigns SET next_run_at = $2 WHERE id = $1", campaign_id, at)


# ---------------------------------------------------------------- engagement (consumers)


async def mark_replied(
    conn: asyncpg.Connection,
    tenant_id: str,
    contact_id: UUID,
    campaign_id: UUID | None,
    at: datetime,
) -> int:
    """Stop the pending sequence of a contact who replied (that campaign's, or every
    campaign's when the reply names none)."""
    if campaign_id is not None:
        result: str = await conn.execute(
            "UPDATE campaign_recipients SET state = 'replied', replied_at = $4"
            " WHERE tenant_id = $1 AND contact_id = $2 AND campaign_id = $3"
            " AND state = 'pending'",
            tenant_id,
            contact_id,
            campaign_id,
            at,
        )
    else:
        result = await conn.execute(
            "UPDATE campaign_recipients SET state = 'replied', replied_at = $3"
            " WHERE tenant_id = $1 AND contact_id = $2 AND state = 'pending'",
            tenant_id,
            contact_id,
            at,
        )
    return int(result.split()[-1])


async def contact_ids_by_email(conn: asyncpg.Connection, tenant_id: str, email: str) -> list[UUID]:
    rows = await conn.fetch(
        "SELECT id FROM contacts WHERE tenant_id = $1 AND email_key = lower($2)",
        tenant_id,
        email,
    )
    return [r["id"] for r in rows]


async def insert_email_event(conn: asyncpg.Connection, row: dict[str, Any]) -> bool:
    """Add one email fact to the read model (its trigger counts it in the analytics rollup,
    same transaction); False when this event id is already there.
    Without a mode in the event, the campaign's mode (else live) applies."""
    inserted = await conn.fetchval(
        "INSERT INTO email_events (event_id, tenant_id, mode, event_type, message_id,"
        " campaign_id, contact_id, step, recipient, occurred_at, detail)"
        " VALUES ($1, $2, coalesce($3, (SELECT mode FROM campaigns WHERE id = $6"
        " AND tenant_id = $2), 'live'), $4, $5, $6, $7, $8, $9, $10, $11)"
        " ON CONFLICT (event_id) DO NOTHING RETURNING true",
        row["event_id"],
        row["tenant_id"],
        row["mode"],
        row["event_type"],
        row["message_id"],
        row["campaign_id"],
        row["contact_id"],
        row["step"],
        row["recipient"],
        row["occurred_at"],
        row["detail"],
    )
    return bool(inserted)


# ---------------------------------------------------------------- analytics


async def campaign_event_counts(
    conn: asyncpg.Pool, tenant_id: str, campaign_id: UUID
) -> list[asyncpg.Record]:
    """Per event type and step: total events and distinct messages (from the rollup)."""
    return await conn.fetch(
        f"SELECT {_ROLLUP_STEP_COUNTS} FROM email_event_rollup WHERE tenant_id = $1"
        " AND campaign_id = $2 GROUP BY event_type, step",
        tenant_id,
        campaign_id,
    )


# The rollup's counters (migration 000200): a period's distinct messages are the sum of
# `latest` over its days (periods start at a UTC midnight and run to now); step 0 is none.
_ROLLUP_STEP_COUNTS = (
    "event_type, nullif(step, 0) AS step, sum(events)::bigint AS total, sum(latest)::bigint AS uniq"
)
_SINCE_DAY = "(($3::timestamptz) AT TIME ZONE 'UTC')::date"


async def tenant_event_totals(
    conn: asyncpg.Pool, owner: TenantScope, since: datetime
) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT event_type, sum(events)::bigint AS total, sum(latest)::bigint AS uniq"
        f" FROM email_event_daily WHERE tenant_id = $1 AND mode = $2 AND day >= {_SINCE_DAY}"
        " GROUP BY event_type",
        owner.tenant_id,
        owner.mode,
        since,
    )


async def tenant_event_daily(
    conn: asyncpg.Pool, owner: TenantScope, since: datetime
) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT day, event_type, sum(events)::bigint AS total, sum(messages)::bigint AS uniq"
        f" FROM email_event_daily WHERE tenant_id = $1 AND mode = $2 AND day >= {_SINCE_DAY}"
        " GROUP BY 1, 2",
        owner.tenant_id,
        owner.mode,
        since,
    )


async def contact_event_counts(
    conn: asyncpg.Pool, tenant_id: str, contact_id: UUID
) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT event_type, count(*) AS total, count(DISTINCT message_id) AS uniq,"
        " max(occurred_at) AS last_at FROM email_events"
        " WHERE contact_id = $2 AND tenant_id = $1 GROUP BY event_type",
        tenant_id,
        contact_id,
    )


async def contact_timeline(
    conn: asyncpg.Pool,
    tenant_id: str,
    contact_id: UUID,
    *,
    limit: int,
    after: Keyset | None,
) -> list[asyncpg.Record]:
    args: list[Any] = [tenant_id, contact_id, limit]
    cond = ""
    if after is not None:
        args += [after.value, after.row_id]
        cond = " AND (occurred_at, event_id) < ($4, $5)"
    return await conn.fetch(
        "SELECT event_id, event_type, message_id, campaign_id, step, occurred_at, detail,"
        " occurred_at AS sort_value, event_id AS id FROM email_events"
        f" WHERE contact_id = $2 AND tenant_id = $1{cond}"
        " ORDER BY occurred_at DESC, event_id DESC LIMIT $3",
        *args,
    )


# ---------------------------------------------------------------- seed 004 campaigns


async def get_template_by_ref(
    conn: asyncpg.Pool | asyncpg.Connection, owner: TenantScope, ref: str
) -> asyncpg.Record | None:
    """A template by its id, or by its tenant-chosen key."""
    try:
        template_id = UUID(ref)
    except ValueError:
        return await conn.fetchrow(
            f"SELECT {TEMPLATE_COLUMNS} FROM templates"
            " WHERE key = $1 AND tenant_id = $2 AND mode = $3",
            ref,
            owner.tenant_id,
            owner.mode,
        )
    return await get_template(conn, owner, template_id)


async def ensure_contacts(
    conn: asyncpg.Connection, owner: TenantScope, rows: Sequence[tuple[str, str]]
) -> tuple[dict[str, UUID], list[asyncpg.Record]]:
    """Contacts for (new id, email) pairs: created when the address is new, else the existing
    one untouched. Returns ids by lower-cased email, and the rows created."""
    created = await conn.fetch(
        "INSERT INTO contacts (id, tenant_id, mode, email)"
        " SELECT x.id, $1, $2, x.email FROM unnest($3::uuid[], $4::text[]) AS x(id, email)"
        f" ON CONFLICT (tenant_id, mode, email_key) DO NOTHING RETURNING {CONTACT_COLUMNS}",
        owner.tenant_id,
        owner.mode,
        [r[0] for r in rows],
        [r[1] for r in rows],
    )
    found = await conn.fetch(
        "SELECT id, lower(email) AS k FROM contacts WHERE tenant_id = $1 AND mode = $2"
        " AND email_key = ANY($3::text[])",
        owner.tenant_id,
        owner.mode,
        [r[1].lower() for r in rows],
    )
    return {r["k"]: r["id"] for r in found}, created


async def replace_personalization(
    conn: asyncpg.Connection, campaign_id: UUID, items: Sequence[tuple[UUID, dict[str, Any]]]
) -> None:
    await conn.execute("DELETE FROM campaign_personalization WHERE campaign_id = $1", campaign_id)
    if items:
        await conn.executemany(
            "INSERT INTO campaign_personalization (campaign_id, contact_id, data)"
            " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            [(campaign_id, cid, data) for cid, data in items],
        )


async def apply_sender_defaults(
    conn: asyncpg.Connection, tenant_id: str, mode: str, values: dict[str, Any], at: datetime
) -> None:
    """The tenant's default sender from sending_settings.updated (a later event wins)."""
    await conn.execute(
        "INSERT INTO sender_defaults (tenant_id, mode, default_from, default_from_name,"
        " default_reply_to, event_time) VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (tenant_id, mode) DO UPDATE SET default_from = excluded.default_from,"
        " default_from_name = excluded.default_from_name,"
        " default_reply_to = excluded.default_reply_to, event_time = excluded.event_time"
        " WHERE sender_defaults.event_time <= excluded.event_time",
        tenant_id,
        mode,
        values.get("default_from"),
        values.get("default_from_name"),
        values.get("default_reply_to"),
        at,
    )


async def sender_defaults(
    conn: asyncpg.Connection | asyncpg.Pool, owner: TenantScope
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT default_from, default_from_name, default_reply_to FROM sender_defaults"
        " WHERE tenant_id = $1 AND mode = $2",
        owner.tenant_id,
        owner.mode,
    )


async def first_steps_pending(conn: asyncpg.Connection, campaign_id: UUID) -> bool:
    """Whether a recipient's first step is still to be handed to delivery."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM campaign_recipients WHERE campaign_id = $1"
            " AND state = 'pending' AND next_step = 1)",
            campaign_id,
        )
    )


async def mark_campaign_sent(conn: asyncpg.Connection, campaign_id: UUID) -> bool:
    """Set `sent_at` once; True the first time."""
    return bool(
        await conn.fetchval(
            "UPDATE campaigns SET sent_at = clock_timestamp() WHERE id = $1 AND sent_at IS NULL"
            " RETURNING true",
            campaign_id,
        )
    )


# ---------------------------------------------------------------- conversions


async def last_campaign_reaching(
    conn: asyncpg.Connection, tenant_id: str, mode: str, contact_id: UUID, before: datetime
) -> UUID | None:
    """The campaign of the latest email sent to the contact at or before `before`."""
    found: UUID | None = await conn.fetchval(
        "SELECT campaign_id FROM email_events WHERE contact_id = $1 AND tenant_id = $2"
        " AND mode = $3 AND campaign_id IS NOT NULL AND event_type = 'email.sent'"
        " AND occurred_at <= $4 ORDER BY occurred_at DESC LIMIT 1",
        contact_id,
        tenant_id,
        mode,
        before,
    )
    return found


async def contact_by_email(
    conn: asyncpg.Connection, owner: TenantScope, email: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {CONTACT_COLUMNS} FROM contacts WHERE tenant_id = $1 AND mode = $2"
        " AND email_key = lower($3)",
        owner.tenant_id,
        owner.mode,
        email,
    )


CONVERSION_COLUMNS = "id, contact_id, goal, value, currency, campaign_id, occurred_at, created_at"


async def insert_conversion(
    conn: asyncpg.Connection, owner: TenantScope, row: dict[str, Any]
) -> tuple[asyncpg.Record, bool]:
    """(the conversion, True when new); an existing one with the same natural key is returned
    unchanged."""
    created = await conn.fetchrow(
        "INSERT INTO conversions (id, tenant_id, mode, contact_id, goal, value, currency,"
        " campaign_id, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        " ON CONFLICT (tenant_id, mode, contact_id, goal, occurred_at) DO NOTHING"
        f" RETURNING {CONVERSION_COLUMNS}",
        row["id"],
        owner.tenant_id,
        owner.mode,
        row["contact_id"],
        row["goal"],
        row["value"],
        row["currency"],
        row["campaign_id"],
        row["occurred_at"],
    )
    if created is not None:
        return created, True
    existing = await conn.fetchrow(
        f"SELECT {CONVERSION_COLUMNS} FROM conversions WHERE tenant_id = $1 AND mode = $2"
        " AND contact_id = $3 AND goal = $4 AND occurred_at = $5",
        owner.tenant_id,
        owner.mode,
        row["contact_id"],
        row["goal"],
        row["occurred_at"],
    )
    assert existing is not None
    return existing, False


async def campaign_conversions(
    conn: asyncpg.Pool, tenant_id: str, campaign_id: UUID, since: datetime | None
) -> list[asyncpg.Record]:
    """Per currency: conversions and their summed value."""
    return await conn.fetch(
        "SELECT currency, count(*) AS n, coalesce(sum(value), 0) AS amount FROM conversions"
        " WHERE campaign_id = $1 AND tenant_id = $2 AND ($3::timestamptz IS NULL"
        " OR occurred_at >= $3) GROUP BY currency",
        campaign_id,
        tenant_id,
        since,
    )


async def campaign_event_counts_since(
    conn: asyncpg.Pool | asyncpg.Connection, tenant_id: str, campaign_id: UUID, since: datetime
) -> list[asyncpg.Record]:
    """`campaign_event_counts` restricted to the days from `since` (a UTC midnight) on."""
    return await conn.fetch(
        f"SELECT {_ROLLUP_STEP_COUNTS} FROM email_event_rollup WHERE tenant_id = $1"
        f" AND campaign_id = $2 AND day >= {_SINCE_DAY} GROUP BY event_type, step",
        tenant_id,
        campaign_id,
        since,
    )


async def claim_analytics_notice(
    conn: asyncpg.Connection, tenant_id: str, campaign_id: UUID
) -> asyncpg.Record | None:
    """The campaign, when its last analytics.updated is a minute old or more (or none yet);
    marks now as the last one."""
    return await conn.fetchrow(
        "UPDATE campaigns SET analytics_notified_at = clock_timestamp() WHERE id = $1"
        " AND tenant_id = $2 AND (analytics_notified_at IS NULL"
        " OR analytics_notified_at <= clock_timestamp() - interval '1 minute')"
        " RETURNING id, tenant_id, mode, name",
        campaign_id,
        tenant_id,
    )


# ---------------------------------------------------------------- import jobs

IMPORT_COLUMNS = (
    "id, status, total, processed, created, updated, failed, errors, created_at, completed_at"
)


async def insert_import(
    conn: asyncpg.Connection,
    owner: TenantScope,
    import_id: UUID,
    chunks: Sequence[tuple[int, bytes]],
    total: int,
) -> asyncpg.Record:
    """A pending job and its rows, as (first row, JSON array) chunks."""
    row = await conn.fetchrow(
        "INSERT INTO contact_imports (id, tenant_id, mode, total)"
        f" VALUES ($1, $2, $3, $4) RETURNING {IMPORT_COLUMNS}",
        import_id,
        owner.tenant_id,
        owner.mode,
        total,
    )
    assert row is not None
    if chunks:
        await conn.copy_records_to_table(
            "contact_import_chunks",
            records=[(import_id, first, rows) for first, rows in chunks],
            columns=["import_id", "first_row", "rows"],
        )
    return row


async def get_import(
    conn: asyncpg.Pool, owner: TenantScope, import_id: UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {IMPORT_COLUMNS} FROM contact_imports WHERE id = $1 AND tenant_id = $2"
        " AND mode = $3",
        import_id,
        owner.tenant_id,
        owner.mode,
    )


async def claim_import(conn: asyncpg.Connection, import_id: UUID) -> asyncpg.Record | None:
    """Take a pending job, or a running one whose worker stopped beating (resumed from
    `processed`)."""
    return await conn.fetchrow(
        "UPDATE contact_imports SET status = 'running', heartbeat_at = clock_timestamp()"
        " WHERE id = $1 AND (status = 'pending' OR (status = 'running'"
        " AND heartbeat_at < clock_timestamp() - interval '2 minutes'))"
        " RETURNING id, tenant_id, mode, total, processed",
        import_id,
    )


async def import_chunk(
    conn: asyncpg.Connection, import_id: UUID, start: int, size: int
) -> list[Any]:
    """The job's stored chunk starting at row `start` (0-based), removed in the caller's
    transaction (the one that imports it); for a job stored before chunks existed, rows
    `start` .. `start + size - 1` of its jsonb."""
    chunk: bytes | None = await conn.fetchval(
        "DELETE FROM contact_import_chunks WHERE import_id = $1 AND first_row = $2 RETURNING rows",
        import_id,
        start,
    )
    if chunk is not None:
        items: list[Any] = orjson.loads(chunk)
        return items
    rows: list[Any] = await conn.fetchval(
        "SELECT coalesce(jsonb_path_query_array(rows, $2::jsonpath), '[]'::jsonb)"
        " FROM contact_imports WHERE id = $1",
        import_id,
        f"$[{int(start)} to {int(start + size - 1)}]",
    )
    return rows


async def advance_import(
    conn: asyncpg.Connection, import_id: UUID, processed: int, report: dict[str, Any]
) -> None:
    await conn.execute(
        "UPDATE contact_imports SET processed = $2, created = created + $3,"
        " updated = updated + $4, failed = failed + $5, errors = errors || $6::jsonb,"
        " heartbeat_at = clock_timestamp() WHERE id = $1",
        import_id,
        processed,
        report["created"],
        report["updated"],
        report["failed"],
        report["errors"],
    )


async def complete_import(conn: asyncpg.Connection, import_id: UUID) -> asyncpg.Record:
    row = await conn.fetchrow(
        "UPDATE contact_imports SET status = 'completed', completed_at = clock_timestamp(),"
        f" rows = NULL WHERE id = $1 RETURNING tenant_id, mode, {IMPORT_COLUMNS}",
        import_id,
    )
    assert row is not None
    return row


async def apply_domain_state(
    conn: asyncpg.Connection, tenant_id: str, name: str, verified: bool, at: datetime
) -> None:
    """A sending domain's verified state from a domain.* event (a later event wins)."""
    await conn.execute(
        "INSERT INTO sender_domains (tenant_id, name, verified, event_time)"
        " VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (tenant_id, name) DO UPDATE SET verified = excluded.verified,"
        " event_time = excluded.event_time"
        " WHERE sender_domains.event_time <= excluded.event_time",
        tenant_id,
        name,
        verified,
        at,
    )


async def domain_verified(conn: asyncpg.Connection, tenant_id: str, names: list[str]) -> bool:
    """Whether the tenant has verified any of `names` (a sender's domain and its parents)."""
    found = await conn.fetchval(
        "SELECT 1 FROM sender_domains WHERE tenant_id = $1 AND name = ANY($2::text[]) AND verified",
        tenant_id,
        names,
    )
    return found is not None
