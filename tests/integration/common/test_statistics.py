"""`libs.common.statistics.analyze_grown`: a table a process fills in bulk is ANALYZEd when it
outgrew its statistics (never analyzed, or more than doubled since), and only then, against
the real Postgres (the test server runs without autovacuum, so nothing else analyzes)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from libs.common.statistics import MIN_PAGES, analyze_grown, grown_tables

ROW = "x" * 200  # about 35 rows a page: 2,000 rows are well past MIN_PAGES


@pytest.fixture
async def table(keys_pool: asyncpg.Pool, unique: str) -> AsyncIterator[str]:
    name = f"stats_probe_{unique}"
    await keys_pool.execute(f"CREATE TABLE {name} (id bigint, note text)")
    yield name
    await keys_pool.execute(f"DROP TABLE {name}")


async def add(pool: asyncpg.Pool, table: str, first: int, n: int) -> None:
    await pool.execute(
        f"INSERT INTO {table} SELECT i, $1 FROM generate_series($2::bigint, $3::bigint) i",
        ROW,
        first,
        first + n - 1,
    )


async def described(pool: asyncpg.Pool, table: str) -> float:
    """The rows the planner's statistics describe (-1: never analyzed)."""
    value: float = await pool.fetchval(
        "SELECT reltuples FROM pg_class WHERE oid = $1::regclass", table
    )
    return value


async def test_a_table_is_analyzed_when_it_outgrew_its_statistics(
    keys_pool: asyncpg.Pool, table: str
) -> None:
    await add(keys_pool, table, 0, 2_000)
    assert await described(keys_pool, table) == -1
    assert await analyze_grown(keys_pool, [table]) == [table]
    assert await described(keys_pool, table) == 2_000
    # Current statistics: nothing to do, however often a writer asks.
    assert await analyze_grown(keys_pool, [table]) == []
    await add(keys_pool, table, 2_000, 1_000)  # grown by half: still described well enough
    assert await analyze_grown(keys_pool, [table]) == []
    await add(keys_pool, table, 3_000, 2_000)  # 5,000 rows: more than twice the pages
    assert await analyze_grown(keys_pool, [table]) == [table]
    assert await described(keys_pool, table) == 5_000


async def test_a_small_table_keeps_the_planner_defaults(
    keys_pool: asyncpg.Pool, table: str
) -> None:
    await add(keys_pool, table, 0, 10)
    pages = await keys_pool.fetchval("SELECT pg_relation_size($1::regclass) / 8192", table)
    assert pages < MIN_PAGES
    assert await grown_tables(keys_pool, [table]) == []
    assert await analyze_grown(keys_pool, [table]) == []
    assert await described(keys_pool, table) == -1


async def test_a_failed_analyze_never_fails_the_write_it_follows(
    keys_pool: asyncpg.Pool, table: str
) -> None:
    """The bulk write has committed: an import job that raised here would wait minutes for
    its takeover. A table that does not exist stands in for any database error."""
    await add(keys_pool, table, 0, 2_000)
    assert await analyze_grown(keys_pool, [table, "no_such_table"]) == []


async def test_a_lost_connection_never_fails_the_write_it_follows(
    keys_pool: asyncpg.Pool, table: str
) -> None:
    """A connection lost between the write and its ANALYZE: the caller's write stands (the
    event stream has no inbox: a raise here would store its batch a second time)."""
    await add(keys_pool, table, 0, 2_000)
    conn = await keys_pool.acquire()
    try:
        conn.terminate()
        assert await analyze_grown(conn, [table]) == []
    finally:
        await keys_pool.release(conn)
