"""Planner statistics of tables a process fills in bulk: ANALYZE them as they outgrow them.

Postgres plans from `pg_class.reltuples`/`relpages` and `pg_statistic`, which only ANALYZE
(autovacuum's, when it runs) refreshes. A table that goes from empty to 100,000 rows within a
minute (an import's contacts and outbox rows, the events stream a burst fans into) is planned
meanwhile as the tiny table it was: the relay's claim read and sorted every pending outbox row
(a bitmap scan, ~115 ms a claim at tens of thousands pending) instead of walking
`outbox_pending_idx`, marking rows published scanned the whole outbox, and the events stream's
cached generic plan hash-joined each batch against a sequential scan of every stored event
(`bench/drain.py`, docs/scheduling.md "CPU priority"). Autovacuum's threshold (50 rows + 10 %)
comes up to a minute late (`autovacuum_naptime`), and where it is off, never.

The writer knows when it grew a table, so it asks: `analyze_grown(conn, tables)` after a bulk
write ANALYZEs each table that has at least `MIN_PAGES` pages and either was never analyzed
or has more than doubled (in pages) since its statistics were taken. Doubling bounds the
ANALYZEs of a table to one per doubling (a dozen from empty to 100,000 rows), and each costs
a sample of at most 30,000 rows (default_statistics_target 100), not a pass over the table.
`SKIP_LOCKED`: when another session is analyzing or vacuuming the table, it is already
being done. Best effort: the write it follows has committed, so a failed look-up or ANALYZE is
logged and never fails the caller (an import job would otherwise wait for its takeover).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import asyncpg

log = logging.getLogger(__name__)

# Below this many pages (8 kB each) the planner's defaults cost nothing worth an ANALYZE.
MIN_PAGES = 16

_GROWN = (
    "SELECT c.relname FROM pg_class c"
    " WHERE c.oid = ANY($1::regclass[])"
    " AND pg_relation_size(c.oid) >= $2::bigint * current_setting('block_size')::int"
    " AND (c.reltuples < 0 OR pg_relation_size(c.oid)"
    "      > 2 * c.relpages::bigint * current_setting('block_size')::int)"
    " ORDER BY c.relname"
)


async def grown_tables(conn: asyncpg.Connection | asyncpg.Pool, tables: Sequence[str]) -> list[str]:
    """Which of `tables` (names in the connection's search path) have outgrown their
    statistics: at least MIN_PAGES pages, never analyzed or more than twice the pages they
    had when last analyzed."""
    rows = await conn.fetch(_GROWN, list(tables), MIN_PAGES)
    return [r["relname"] for r in rows]


async def analyze_grown(
    conn: asyncpg.Connection | asyncpg.Pool, tables: Sequence[str]
) -> list[str]:
    """ANALYZE each of `tables` that outgrew its statistics (see `grown_tables`); returns
    those analyzed. Call it after committing a bulk write, not inside the transaction."""
    try:
        grown = await grown_tables(conn, tables)
        if grown:
            # Names come from pg_class for the caller's own constants, quoted as identifiers.
            names = ", ".join('"' + name.replace('"', '""') + '"' for name in grown)
            await conn.execute(f"ANALYZE (SKIP_LOCKED) {names}")
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        # Any database failure, a lost connection too: the stream's batch (no inbox) would
        # otherwise be handled again message by message and stored twice.
        log.warning(
            "statistics: ANALYZE after a bulk write failed",
            extra={"tables": list(tables), "error": f"{type(exc).__name__}: {exc}"},
        )
        return []
    return grown
