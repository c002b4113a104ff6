"""Idempotent inbox: a consumer records each event id it handled, in the handler's transaction.

The primary key `(consumer, event_id)` makes the second claim of the same event a no-op, so
a redelivery (broker redelivery, relay republish, DLQ replay) has no second effect.
"""

from __future__ import annotations

import asyncpg

from libs.common.events import Envelope


async def claim_event(conn: asyncpg.Connection, consumer: str, event: Envelope) -> bool:
    """True if this consumer had not yet handled `event`; must run in the handler's transaction."""
    claimed = await conn.fetchval(
        "INSERT INTO inbox (consumer, event_id, event_type) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING RETURNING true",
        consumer,
        event.id,
        event.type,
    )
    return bool(claimed)


async def claim_events(
    conn: asyncpg.Connection, consumer: str, events: list[Envelope]
) -> list[Envelope]:
    """`claim_event` for a batch in one statement: the events this consumer had not yet
    handled, in their order (ids unique within `events`)."""
    claimed = await conn.fetch(
        "INSERT INTO inbox (consumer, event_id, event_type)"
        " SELECT $1, id, type FROM unnest($2::uuid[], $3::text[]) AS e(id, type)"
        " ON CONFLICT DO NOTHING RETURNING event_id",
        consumer,
        [e.id for e in events],
        [e.type for e in events],
    )
    fresh = {r["event_id"] for r in claimed}
    return [e for e in events if e.id in fresh]


async def purge_inbox(pool: asyncpg.Pool, *, older_than_days: int = 14) -> int:
    """Forget handled ids older than any redelivery could be."""
    result: str = await pool.execute(
        "DELETE FROM inbox WHERE processed_at < now() - make_interval(days => $1)",
        older_than_days,
    )
    return int(result.split()[-1])
