"""At most once per attempt decision, in-process against the real database and a fake ESP:
an unanswered provider request is never resent, and a vanished worker's claims are requeued
only when their provider call had not started."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.delivery import repository as repo
from tests.integration.delivery.conftest import Harness


async def _email(h: Harness, mid: str) -> dict[str, Any]:
    r = await h.client.get(f"/api/v1/emails/{mid}", headers=h.headers())
    return dict(r.json()["data"])


@pytest.mark.parametrize("harness", [{"provider_timeout_seconds": 0.5}], indirect=True)
async def test_a_provider_that_does_not_answer_is_not_sent_to_twice(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    postmark = reset_fakes["postmark"]
    postmark.hold.clear()  # the request arrives; the answer never comes in time
    mid = await harness.send(to="slow@example.com", category="transactional")
    await harness.drain()
    postmark.hold.set()
    await harness.drain()
    email = await _email(harness, mid)
    assert email["status"] == "failed"
    assert email["last_error"] == "provider_outcome_unknown: ReadTimeout"
    assert postmark.recipients() == ["slow@example.com"]  # one request, never resent


@pytest.mark.parametrize("harness", [{"send_lease_seconds": 0.2}], indirect=True)
async def test_vanished_workers_claims_requeued_only_before_the_call(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    ids = [await harness.send(to=f"v{i}@example.com", category="transactional") for i in range(4)]
    pool = harness.service.pool
    async with pool.acquire() as conn:
        # A worker claimed all four (its claim, as `dispatch` makes it), started the provider
        # call for two, then vanished.
        claimed = await repo.claim_fair(conn, harness.service.settings.claim_limit, 0.2)
        assert set(ids) <= {r["id"] for r in claimed}
        await repo.mark_call_started(conn, ids[:2], "postmark")
    await asyncio.sleep(0.3)  # the lease runs out
    await harness.drain()
    started = [await _email(harness, mid) for mid in ids[:2]]
    unstarted = [await _email(harness, mid) for mid in ids[2:]]
    assert {e["status"] for e in started} == {"failed"}
    assert {e["last_error"] for e in started} == {"provider_outcome_unknown"}
    assert {e["status"] for e in unstarted} == {"sent"}
    assert {e["attempts"] for e in unstarted} == {1}  # the lost claim is not an attempt
    assert sorted(reset_fakes["postmark"].recipients()) == ["v2@example.com", "v3@example.com"]
    async with pool.acquire() as conn:
        failed_facts = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE event_type = 'email.failed'"
            " AND payload->'data'->>'message_id' = ANY($1::text[])",
            ids[:2],
        )
    assert failed_facts == 2  # reported, never silently dropped
