"""Fair claiming across tenants (issue 13): a work item claims round-robin over every tenant
with due messages, so another tenant's large bulk ahead in the queue never holds back a small
tenant's message until it has drained."""

from __future__ import annotations

import pytest

from services.delivery import repository as repo
from tests.fakes.dns_server import FakeDns
from tests.integration.delivery.conftest import Harness, verify_sender_domain


@pytest.mark.parametrize("harness", [{"claim_limit": 10}], indirect=True)
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
        # first round (one message per tenant per turn), ahead of the bulk's backlog.
        async with h.service.pool.acquire() as conn:
            claimed = await repo.claim_fair(conn, 10, 60)
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


async def _commands(h: Harness, ids: list[str]) -> list[tuple[str, list[str]]]:
    """The send commands written for these messages: (queue, listed ids), oldest first."""
    async with h.service.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT routing_key, exchange, payload FROM outbox WHERE exchange IS NOT NULL"
            " AND payload::jsonb->'data'->'message_ids' ?| $1::text[] ORDER BY created_at, id",
            ids,
        )
    assert {r["exchange"] for r in rows} <= {"delivery.direct"}
    return [(r["routing_key"], r["payload"]["data"]["message_ids"]) for r in rows]


async def test_a_small_send_of_an_idle_tenant_takes_the_express_lane(
    harness: Harness, fake_dns: FakeDns, unique: str
) -> None:
    """A single send of a tenant with little else waiting gets a `SendExpress` on its own
    queue: never queued behind another tenant's bulk commands. A bulk, or a send of a tenant
    with a bulk's backlog, goes the general way (`SendBatch`): a bulk sender never takes
    the lane."""
    h = harness
    r = await h.client.post(
        "/api/v1/emails/send-bulk",
        headers=h.headers(plan="unlimited"),
        json={
            "from": "team@acme.example.com",
            "subject": "Bulk",
            "text": "t",
            "batch_size": 20,
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
    assert [q for q, _ in await _commands(h, bulk_ids)] == ["delivery.send", "delivery.send"]
    # The bulk's tenant has work queued: its next single send goes the general way too.
    busy_single = await h.send(to="again@example.com")
    assert await _commands(h, [busy_single]) == [("delivery.send", [busy_single])]

    small_tenant = f"small_{unique}"
    domain = f"small-{unique}.example.com"
    domain_id = await verify_sender_domain(h.service, fake_dns, small_tenant, domain)
    try:
        first, second = [
            (
                await h.client.post(
                    "/api/v1/emails/send",
                    headers=h.headers(tenant=small_tenant),
                    json={
                        "to": f"s{i}@example.com",
                        "from": f"hi@{domain}",
                        "subject": "s",
                        "text": "t",
                    },
                )  # fmt: skip
            ).json()["data"]["message_id"]
            for i in range(2)
        ]
        # Its first message still waiting does not make it a bulk sender.
        assert await _commands(h, [first]) == [("delivery.express", [first])]
        assert await _commands(h, [second]) == [("delivery.express", [second])]
    finally:
        await h.service.domains.delete(small_tenant, domain_id)


async def test_the_express_lane_claims_only_tenants_with_nothing_in_flight(
    harness: Harness, fake_dns: FakeDns, unique: str
) -> None:
    """While a bulk's claim is in flight (`sending`), the express claim takes the small
    tenant's message and none of the bulk's backlog; a listed message whose tenant is busy
    is handed over to the general queue as a `SendBatch`, not waited for. A tenant with
    fewer messages in flight than the lane's limit still takes it."""
    h = harness
    r = await h.client.post(
        "/api/v1/emails/send-bulk",
        headers=h.headers(plan="unlimited"),
        json={
            "from": "team@acme.example.com",
            "subject": "Bulk",
            "text": "t",
            "recipients": [{"email": f"b{i}@example.com"} for i in range(30)],
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
        in_flight = await repo.claim(conn, bulk_ids[:10], 60)  # a general slot's, unsent
    assert len(in_flight) == 10
    busy_single = await h.send(to="again@example.com")

    small_tenant = f"small_{unique}"
    domain = f"small-{unique}.example.com"
    domain_id = await verify_sender_domain(h.service, fake_dns, small_tenant, domain)
    try:
        r = await h.client.post(
            "/api/v1/emails/send",
            headers=h.headers(tenant=small_tenant),
            json={"to": "s@example.com", "from": f"hi@{domain}", "subject": "s", "text": "t"},
        )
        small_id = r.json()["data"]["message_id"]
        async with h.service.pool.acquire() as conn:
            express = await repo.claim_fair(conn, 200, 60, per_tenant=10, in_flight_below=10)
            # (Other tests' leftovers of idle tenants may come along: given back.)
            await repo.mark_retry(
                conn, [c["id"] for c in express], [0.0] * len(express), ["test"] * len(express)
            )
        ours = [c["id"] for c in express if c["tenant_id"] in (h.tenant, small_tenant)]
        assert ours == [small_id]
        async with h.service.pool.acquire() as conn:
            # With 10 in flight, the bulk's tenant is under a limit of 11: it may take 11.
            wider = await repo.claim_fair(conn, 200, 60, per_tenant=11, in_flight_below=11)
            await repo.mark_retry(
                conn, [c["id"] for c in wider], [0.0] * len(wider), ["test"] * len(wider)
            )
        assert sum(c["tenant_id"] == h.tenant for c in wider) == 11

        # Through the lane's handler: the small message is sent; the busy tenant's listed
        # message is left queued and handed over as a SendBatch.
        assert await h.service.dispatch_express([small_id, busy_single]) >= 1
        async with h.service.pool.acquire() as conn:
            statuses = dict(
                await conn.fetch(
                    "SELECT id, status FROM messages WHERE id = ANY($1::text[])",
                    [small_id, busy_single],
                )
            )
        assert statuses == {small_id: "sent", busy_single: "queued"}
        assert (await _commands(h, [busy_single]))[-1] == ("delivery.send", [busy_single])
    finally:
        await h.service.domains.delete(small_tenant, domain_id)
        async with h.service.pool.acquire() as conn:
            await repo.mark_retry(conn, [c["id"] for c in in_flight], [0.0] * 10, ["test"] * 10)
