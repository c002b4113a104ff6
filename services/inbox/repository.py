"""Every SQL statement of the inbox service (schema `inbox`, role `pm_inbox`).

API queries always filter by tenant and mode: another tenant's thread or message is simply
not found. Ingest queries find the tenant first (from a sent message or a sender address)
and then write only rows of that tenant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from libs.common.pagination import ListParams, keyset_sql

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

THREAD_COLUMNS = (
    "id, tenant_id, mode, folder, subject, contact_email, contact_id, campaign_id,"
    " origin_message_id, classification, unread, archived, labels, message_count,"
    " last_message_at, created_at, updated_at"
)
MESSAGE_COLUMNS = (
    "id, tenant_id, mode, thread_id, direction, classification, header_message_id,"
    " in_reply_to, references_header, from_email, from_name, to_email, subject, text_body,"
    " html_body, headers, attachments, parse_error, raw_id, sent_message_id, status, source,"
    " occurred_at, created_at"
)
THREAD_SORTS = {"last_message_at": "last_message_at", "created_at": "created_at"}
MESSAGE_SORTS = {"created_at": "created_at", "occurred_at": "occurred_at"}


# ------------------------------------------------------------------ sent messages (read model)


async def learn_sent(
    conn: asyncpg.Connection, tenant_id: str, mode: str, d: dict[str, Any]
) -> None:
    """Insert or complete the read-model row of one of delivery's messages."""
    await conn.execute(
        "INSERT INTO sent_messages (message_id, tenant_id, mode, header_message_id, from_email,"
        " to_email, subject, campaign_id, contact_id, step, request_id, sent_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        " ON CONFLICT (message_id) DO UPDATE SET"
        " header_message_id = coalesce(excluded.header_message_id,"
        " sent_messages.header_message_id),"
        " from_email = coalesce(excluded.from_email, sent_messages.from_email),"
        " subject = coalesce(excluded.subject, sent_messages.subject),"
        " request_id = coalesce(sent_messages.request_id, excluded.request_id),"
        " sent_at = coalesce(excluded.sent_at, sent_messages.sent_at)"
        " WHERE sent_messages.tenant_id = excluded.tenant_id",
        d["message_id"],
        tenant_id,
        mode,
        d.get("header_message_id"),
        d.get("from_email"),
        d["to"],
        d.get("subject"),
        d.get("campaign_id"),
        d.get("contact_id"),
        d.get("step"),
        d.get("request_id"),
        d.get("sent_at"),
    )


async def sent_message(conn: Conn, message_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM sent_messages WHERE message_id = $1", message_id)


async def sent_by_header(conn: Conn, header_ids: Sequence[str]) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM sent_messages WHERE header_message_id = ANY($1::text[])"
        " ORDER BY array_position($1::text[], header_message_id) LIMIT 1",
        list(header_ids),
    )


async def tenant_of_sender(conn: Conn, addresses: Sequence[str]) -> asyncpg.Record | None:
    """The tenant that sends from one of `addresses` (most recent first)."""
    return await conn.fetchrow(
        "SELECT tenant_id, mode FROM sent_messages WHERE lower(from_email) = ANY($1::text[])"
        " ORDER BY created_at DESC LIMIT 1",
        [a.lower() for a in addresses],
    )


async def set_sent_thread(conn: asyncpg.Connection, message_id: str, thread_id: str) -> None:
    await conn.execute(
        "UPDATE sent_messages SET thread_id = $2 WHERE message_id = $1 AND thread_id IS NULL",
        message_id,
        thread_id,
    )


# ------------------------------------------------------------------ raw mail


async def insert_raw(
    conn: asyncpg.Connection, raw_id: str, source: str, dedup_key: str, raw: bytes, days: int
) -> bool:
    """False when this delivery (provider retry) was stored before."""
    row = await conn.fetchval(
        "INSERT INTO raw_messages (id, source, dedup_key, raw, expires_at)"
        " VALUES ($1, $2, $3, $4, now() + make_interval(days => $5))"
        " ON CONFLICT (dedup_key) DO NOTHING RETURNING id",
        raw_id,
        source,
        dedup_key,
        raw,
        days,
    )
    return row is not None


async def set_raw_tenant(conn: asyncpg.Connection, raw_id: str, tenant_id: str) -> None:
    await conn.execute("UPDATE raw_messages SET tenant_id = $2 WHERE id = $1", raw_id, tenant_id)


async def raw_of_message(conn: Conn, tenant_id: str, mode: str, message_id: str) -> bytes | None:
    return await conn.fetchval(
        "SELECT r.raw FROM messages m JOIN raw_messages r ON r.id = m.raw_id"
        " WHERE m.id = $1 AND m.tenant_id = $2 AND m.mode = $3 AND r.tenant_id = $2",
        message_id,
        tenant_id,
        mode,
    )


async def sweep_raw(conn: Conn, limit: int = 1000) -> int:
    # Mailgun tokens are refused after 15 minutes anyway: a day of them is plenty.
    await conn.execute("DELETE FROM hook_tokens WHERE seen_at < now() - interval '1 day'")
    done = await conn.execute(
        "DELETE FROM raw_messages WHERE id IN (SELECT id FROM raw_messages"
        " WHERE expires_at < now() LIMIT $1)",
        limit,
    )
    return int(done.split()[-1])


async def claim_hook_token(conn: Conn, provider: str, token: str, body_hash: str) -> bool:
    """A signed token seen before with another body is a replay with altered data."""
    seen = await conn.fetchval(
        "INSERT INTO hook_tokens (provider, token, body_hash) VALUES ($1, $2, $3)"
        " ON CONFLICT (provider, token) DO UPDATE SET provider = excluded.provider"
        " RETURNING body_hash",
        provider,
        token,
        body_hash,
    )
    return bool(seen == body_hash)


async def insert_quarantine(conn: asyncpg.Connection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO quarantine (id, raw_id, recipient, sender, subject, reason)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        row["id"],
        row["raw_id"],
        row["recipient"],
        row["sender"],
        row["subject"],
        row["reason"],
    )


async def quarantined(conn: Conn, raw_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM quarantine WHERE raw_id = $1", raw_id)


# ------------------------------------------------------------------ threads


async def thread_for_origin(
    conn: asyncpg.Connection, tenant_id: str, origin_message_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {THREAD_COLUMNS} FROM threads WHERE tenant_id = $1 AND origin_message_id = $2",
        tenant_id,
        origin_message_id,
    )


async def insert_thread(conn: asyncpg.Connection, row: dict[str, Any]) -> asyncpg.Record:
    return await conn.fetchrow(
        "INSERT INTO threads (id, tenant_id, mode, folder, subject, contact_email, contact_id,"
        " campaign_id, origin_message_id, last_message_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        " ON CONFLICT (tenant_id, origin_message_id) DO UPDATE SET updated_at = threads.updated_at"
        f" RETURNING {THREAD_COLUMNS}",
        row["id"],
        row["tenant_id"],
        row["mode"],
        row["folder"],
        row["subject"],
        row["contact_email"],
        row["contact_id"],
        row["campaign_id"],
        row["origin_message_id"],
        row["last_message_at"],
    )


async def touch_thread(
    conn: asyncpg.Connection,
    thread_id: str,
    at: datetime,
    *,
    classification: str | None,
    unread: bool,
) -> None:
    await conn.execute(
        "UPDATE threads SET message_count = message_count + 1,"
        " last_message_at = greatest(last_message_at, $2),"
        " classification = coalesce($3, classification),"
        " unread = unread OR $4, archived = archived AND NOT $4, updated_at = now()"
        " WHERE id = $1",
        thread_id,
        at,
        classification,
        unread,
    )


async def get_thread(
    conn: Conn, tenant_id: str, mode: str, thread_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {THREAD_COLUMNS} FROM threads WHERE id = $1 AND tenant_id = $2 AND mode = $3",
        thread_id,
        tenant_id,
        mode,
    )


@dataclass(frozen=True)
class ThreadFilter:
    folder: str | None = None
    campaign_id: str | None = None
    contact_id: str | None = None
    contact_email: str | None = None
    classification: str | None = None
    unread: bool | None = None
    archived: bool | None = False
    label: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_threads(
    conn: Conn, tenant_id: str, mode: str, f: ThreadFilter, params: ListParams
) -> list[asyncpg.Record]:
    where = ["tenant_id = $1", "mode = $2"]
    args: list[Any] = [tenant_id, mode]

    def add(sql: str, value: Any) -> None:
        args.append(value)
        where.append(sql.replace("?", f"${len(args)}"))

    if f.folder is not None:
        add("folder = ?", f.folder)
    if f.campaign_id is not None:
        add("campaign_id = ?", f.campaign_id)
    if f.contact_id is not None:
        add("contact_id = ?", f.contact_id)
    if f.contact_email is not None:
        add("lower(contact_email) = lower(?)", f.contact_email)
    if f.classification is not None:
        add("classification = ?", f.classification)
    if f.unread is not None:
        add("unread = ?", f.unread)
    if f.archived is not None:
        add("archived = ?", f.archived)
    if f.label is not None:
        add("? = ANY(labels)", f.label)
    if f.since is not None:
        add("last_message_at >= ?", f.since)
    if f.until is not None:
        add("last_message_at < ?", f.until)
    condition, tail = keyset_sql(params, THREAD_SORTS, args)
    if condition:
        where.append(condition)
    return await conn.fetch(
        f"SELECT {THREAD_COLUMNS} FROM threads WHERE {' AND '.join(where)} {tail}", *args
    )


async def update_thread(
    conn: Conn, tenant_id: str, mode: str, thread_id: str, changes: dict[str, Any]
) -> asyncpg.Record | None:
    sets = []
    args: list[Any] = [thread_id, tenant_id, mode]
    for column in ("unread", "archived", "labels"):
        if column in changes:
            args.append(changes[column])
            sets.append(f"{column} = ${len(args)}")
    sets.append("updated_at = now()")
    return await conn.fetchrow(
        f"UPDATE threads SET {', '.join(sets)} WHERE id = $1 AND tenant_id = $2 AND mode = $3"
        f" RETURNING {THREAD_COLUMNS}",
        *args,
    )


# ------------------------------------------------------------------ messages


async def insert_message(conn: asyncpg.Connection, row: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO messages (id, tenant_id, mode, thread_id, direction, classification,"
        " header_message_id, in_reply_to, references_header, from_email, from_name, to_email,"
        " subject, text_body, html_body, headers, attachments, parse_error, raw_id,"
        " sent_message_id, status, source, occurred_at) VALUES ($1, $2, $3, $4, $5, $6, $7,"
        " $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)",
        row["id"],
        row["tenant_id"],
        row["mode"],
        row["thread_id"],
        row["direction"],
        row.get("classification"),
        row.get("header_message_id"),
        row.get("in_reply_to"),
        row.get("references_header"),
        row.get("from_email"),
        row.get("from_name"),
        row.get("to_email"),
        row.get("subject") or "",
        row.get("text_body"),
        row.get("html_body"),
        row.get("headers") or [],
        row.get("attachments") or [],
        row.get("parse_error"),
        row.get("raw_id"),
        row.get("sent_message_id"),
        row.get("status"),
        row.get("source"),
        row["occurred_at"],
    )


async def get_message(
    conn: Conn, tenant_id: str, mode: str, message_id: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND tenant_id = $2 AND mode = $3",
        message_id,
        tenant_id,
        mode,
    )


async def thread_messages(
    conn: Conn, tenant_id: str, mode: str, thread_id: str
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE thread_id = $1 AND tenant_id = $2"
        " AND mode = $3 ORDER BY occurred_at, id",
        thread_id,
        tenant_id,
        mode,
    )


async def list_messages(
    conn: Conn,
    tenant_id: str,
    mode: str,
    params: ListParams,
    *,
    thread_id: str | None,
    direction: str | None,
    classification: str | None,
) -> list[asyncpg.Record]:
    where = ["tenant_id = $1", "mode = $2"]
    args: list[Any] = [tenant_id, mode]
    for column, value in (
        ("thread_id", thread_id),
        ("direction", direction),
        ("classification", classification),
    ):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    condition, tail = keyset_sql(params, MESSAGE_SORTS, args)
    if condition:
        where.append(condition)
    return await conn.fetch(
        f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE {' AND '.join(where)} {tail}", *args
    )


async def outbound_sent(
    conn: asyncpg.Connection,
    tenant_id: str,
    request_id: str,
    message_id: str,
    header_id: str | None,
) -> asyncpg.Record | None:
    """Our reply was handed to the provider: link it to delivery's message."""
    return await conn.fetchrow(
        "UPDATE messages SET status = 'sent', sent_message_id = $3,"
        " header_message_id = coalesce($4, header_message_id)"
        " WHERE id = $2 AND tenant_id = $1 AND direction = 'outbound' RETURNING thread_id",
        tenant_id,
        request_id,
        message_id,
        header_id,
    )


async def outbound_failed(conn: asyncpg.Connection, tenant_id: str, message_id: str) -> None:
    await conn.execute(
        "UPDATE messages SET status = 'failed' WHERE tenant_id = $1 AND direction = 'outbound'"
        " AND id = (SELECT request_id FROM sent_messages WHERE message_id = $2"
        " AND tenant_id = $1)",
        tenant_id,
        message_id,
    )
