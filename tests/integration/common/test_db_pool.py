"""The services' connection pool (`libs.common.db.create_pool`) against the real Postgres: a
connection goes back to the pool without a reset round trip, yet what a use could leave behind
that matters is still cleaned up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from libs.common.db import create_pool
from tests.conftest import service_dsn


@pytest.fixture
async def one_connection(test_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(service_dsn("keys"), "keys", min_size=1, max_size=1)
    yield pool
    await pool.close()


async def test_a_release_sends_no_reset_query(one_connection: asyncpg.Pool) -> None:
    sent: list[str] = []
    async with one_connection.acquire() as conn:
        conn._con.add_query_logger(lambda record: sent.append(record.query))
        await conn.fetchval("SELECT 1")
    # asyncpg's default would have sent `SELECT pg_advisory_unlock_all(); ... RESET ALL;` here.
    assert sent == ["SELECT 1"]


async def test_a_transaction_left_open_is_rolled_back_and_the_schema_kept(
    one_connection: asyncpg.Pool,
) -> None:
    async with one_connection.acquire() as conn:
        before = await conn.fetchval("SHOW statement_timeout")
        await conn.execute("BEGIN")
        await conn.execute("SET LOCAL statement_timeout = '1ms'")
        # released inside the transaction, as a handler that raised midway would
    async with one_connection.acquire() as conn:
        assert not conn.is_in_transaction()
        assert await conn.fetchval("SHOW statement_timeout") == before != "1ms"
        assert await conn.fetchval("SELECT current_schema()") == "keys"
