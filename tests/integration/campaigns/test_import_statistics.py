"""An import job leaves the planner statistics of the tables it grew current: after the job,
`contacts` and `outbox` are described by statistics of at least half their rows, so the
contact lists and the relay's claims are planned for the tables' real size (a never-analyzed
table is planned as a tiny one: the relay's claim then read and sorted every pending row).
The test server runs without autovacuum: nothing but the job analyzes."""

from __future__ import annotations

import asyncpg

from libs.common.statistics import grown_tables
from libs.common.tenancy import TenantScope
from services.campaigns import service

ROWS = 6_000


async def test_an_import_job_leaves_current_statistics(
    campaigns_pool: asyncpg.Pool, tenant: str
) -> None:
    items = [
        {"email": f"stats{i}-{tenant}@example.com", "tags": ["stats", f"cohort{i % 10}"]}
        for i in range(ROWS)
    ]
    job = await service.submit_import(campaigns_pool, TenantScope(tenant, "live"), items, ROWS)
    assert await service.run_import(campaigns_pool, job["id"])
    assert await grown_tables(campaigns_pool, service.IMPORT_TABLES) == []
    for table in service.IMPORT_TABLES:
        described, rows = await campaigns_pool.fetchrow(
            f"SELECT (SELECT reltuples FROM pg_class WHERE oid = '{table}'::regclass),"
            f" (SELECT count(*) FROM {table})"
        )
        assert described >= rows / 2, (table, described, rows)
