"""Fair claiming across tenants (issue 13): a work item claims round-robin over every tenant
with due messages, so another tenant's large bulk ahead in the queue never holds back a small
tenant's message until it has drained."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from services.delivery import repository as repo
from tests.fakes.dns_server import FakeDns
from tests.integration.delivery.conftest import Harness, verify_sender_domain


# The express lane off: the workers' fair claim alone (test_express_lane.py has both lanes).
@pytest.mark.parametrize(
    "harness", [{"claim_limit": 10, "express_max_recipients": 0}], indirect=True
)
async def test_a_bulks_work_item_also_claims_another_tenants_message(
    harness: Harness, fake_dns: FakeDns, unique: str
) -> None:
    h = harness
    big = h.headers(plan="unlimited")
    r = await h.client.post(
        "/api/v1/emails/send-bulk",
        headers=big,
        json={
            "from": "team@acme.example.com",
            "subject": "Bulk",
            "text": "t",
            "batch_size": 40,
            "recipients": [{"email": f"b{i}@example.com"} for i in range(40)],
        },
    )
    assert r.status_code == 202, r.text
    async with h.service.pool.acquire() as conn:
        bulk_ids = [
            row["id"]
            for row in await conn.fetch(
                "SELECT id FROM messages WHERE batch_id = $1 ORDER BY id",
                r.json()["data"]["batch_id"],
            )
        ]
    small_tenant = f"small_{unique}"
    domain = f"small-{unique}.example.com"
    domain_id = await verify_sender_domain(h.service, fake_dns, small_tenant, domain)
    try:
        r = await h.client.post(
            "/api/v1/emails/send",
            headers=h.headers(tenant=small_tenant),
            json={"to": "s@example.com", "from": f"hi@{domain}", "subject": "s", "text": "t"},
        )
        assert r.status_code == 202, r.text
        small_id = r.json()["data"]["message_id"]

        # The first claim of the bulk's work item takes the small tenant's message in its
        # first round (one message per tenant per turn), ahead of the bulk's backlog; with
        # two tenants waiting it is a fair claim's size, not the one of a tenant alone.
        async with h.service.pool.acquire() as conn:
            claimed = await repo.claim_fair(conn, 10, 60, alone=40)
        claimed_ids = [c["id"] for c in claimed]
        assert small_id in claimed_ids
        assert len(claimed_ids) == 10
        async with h.service.pool.acquire() as conn:
            await repo.mark_retry(conn, claimed_ids, [0.0] * 10, ["test"] * 10)

        # Through the work item: the bulk's item sends the small message too, and keeps
        # claiming until its own 40 messages are out.
        sent = await h.service.dispatch(bulk_ids)
        assert sent >= 41
        async with h.service.pool.acquire() as conn:
            statuses = dict(
                await conn.fetch(
                    "SELECT id, status FROM messages WHERE id = ANY($1::text[])",
                    [*bulk_ids, small_id],
                )
            )
        assert statuses[small_id] == "sent"
        assert {statuses[i] for i in bulk_ids} == {"sent"}
    finally:
        await h.service.domains.delete(small_tenant, domain_id)


@pytest.mark.parametrize("harness", [{"claim_limit": 10}], indirect=True)
async def test_a_tenant_alone_in_the_queue_is_claimed_in_larger_batches(harness: Harness) -> None:
    h = harness
    r = await h.client.post(
        "/api/v1/emails/send-bulk",
        headers=h.headers(plan="unlimited"),
        json={
            "from": "team@acme.example.com",
            "subject": "Bulk",
            "text": "t",
            "recipients": [{"email": f"b{i}@example.com"} for i in range(40)],
        },
    )
    assert r.status_code == 202, r.text
    batch_id = r.json()["data"]["batch_id"]
    async with h.service.pool.acquire() as conn:
        # Alone: other tests' leftovers in this shared database are set aside for this claim,
        # in a transaction rolled back after it.
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute(
                "DELETE FROM messages WHERE status = 'queued' AND tenant_id <> $1", h.tenant
            )
            claimed = await repo.claim_fair(conn, 10, 60, alone=30)
        finally:
            await tx.rollback()
    assert len(claimed) == 30
    assert {c["tenant_id"] for c in claimed} == {h.tenant}
    # Out of the shared queue again, like any bulk: all 40 sent through their work item.
    async with h.service.pool.acquire() as conn:
        bulk_ids = [
            row["id"]
            for row in await conn.fetch("SELECT id FROM messages WHERE batch_id = $1", batch_id)
        ]
        assert len(bulk_ids) == 40
        await h.service.dispatch(bulk_ids)
        statuses = await conn.fetch(
            "SELECT DISTINCT status FROM messages WHERE batch_id = $1", batch_id
        )
    assert [s["status"] for s in statuses] == ["sent"]


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


async def test_a_claim_finds_its_messages_by_key_whatever_the_backlog(harness: Harness) -> None:
    """The claim's update finds the chosen messages by primary key. Joined to them (a number
    the planner cannot know: a LIMIT of a CASE) it hashed a sequential scan of every message,
    a cost growing with the backlog on each claim of it."""
    h = harness
    now = datetime.now(UTC)
    async with h.service.pool.acquire() as conn:
        tx = conn.transaction()  # rolled back: the backlog never reaches other tests' claims
        await tx.start()
        try:
            content_id = f"cnt_{h.tenant}"
            await repo.insert_content(
                conn,
                {"id": content_id, "tenant_id": h.tenant, "from_email": "team@acme.example.com",
                 "subject": "s", "html": None, "text_body": "t", "template_id": None,
                 "reply_to": None},
            )  # fmt: skip
            await repo.copy_messages(
                conn,
                [
                    repo.MessageRow(
                        id=f"msg_{h.tenant}_{i}", tenant_id=h.tenant, mode="live",
                        content_id=content_id, batch_id=None, request_id=None, campaign_id=None,
                        contact_id=None, step=None, to_email=f"b{i}@example.com", variables={},
                        category="marketing", tags=[], metadata={}, track_opens=True,
                        track_clicks=True, status="queued", next_attempt_at=now, contact_tags=[],
                    )
                    for i in range(5000)
                ],
            )  # fmt: skip
            await conn.execute("ANALYZE messages")
            plan = await conn.fetchval(
                "EXPLAIN (FORMAT JSON) " + repo._CLAIM_FAIR, 200, 60.0, 200, None, 1000, 5.0
            )
        finally:
            await tx.rollback()
    nodes = [
        (n["Node Type"], n.get("Relation Name"), n.get("Index Name"))
        for n in _plan_nodes(plan[0]["Plan"])
    ]
    assert not [n for n in nodes if n[0] == "Seq Scan"], nodes
    assert "messages_pkey" in {index for _, _, index in nodes}, nodes
