"""Analytics read models fed by delivery's email.* events through the real worker process:
counts equal the facts fed in, with duplicated and reordered deliveries; contact status
follows unsubscribes, hard bounces and complaints (never weakened by late events)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from libs.common.events import (
    EmailBounced,
    EmailClicked,
    EmailComplained,
    EmailDelivered,
    EmailOpened,
    EmailReplied,
    EmailSent,
    EmailUnsubscribed,
    Envelope,
    make_event,
)
from tests.conftest import ServiceProcess
from tests.integration.campaigns.conftest import eventually, handled, principal_headers, publish


def ev(tenant: str, data: Any) -> Envelope:
    return make_event(data, tenant_id=tenant, source="/services/delivery")


async def engagement_handled(pool: asyncpg.Pool, events: list[Envelope]) -> bool:
    """Whether the worker's engagement consumer has handled (committed) every one of
    `events`: its inbox rows, not a process-wide counter other tests also move."""
    n: int = await pool.fetchval(
        "SELECT count(*) FROM inbox WHERE consumer = 'campaigns.engagement'"
        " AND event_id = ANY($1::uuid[])",
        [e.id for e in events],
    )
    return n == len(events)


async def test_campaign_tenant_and_contact_analytics_equal_the_events(
    api: httpx.AsyncClient, auth: dict[str, str], tenant: str, amqp_url: str, worker: ServiceProcess
) -> None:
    contacts = []
    for i in range(3):
        r = await api.post(
            "/api/v1/contacts", json={"email": f"an{i}@x.io", "tags": ["an"]}, headers=auth
        )
        contacts.append(r.json()["data"])
    r = await api.post(
        "/api/v1/campaigns",
        json={
            "name": "A",
            "from_email": "a@p.example",
            "subject": "s",
            "content": {"text": "t"},
            "recipients": {"tags": ["an"]},
        },
        headers=auth,
    )
    cid = r.json()["data"]["id"]
    now = datetime.now(UTC)
    c = [x["id"] for x in contacts]
    to = [x["email"] for x in contacts]

    def common(i: int) -> dict[str, Any]:
        return {
            "message_id": f"m{i}-{cid}",
            "to": to[i],
            "campaign_id": cid,
            "contact_id": c[i],
            "step": 1,
        }

    sent = [
        ev(tenant, EmailSent(**common(i), provider="postmark", occurred_at=now)) for i in range(3)
    ]
    delivered = [
        ev(tenant, EmailDelivered(**common(i), occurred_at=now + timedelta(seconds=5)))
        for i in range(2)
    ]
    opened = [
        ev(tenant, EmailOpened(**common(0), occurred_at=now + timedelta(minutes=1))),
        ev(tenant, EmailOpened(**common(0), occurred_at=now + timedelta(minutes=9))),
        ev(tenant, EmailOpened(**common(1), occurred_at=now + timedelta(minutes=2))),
    ]
    clicked = ev(
        tenant,
        EmailClicked(**common(0), url="https://x.io/a", occurred_at=now + timedelta(minutes=10)),
    )
    replied = ev(tenant, EmailReplied(**common(1), occurred_at=now + timedelta(hours=1)))
    bounced = ev(tenant, EmailBounced(**common(2), bounce_type="hard", occurred_at=now))
    old = ev(
        tenant,
        EmailSent(
            message_id="old", to=to[0], provider="smtp", occurred_at=now - timedelta(days=10)
        ),
    )
    # Out of order (opens and the click before sends and deliveries) and with duplicates:
    # the same envelopes published again, as a relay republish or a DLQ replay would.
    feed = [*opened, clicked, replied, *delivered, *sent, bounced, old]
    duplicates = [opened[0], clicked, sent[1], delivered[0]]
    before = handled(worker, "campaigns.analytics", "duplicate")
    await publish(amqp_url, *feed, *duplicates)

    async def settled() -> bool:
        return handled(worker, "campaigns.analytics", "duplicate") - before >= len(duplicates)

    await eventually(settled, timeout=30)

    async def stats() -> dict[str, Any]:
        r = await api.get(f"/api/v1/analytics/campaigns/{cid}", headers=auth)
        return dict(r.json()["data"])

    data = await eventually(lambda: _when(stats, lambda d: d["total"]["bounced"] == 1), timeout=30)
    assert data["total"] == {
        "sent": 3,
        "delivered": 2,
        "opened": 3,
        "clicked": 1,
        "replied": 1,
        "bounced": 1,
        "complained": 0,
        "unsubscribed": 0,
        "failed": 0,
    }
    assert data["unique"]["opened"] == 2 and data["unique"]["sent"] == 3
    assert data["rates"]["open_rate"] == 1.0  # 2 unique opens / 2 delivered
    assert data["rates"]["click_rate"] == 0.5
    assert data["rates"]["reply_rate"] == round(1 / 3, 4)
    assert data["rates"]["bounce_rate"] == round(1 / 3, 4)
    assert data["steps"][0]["step"] == 1 and data["steps"][0]["total"]["sent"] == 3

    r = await api.get("/api/v1/analytics/emails", params={"period": "7d"}, headers=auth)
    week = r.json()["data"]
    assert week["total"]["sent"] == 3 and week["unique"]["opened"] == 2
    assert len(week["daily"]) == 7
    assert sum(d["sent"] for d in week["daily"]) == 3
    r = await api.get("/api/v1/analytics/emails", params={"period": "30d"}, headers=auth)
    assert r.json()["data"]["total"]["sent"] == 4  # the 10-day-old send counts in 30 days
    r = await api.get("/api/v1/analytics/emails", params={"period": "1y"}, headers=auth)
    assert r.status_code == 422
    # Test-mode analytics are apart from live ones.
    r = await api.get("/api/v1/analytics/emails", headers=principal_headers(tenant, mode="test"))
    assert r.json()["data"]["total"]["sent"] == 0

    r = await api.get(f"/api/v1/analytics/contacts/{c[0]}", params={"limit": 3}, headers=auth)
    body = r.json()
    timeline = body["data"]["timeline"]
    assert [t["type"] for t in timeline] == ["email.clicked", "email.opened", "email.opened"]
    assert timeline[0]["detail"] == {"url": "https://x.io/a"}
    assert body["data"]["total"]["opened"] == 2 and body["data"]["unique"]["opened"] == 1
    rest = await api.get(
        f"/api/v1/analytics/contacts/{c[0]}",
        params={"limit": 3, "cursor": body["meta"]["pagination"]["next_cursor"]},
        headers=auth,
    )
    assert [t["type"] for t in rest.json()["data"]["timeline"]] == ["email.delivered", "email.sent"]
    assert rest.json()["meta"]["pagination"]["has_more"] is False
    other = principal_headers(f"{tenant}_o")
    assert (await api.get(f"/api/v1/analytics/contacts/{c[0]}", headers=other)).status_code == 404
    assert (await api.get(f"/api/v1/analytics/campaigns/{cid}", headers=other)).status_code == 404


async def _when(fetch: Any, pred: Any) -> Any:
    value = await fetch()
    return value if pred(value) else None


async def test_contact_status_follows_suppression_events(
    api: httpx.AsyncClient,
    auth: dict[str, str],
    tenant: str,
    amqp_url: str,
    worker: ServiceProcess,
    campaigns_pool: asyncpg.Pool,
) -> None:
    ids = {}
    for name in ("soft", "hard", "unsub", "complaint", "byemail"):
        r = await api.post("/api/v1/contacts", json={"email": f"{name}@s.io"}, headers=auth)
        ids[name] = r.json()["data"]["id"]

    def base(name: str, with_id: bool = True) -> dict[str, Any]:
        return {
            "message_id": f"m-{name}",
            "to": f"{name}@s.io",
            **({"contact_id": ids[name]} if with_id else {}),
        }

    # The worker handles up to its prefetch at once, in any order: each stage is published
    # once the previous one is handled (its events are in the engagement consumer's inbox),
    # so "late" means late, whatever the load.
    first = [
        ev(tenant, EmailBounced(**base("soft"), bounce_type="soft")),
        ev(tenant, EmailBounced(**base("hard"), bounce_type="hard")),
        ev(tenant, EmailUnsubscribed(**base("unsub"))),
        ev(tenant, EmailComplained(**base("complaint"))),
        # Matched by address when delivery knows no contact id (case-insensitive).
        ev(tenant, EmailUnsubscribed(message_id="m-x", to="ByEmail@S.io")),
    ]
    await publish(amqp_url, *first)
    await eventually(lambda: engagement_handled(campaigns_pool, first), timeout=60)
    late = [
        # A late hard bounce must not weaken the complaint.
        ev(tenant, EmailBounced(**base("complaint"), bounce_type="hard")),
        # Another tenant's event about the same address changes nothing here.
        ev(f"{tenant}_o", EmailUnsubscribed(message_id="m-o", to="soft@s.io")),
    ]
    await publish(amqp_url, *late)
    await eventually(lambda: engagement_handled(campaigns_pool, late), timeout=60)

    got = {}
    for name, cid in ids.items():
        got[name] = (await api.get(f"/api/v1/contacts/{cid}", headers=auth)).json()["data"][
            "status"
        ]
    assert got == {
        "soft": "active",
        "hard": "bounced",
        "unsub": "unsubscribed",
        "complaint": "complained",
        "byemail": "unsubscribed",
    }
    changed = await campaigns_pool.fetch(
        "SELECT payload->'data'->>'contact_id' AS id FROM outbox WHERE tenant_id = $1"
        " AND event_type = 'contact.updated'",
        tenant,
    )
    assert sorted(r["id"] for r in changed) == sorted(
        ids[n] for n in ("hard", "unsub", "complaint", "byemail")
    )


async def test_test_mode_sends_count_in_test_analytics_only(
    api: httpx.AsyncClient, auth: dict[str, str], tenant: str, amqp_url: str, worker: ServiceProcess
) -> None:
    """Issue 15 §7: the mode is the envelope's (delivery's email.* data carries none); a
    test-mode send without a campaign used to be counted as live."""
    now = datetime.now(UTC)
    test_send = make_event(
        EmailSent(message_id=f"mt-{tenant}", to="t@x.io", provider="sandbox", occurred_at=now),
        tenant_id=tenant,
        source="/services/delivery",
        mode="test",
    )
    live_send = ev(
        tenant, EmailSent(message_id=f"ml-{tenant}", to="l@x.io", provider="smtp", occurred_at=now)
    )
    await publish(amqp_url, test_send, live_send)
    test_auth = principal_headers(tenant, mode="test")

    async def counts() -> tuple[int, int] | None:
        live = await api.get("/api/v1/analytics/emails", headers=auth)
        test = await api.get("/api/v1/analytics/emails", headers=test_auth)
        got = (live.json()["data"]["total"]["sent"], test.json()["data"]["total"]["sent"])
        return got if sum(got) >= 2 else None

    assert await eventually(counts, timeout=30) == (1, 1)


async def test_conversions_period_overview_and_analytics_updated(
    api: httpx.AsyncClient,
    auth: dict[str, str],
    tenant: str,
    amqp_url: str,
    worker: ServiceProcess,
    campaigns_pool: asyncpg.Pool,
) -> None:
    r = await api.post(
        "/api/v1/contacts", json={"email": "buyer@x.io", "tags": ["b"]}, headers=auth
    )
    contact = r.json()["data"]
    cids = []
    for name in ("older", "latest"):
        r = await api.post(
            "/api/v1/campaigns",
            json={
                "name": name,
                "from_email": "a@p.example",
                "subject": "s",
                "content": {"text": "t"},
                "recipients": {"tags": ["b"]},
            },
            headers=auth,
        )
        cids.append(r.json()["data"]["id"])
    now = datetime.now(UTC)

    def sent(cid: str, at: datetime, n: str) -> Envelope:
        return ev(
            tenant,
            EmailSent(
                message_id=f"m-{n}-{cid}",
                to="buyer@x.io",
                campaign_id=cid,
                contact_id=contact["id"],
                step=1,
                provider="smtp",
                occurred_at=at,
            ),
        )

    old = now - timedelta(days=20)
    await publish(
        amqp_url,
        sent(cids[0], now - timedelta(hours=2), "a"),
        sent(cids[1], now - timedelta(hours=1), "b"),
        sent(cids[1], old, "old"),
        ev(tenant, EmailOpened(message_id=f"m-b-{cids[1]}", to="buyer@x.io", campaign_id=cids[1])),
    )

    async def counted() -> bool:
        r = await api.get(f"/api/v1/analytics/campaigns/{cids[1]}", headers=auth)
        return bool(r.json()["data"]["unique"]["opened"] == 1)

    await eventually(counted, timeout=30)

    # Attributed to the last campaign that sent to the contact; by email or contact id.
    body = {"email": "Buyer@x.io", "goal": "purchase", "value": 49.5, "currency": "USD"}
    body["occurred_at"] = now.isoformat()
    r = await api.post("/api/v1/conversions", json=body, headers=auth)
    assert r.status_code == 201, r.text
    first = r.json()["data"]
    assert first["campaign_id"] == cids[1] and first["created"] is True
    # Idempotent: the same contact, goal and instant is the same conversion.
    r = await api.post(
        "/api/v1/conversions",
        json={**body, "email": None, "contact_id": contact["id"]},
        headers=auth,
    )
    assert r.status_code == 200 and r.json()["data"]["id"] == first["id"]
    r = await api.post(
        "/api/v1/conversions",
        json={"contact_id": contact["id"], "goal": "signup", "campaign_id": cids[0]},
        headers=auth,
    )
    assert r.status_code == 201 and r.json()["data"]["campaign_id"] == cids[0]
    for bad in (
        {"goal": "x"},
        {"email": "buyer@x.io", "contact_id": contact["id"], "goal": "x"},
        {"email": "buyer@x.io", "goal": "x", "currency": "usd", "value": 1},
    ):
        r = await api.post("/api/v1/conversions", json=bad, headers=auth)
        assert r.status_code == 422, (bad, r.text)
    r = await api.post("/api/v1/conversions", json={"email": "no@x.io", "goal": "x"}, headers=auth)
    assert r.status_code == 404

    r = await api.get(
        f"/api/v1/analytics/campaigns/{cids[1]}", params={"period": "7d"}, headers=auth
    )
    week = r.json()["data"]
    assert week["overview"]["sent"] == 1 and week["overview"]["opened"] == 1
    assert week["conversions"] == 1 and week["overview"]["conversions"] == 1
    assert week["revenue"] == [{"currency": "USD", "amount": 49.5, "conversions": 1}]
    r = await api.get(
        f"/api/v1/analytics/campaigns/{cids[1]}", params={"period": "30d"}, headers=auth
    )
    assert r.json()["data"]["overview"]["sent"] == 2
    r = await api.get(f"/api/v1/analytics/campaigns/{cids[1]}", headers=auth)
    assert r.json()["data"]["overview"]["sent"] == 2  # no period: lifetime
    r = await api.get(
        f"/api/v1/analytics/campaigns/{cids[1]}", params={"period": "91d"}, headers=auth
    )
    assert r.status_code == 422

    types = await campaigns_pool.fetch(
        "SELECT event_type, payload->'data' AS data FROM outbox WHERE tenant_id = $1"
        " AND event_type IN ('goal.converted', 'revenue.recorded', 'analytics.updated')"
        " ORDER BY created_at",
        tenant,
    )
    by_type: dict[str, list[Any]] = {}
    for t in types:
        by_type.setdefault(t["event_type"], []).append(t["data"])
    assert [d["goal"] for d in by_type["goal.converted"]] == ["purchase", "signup"]
    assert [d["value"] for d in by_type["revenue.recorded"]] == [49.5]
    # Four facts about two campaigns within a minute: one notice per campaign.
    assert sorted(d["campaign_id"] for d in by_type["analytics.updated"]) == sorted(cids)
