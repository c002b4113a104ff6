"""Per-tenant daily send quota of the plan table (issue 13): counted per tenant, mode and UTC
day in the accepting transaction; the API answers 429 `daily_send_quota_exceeded`, campaign
steps beyond it are deferred to the next day with room (visibly), never lost."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from libs.common.events import EmailRequested, TenantCreated, TenantPlanChanged, make_event
from libs.common.plans import PLANS
from libs.common.tenancy import TenantScope
from services.delivery import repository as repo
from tests.integration.delivery.conftest import Harness

_FREE = PLANS["free"].daily_sends
assert _FREE is not None
FREE: int = _FREE


def _bulk(n: int, offset: int = 0) -> dict[str, Any]:
    return {
        "from": "team@acme.example.com",
        "subject": "Hi",
        "text": "Hello",
        "recipients": [{"email": f"q{offset + i}@example.com"} for i in range(n)],
    }


async def _count(h: Harness, mode: str = "live") -> int:
    async with h.service.pool.acquire() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE tenant_id = $1 AND mode = $2", h.tenant, mode
        )
        return count


def _next_midnight() -> int:
    day = datetime.now(UTC).date() + timedelta(days=1)
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


async def test_api_sends_stop_at_the_plans_daily_quota(harness: Harness) -> None:
    h = harness
    free = h.headers(plan="free")
    r = await h.client.post("/api/v1/emails/send-bulk", json=_bulk(FREE + 1), headers=free)
    # A bulk send passing the quota is refused whole: nothing stored, nothing counted.
    assert r.status_code == 429, r.text
    body = r.json()
    assert body["success"] is False
    assert body["error"]["code"] == "daily_send_quota_exceeded"
    assert r.headers["X-Daily-Quota-Limit"] == str(FREE)
    assert r.headers["X-Daily-Quota-Remaining"] == str(FREE)
    assert int(r.headers["Retry-After"]) >= 1
    assert await _count(h) == 0

    r = await h.client.post("/api/v1/emails/send-bulk", json=_bulk(FREE - 1), headers=free)
    assert r.status_code == 202, r.text
    assert r.headers["X-Daily-Quota-Remaining"] == "1"
    assert r.headers["X-Daily-Quota-Reset"] == str(_next_midnight())
    single = {"to": "last@example.com", "from": "team@acme.example.com", "subject": "s"}
    r = await h.client.post("/api/v1/emails/send", json={**single, "text": "t"}, headers=free)
    assert r.status_code == 202 and r.headers["X-Daily-Quota-Remaining"] == "0"
    r = await h.client.post("/api/v1/emails/send", json={**single, "text": "t"}, headers=free)
    assert r.status_code == 429 and r.json()["error"]["code"] == "daily_send_quota_exceeded"
    assert r.headers["X-Daily-Quota-Remaining"] == "0"
    assert r.headers["X-Daily-Quota-Reset"] == str(_next_midnight())
    assert await _count(h) == FREE

    # Test mode counts apart (same number): the sandbox neither uses nor sees live quota.
    test_free = h.headers(plan="free", mode="test")
    r = await h.client.post("/api/v1/emails/send", json={**single, "text": "t"}, headers=test_free)
    assert r.status_code == 202 and r.headers["X-Daily-Quota-Remaining"] == str(FREE - 1)
    # Another plan, another number; `unlimited` has none (no headers).
    r = await h.client.post(
        "/api/v1/emails/send", json={**single, "text": "t"}, headers=h.headers(plan="starter")
    )
    assert r.status_code == 202
    assert r.headers["X-Daily-Quota-Limit"] == str(PLANS["starter"].daily_sends)
    r = await h.client.post(
        "/api/v1/emails/send", json={**single, "text": "t"}, headers=h.headers(plan="unlimited")
    )
    assert r.status_code == 202 and "X-Daily-Quota-Limit" not in r.headers


async def test_concurrent_accepts_never_pass_the_quota_together(harness: Harness) -> None:
    h = harness
    free = h.headers(plan="free")
    r = await h.client.post("/api/v1/emails/send-bulk", json=_bulk(FREE - 5), headers=free)
    assert r.status_code == 202, r.text
    single = {"from": "team@acme.example.com", "subject": "s", "text": "t"}
    answers = await asyncio.gather(
        *(
            h.client.post(
                "/api/v1/emails/send", json={**single, "to": f"c{i}@example.com"}, headers=free
            )
            for i in range(20)
        )
    )
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] * 5 + [429] * 15, codes
    assert await _count(h) == FREE


async def _request(h: Harness, to: str) -> str | None:
    data = EmailRequested(
        request_id=f"req-{to}", to=to, from_="team@acme.example.com", subject="Hi", text="Hello"
    )
    async with h.service.pool.acquire() as conn, conn.transaction():
        return await h.service.accept_requested(conn, h.tenant, data)


async def _learn(h: Harness, event: Any) -> None:
    async with h.service.pool.acquire() as conn, conn.transaction():
        await h.service.learn_plan(conn, event)


@pytest.mark.parametrize("harness", [{"quota_defer_days": 1}], indirect=True)
async def test_campaign_steps_beyond_the_quota_are_deferred_not_lost(harness: Harness) -> None:
    h = harness
    await _learn(
        h,
        make_event(
            TenantCreated(name="Acme", plan="free"), tenant_id=h.tenant, source="/services/keys"
        ),
    )
    # A plan fact from a producer that may not change plans is ignored.
    await _learn(
        h,
        make_event(
            TenantPlanChanged(old_plan="free", new_plan="enterprise"),
            tenant_id=h.tenant,
            source="/services/campaigns",
        ),
    )
    r = await h.client.post(
        "/api/v1/emails/send-bulk", json=_bulk(FREE), headers=h.headers(plan="free")
    )
    assert r.status_code == 202, r.text
    deferred = await _request(h, "step@example.com")
    assert deferred is not None
    async with h.service.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT status, next_attempt_at, last_error FROM messages WHERE id = $1", deferred
        )
        tomorrow = datetime.now(UTC).date() + timedelta(days=1)
        assert row["status"] == "queued"
        assert row["last_error"] == "daily_send_quota_exceeded"
        assert row["next_attempt_at"] == datetime(
            tomorrow.year, tomorrow.month, tomorrow.day, tzinfo=UTC
        )
        # Counted on the day it is deferred to; fill the rest of that day.
        assert await repo.daily_sends(conn, TenantScope(h.tenant, "live"), tomorrow) == 1
        assert await repo.take_daily_sends(
            conn, TenantScope(h.tenant, "live"), tomorrow, FREE - 1, FREE
        )
    # No room within the horizon: refused (the consumer dead-letters it, replayable).
    from services.delivery.service import DailyQuotaExceeded

    with pytest.raises(DailyQuotaExceeded):
        await _request(h, "later@example.com")
    assert await _count(h) == FREE + 1
    # The same request again (redelivery) is the same message, counted once.
    assert await _request(h, "step@example.com") == deferred

    # An upgrade from billing lifts the quota for the campaign path too.
    await _learn(
        h,
        make_event(
            TenantPlanChanged(old_plan="free", new_plan="pro"),
            tenant_id=h.tenant,
            source="/services/billing",
        ),
    )
    sent_now = await _request(h, "after-upgrade@example.com")
    async with h.service.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT last_error FROM messages WHERE id = $1", sent_now)
    assert row["last_error"] is None
