"""Migrations against the real Postgres: every service at once on a fresh database, and
the per-schema lock that keeps replicas of one service from applying a migration twice.

In a throwaway database of its own (`pm_migrate_<pid>`), dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest

from libs.common.db import migrate, migrations_dirs, schema_migration_lock
from libs.common.provision import provision_database
from libs.common.settings import SCHEMA_SERVICES
from tests.conftest import ADMIN_DSN, PG_HOST

DB = f"pm_migrate_{os.getpid()}"


def dsn(service: str) -> str:
    return f"postgresql://pm_{service}@{PG_HOST}:5432/{DB}"


async def _drop(admin: asyncpg.Connection) -> None:
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", DB
    )
    await admin.execute(f'DROP DATABASE IF EXISTS "{DB}"')


@pytest.fixture
async def fresh_database() -> AsyncIterator[str]:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await _drop(admin)
        await provision_database(ADMIN_DSN, database=DB)
        yield DB
    finally:
        await _drop(admin)
        await admin.close()


def versions_on_disk(service: str) -> set[str]:
    return {p.name.split("_", 1)[0] for d in migrations_dirs(service) for p in d.glob("*.sql")}


async def applied(service: str) -> set[str]:
    conn = await asyncpg.connect(dsn(service))
    try:
        rows = await conn.fetch(f"SELECT version FROM {service}.schema_migrations")
        return {r["version"] for r in rows}
    finally:
        await conn.close()


async def test_every_service_migrates_at_once_on_a_fresh_database(fresh_database: str) -> None:
    """What `make up` and a fresh cluster do: all services' migrations in parallel. With one
    database-wide lock waited on inside a transaction, campaigns' CREATE INDEX CONCURRENTLY
    deadlocked with the others' waits."""
    with ThreadPoolExecutor(len(SCHEMA_SERVICES)) as pool:
        outputs = list(pool.map(lambda svc: migrate(svc, dsn(svc)), SCHEMA_SERVICES))
    assert all("Applied" in out for out in outputs), outputs
    for svc in SCHEMA_SERVICES:
        assert await applied(svc) == versions_on_disk(svc), svc


async def test_campaigns_plans_its_queries_with_their_values(fresh_database: str) -> None:
    """000290: campaigns' prepared statements keep custom plans (a generic plan, chosen
    without the values, read 580k rows for a 1M-contact tenant's tag filter: p95 11 s)."""
    migrate("campaigns", dsn("campaigns"))
    conn = await asyncpg.connect(dsn("campaigns"))
    try:
        assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
    finally:
        await conn.close()


async def test_replicas_of_one_service_apply_each_migration_once(fresh_database: str) -> None:
    """A second `migrate` of the same schema waits for the lock, then finds nothing to do."""
    service = "campaigns"
    done = threading.Event()
    outputs: list[str] = []

    def second() -> None:
        outputs.append(migrate(service, dsn(service)))
        done.set()

    with schema_migration_lock(dsn(service), service):
        waiter = threading.Thread(target=second)
        waiter.start()
        await asyncio.sleep(1.5)
        assert not done.is_set(), "the second migrate ran while the lock was held"
        assert not await _schema_table_exists(service)
    waiter.join(60)
    assert done.is_set()
    again = await asyncio.to_thread(migrate, service, dsn(service))
    assert "Applied" in outputs[0] and "Applied" not in again
    assert await applied(service) == versions_on_disk(service)


async def _schema_table_exists(service: str) -> bool:
    conn = await asyncpg.connect(dsn(service))
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM information_schema.tables"
                " WHERE table_schema = $1 AND table_name = 'schema_migrations'",
                service,
            )
        )
    finally:
        await conn.close()
