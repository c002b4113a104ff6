"""Campaigns over HTTP: validation, the status machine (409 with the current status),
recipients frozen at start, pause/resume/cancel and their events, tenant isolation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from tests.integration.campaigns.conftest import principal_headers

URL = "/api/v1/campaigns"


async def make_contacts(
    api: httpx.AsyncClient, auth: dict[str, str], n: int, tag: str
) -> list[str]:
    rows = [{"email": f"{tag}{i}@example.org", "tags": [tag]} for i in range(n)]
    r = await api.post("/api/v1/contacts/import", json=rows, headers=auth)
    assert r.json()["data"]["created"] == n
    listed = await api.get("/api/v1/contacts", params={"tag": tag, "limit": 500}, headers=auth)
    return [c["id"] for c in listed.json()["data"]]


def campaign_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Outbound Q1",
        "from_email": "sales@penguin.example",
        "from_name": "Sales",
        "subject": "Hello {{ first_name | default('there') }}",
        "content": {"html": "<p>Hi</p>", "text": "Hi"},
        "recipients": {"tags": ["lead"]},
        "settings": {"track_opens": True, "track_clicks": False, "category": "marketing"},
        "follow_ups": [{"delay_days": 3, "content": {"text": "Bumping this"}}],
        "schedule": {
            "timezone": "America/New_York",
            "days": ["mon", "tue", "wed", "thu", "fri"],
            "start_hour": 9,
            "end_hour": 17,
        },
        "daily_cap": 100,
        "spacing": {"min_seconds": 30, "max_seconds": 90},
    }
    body.update(over)
    return body


async def test_validation_errors(api: httpx.AsyncClient, auth: dict[str, str]) -> None:
    cases = [
        (campaign_body(from_email="nope"), "body.from_email"),
        (campaign_body(recipients={}), "body.recipients"),
        (campaign_body(recipients={"tags": ["a"], "contact_ids": []}), "body.recipients"),
        (campaign_body(content={}), "body.content"),
        (campaign_body(schedule={"timezone": "Mars/Olympus"}), "body.schedule.timezone"),
        (campaign_body(schedule={"start_hour": 17, "end_hour": 9}), "body.schedule"),
        (campaign_body(spacing={"min_seconds": 60, "max_seconds": 10}), "body.spacing"),
        (campaign_body(daily_cap=0), "body.daily_cap"),
        (
            campaign_body(follow_ups=[{"delay_days": 0, "content": {"text": "x"}}]),
            "body.follow_ups.0.delay_days",
        ),
        (campaign_body(scheduled_at="2030-01-01T09:00:00"), "body.scheduled_at"),
        (campaign_body(settings={"category": "spam"}), "body.settings.category"),
        (campaign_body(subject=None), "body"),
        (
            campaign_body(recipients={"contact_ids": ["00000000-0000-0000-0000-000000000001"]}),
            "body.recipients.contact_ids",
        ),
        (
            campaign_body(content={"template_id": "00000000-0000-0000-0000-000000000001"}),
            "body.content.template_id",
        ),
    ]
    for body, field in cases:
        r = await api.post(URL, json=body, headers=auth)
        assert r.status_code == 422, (body, r.text)
        fields = [d["field"] for d in r.json()["error"]["details"]]
        assert any(f.startswith(field) for f in fields), (field, fields)
    r = await api.post(URL, json=campaign_body(content={"html": "{{ x.__class__ }}"}), headers=auth)
    assert r.status_code == 422 and r.json()["error"]["code"] == "template_unsafe"


async def test_status_machine(
    api: httpx.AsyncClient, auth: dict[str, str], tenant: str, campaigns_pool: asyncpg.Pool
) -> None:
    ids = await make_contacts(api, auth, 5, "lead")
    r = await api.post(URL, json=campaign_body(), headers=auth)
    assert r.status_code == 201, r.text
    camp = r.json()["data"]
    cid = camp["id"]
    assert camp["status"] == "draft" and camp["follow_ups"][0]["delay_days"] == 3

    for action in ("pause", "resume"):
        r = await api.post(f"{URL}/{cid}/{action}", headers=auth)
        assert r.status_code == 409
        err = r.json()["error"]
        assert err["code"] == "invalid_status_transition"
        assert err["details"] == [{"field": "status", "message": "draft"}]

    r = await api.put(f"{URL}/{cid}", json={"name": "Renamed", "daily_cap": 50}, headers=auth)
    assert r.status_code == 200 and r.json()["data"]["name"] == "Renamed"
    assert r.json()["data"]["follow_ups"] == camp["follow_ups"]

    r = await api.post(f"{URL}/{cid}/start", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "running"
    assert r.json()["data"]["recipient_count"] == 5

    # Recipients were frozen: a lead added now is not part of the campaign.
    await api.post(
        "/api/v1/contacts", json={"email": "late@example.org", "tags": ["lead"]}, headers=auth
    )
    frozen = await campaigns_pool.fetch(
        "SELECT contact_id FROM campaign_recipients WHERE campaign_id = $1",
        __import__("uuid").UUID(cid),
    )
    assert sorted(str(r["contact_id"]) for r in frozen) == sorted(ids)

    r = await api.put(f"{URL}/{cid}", json={"name": "x"}, headers=auth)
    assert r.status_code == 409 and r.json()["error"]["code"] == "campaign_not_editable"
    assert r.json()["error"]["details"][0]["message"] == "running"
    assert (await api.delete(f"{URL}/{cid}", headers=auth)).status_code == 409
    assert (await api.post(f"{URL}/{cid}/start", headers=auth)).status_code == 409
    assert (await api.post(f"{URL}/{cid}/resume", headers=auth)).status_code == 409

    r = await api.post(f"{URL}/{cid}/pause", headers=auth)
    assert r.json()["data"]["status"] == "paused"
    assert (await api.post(f"{URL}/{cid}/pause", headers=auth)).status_code == 409
    r = await api.post(f"{URL}/{cid}/resume", headers=auth)
    assert r.json()["data"]["status"] == "running"
    r = await api.post(f"{URL}/{cid}/cancel", headers=auth)
    assert r.json()["data"]["status"] == "cancelled"
    r = await api.post(f"{URL}/{cid}/resume", headers=auth)
    assert r.status_code == 409 and r.json()["error"]["details"][0]["message"] == "cancelled"
    states = await campaigns_pool.fetch(
        "SELECT DISTINCT state, stop_reason FROM campaign_recipients WHERE campaign_id = $1",
        __import__("uuid").UUID(cid),
    )
    assert [(s["state"], s["stop_reason"]) for s in states] == [("stopped", "cancelled")]

    types = await campaigns_pool.fetch(
        "SELECT event_type FROM outbox WHERE tenant_id = $1 AND event_type LIKE 'campaign.%'"
        " ORDER BY created_at",
        tenant,
    )
    assert [t["event_type"] for t in types] == [
        "campaign.created",
        "campaign.updated",
        "campaign.started",
        "campaign.paused",
        "campaign.resumed",
        "campaign.cancelled",
    ]
    assert (await api.delete(f"{URL}/{cid}", headers=auth)).status_code == 200
    assert (await api.get(f"{URL}/{cid}", headers=auth)).status_code == 404


async def test_scheduled_start_and_no_recipients(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    r = await api.post(URL, json=campaign_body(recipients={"tags": ["nobody"]}), headers=auth)
    cid = r.json()["data"]["id"]
    r = await api.post(f"{URL}/{cid}/start", headers=auth)
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_recipients"
    assert (await api.get(f"{URL}/{cid}", headers=auth)).json()["data"]["status"] == "draft"

    await make_contacts(api, auth, 2, "later")
    at = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    r = await api.post(
        URL, json=campaign_body(recipients={"tags": ["later"]}, scheduled_at=at), headers=auth
    )
    cid = r.json()["data"]["id"]
    r = await api.post(f"{URL}/{cid}/start", headers=auth)
    assert r.json()["data"]["status"] == "scheduled"
    assert r.json()["data"]["started_at"] is None


async def test_template_content_and_isolation(
    api: httpx.AsyncClient, auth: dict[str, str], tenant: str
) -> None:
    ids = await make_contacts(api, auth, 2, "tpl")
    r = await api.post(
        "/api/v1/templates",
        json={"name": "t", "subject": "From template", "text": "Body {{ email }}"},
        headers=auth,
    )
    tid = r.json()["data"]["id"]
    body = campaign_body(
        subject=None, content={"template_id": tid}, recipients={"contact_ids": ids}
    )
    r = await api.post(URL, json=body, headers=auth)
    assert r.status_code == 201, r.text
    cid = r.json()["data"]["id"]
    other = principal_headers(f"{tenant}_other")
    assert (await api.get(f"{URL}/{cid}", headers=other)).status_code == 404
    assert (await api.post(f"{URL}/{cid}/start", headers=other)).status_code == 404
    assert (await api.get(f"/api/v1/analytics/campaigns/{cid}", headers=other)).status_code == 404
    r = await api.get(URL, headers=other)
    assert r.json()["data"] == []
    # The other tenant cannot point its campaign at these contacts or this template.
    r = await api.post(URL, json=body, headers=other)
    assert r.status_code == 422
    r = await api.post(f"{URL}/{cid}/start", headers=auth)
    assert r.json()["data"]["subject"] == "From template"
    r = await api.get(URL, params={"status": "running"}, headers=auth)
    assert [c["id"] for c in r.json()["data"]] == [cid]
