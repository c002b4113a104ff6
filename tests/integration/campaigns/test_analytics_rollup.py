"""The pre-aggregated analytics (migration 000200) equal counting the raw email events: for
every period start, per campaign step and per tenant, totals and distinct messages, whatever
the order events arrive in (late, out of order, duplicated), with several consumers at once,
and after `rebuild_email_event_rollup()`."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from libs.common.tenancy import TenantScope
from services.campaigns import repository as repo

TYPES = ["email.sent", "email.delivered", "email.opened", "email.clicked"]


def _events(tenant: str, campaigns: list[UUID], rnd: random.Random) -> list[dict[str, Any]]:
    base = datetime(2026, 11, 20, 10, tzinfo=UTC)
    rows = []
    for m in range(40):
        campaign = campaigns[m % len(campaigns)] if m % 5 else None
        step = (1 + m % 2) if campaign else None
        for _ in range(rnd.randrange(1, 7)):
            rows.append(
                {
                    "event_id": uuid4(),
                    "tenant_id": tenant,
                    "mode": "live",
                    "event_type": rnd.choice(TYPES),
                    "message_id": f"msg_{tenant}_{m}",
                    "campaign_id": campaign,
                    "contact_id": None,
                    "step": step,
                    "recipient": f"r{m}@example.com",
                    # Spread over 9 days, around midnights too.
                    "occurred_at": base + timedelta(hours=rnd.randrange(0, 9 * 24)),
                    "detail": {},
                }
            )
    rnd.shuffle(rows)  # out of order, as redeliveries and late ESP hooks arrive
    return rows


async def _raw(pool: asyncpg.Pool, tenant: str, campaign: UUID, since: datetime) -> tuple[Any, ...]:
    per_step = await pool.fetch(
        "SELECT event_type, step, count(*) AS total, count(DISTINCT message_id) AS uniq"
        " FROM email_events WHERE tenant_id = $1 AND campaign_id = $2 AND occurred_at >= $3"
        " GROUP BY 1, 2",
        tenant,
        campaign,
        since,
    )
    totals = await pool.fetch(
        "SELECT event_type, count(*) AS total, count(DISTINCT message_id) AS uniq"
        " FROM email_events WHERE tenant_id = $1 AND mode = 'live' AND occurred_at >= $2"
        " GROUP BY 1",
        tenant,
        since,
    )
    daily = await pool.fetch(
        "SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, event_type, count(*) AS total,"
        " count(DISTINCT message_id) AS uniq FROM email_events WHERE tenant_id = $1"
        " AND mode = 'live' AND occurred_at >= $2 GROUP BY 1, 2",
        tenant,
        since,
    )
    return _norm(per_step), _norm(totals), _norm(daily)


async def _rolled(
    pool: asyncpg.Pool, tenant: str, campaign: UUID, since: datetime
) -> tuple[Any, ...]:
    owner = TenantScope(tenant, "live")
    return (
        _norm(await repo.campaign_event_counts_since(pool, tenant, campaign, since)),
        _norm(await repo.tenant_event_totals(pool, owner, since)),
        _norm(await repo.tenant_event_daily(pool, owner, since)),
    )


def _norm(rows: list[asyncpg.Record]) -> list[tuple[Any, ...]]:
    return sorted(tuple(r.values()) for r in rows if r["total"])


async def _check(pool: asyncpg.Pool, tenant: str, campaigns: list[UUID]) -> None:
    for days_back in range(0, 11):
        since = datetime(2026, 11, 20, tzinfo=UTC) + timedelta(days=days_back - 1)
        for campaign in campaigns:
            assert await _rolled(pool, tenant, campaign, since) == await _raw(
                pool, tenant, campaign, since
            ), (days_back, campaign)
    for campaign in campaigns:  # lifetime
        lifetime = _norm(await repo.campaign_event_counts(pool, tenant, campaign))
        raw = (await _raw(pool, tenant, campaign, datetime(2000, 1, 1, tzinfo=UTC)))[0]
        assert lifetime == raw


async def test_rollup_equals_counting_raw_events(campaigns_pool: asyncpg.Pool) -> None:
    tenant = f"ten_rollup_{uuid4().hex[:8]}"
    campaigns = [uuid4(), uuid4()]
    rows = _events(tenant, campaigns, random.Random(21))

    # Four consumers at once, each event in its own transaction, some delivered twice.
    async def consume(part: list[dict[str, Any]]) -> None:
        for row in part:
            async with campaigns_pool.acquire() as conn, conn.transaction():
                await repo.insert_email_event(conn, row)

    duplicated = rows + rows[::7]
    await asyncio.gather(*(consume(duplicated[i::4]) for i in range(4)))
    assert await campaigns_pool.fetchval(
        "SELECT count(*) FROM email_events WHERE tenant_id = $1", tenant
    ) == len(rows)
    await _check(campaigns_pool, tenant, campaigns)

    # A rebuild from the raw events gives the same counters.
    before = await campaigns_pool.fetch(
        "SELECT * FROM email_event_rollup WHERE tenant_id = $1 AND (events, messages, latest)"
        " <> (0, 0, 0) ORDER BY 1, 2, 3, 4, 5, 6, 7",
        tenant,
    )
    async with campaigns_pool.acquire() as conn:
        await conn.execute("SELECT rebuild_email_event_rollup()")
    after = await campaigns_pool.fetch(
        "SELECT * FROM email_event_rollup WHERE tenant_id = $1 AND (events, messages, latest)"
        " <> (0, 0, 0) ORDER BY 1, 2, 3, 4, 5, 6, 7",
        tenant,
    )
    assert [tuple(r.values()) for r in before] == [tuple(r.values()) for r in after]
    await _check(campaigns_pool, tenant, campaigns)
