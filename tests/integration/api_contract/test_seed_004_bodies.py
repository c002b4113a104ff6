"""Seed 004's example request bodies, sent through a real gateway to the real services and
answered 2xx (issue 15 §1). The bodies are copied verbatim from the seed; the only
adaptations are the ones the issue allows: base URL, API key, and ids created earlier in the
same test (the seed's `campaign_abc123` can never exist). The webhook body is covered by the
webhooks tests.

Also shown here, end to end: the default sender (sending settings) reaching sends and
campaigns, a template named by its key, personalization reaching the rendered mail, and
send-bulk pulling a campaign's content through delivery's read model."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx

from tests.integration.api_contract.conftest import Account, connect
from tests.integration.common.amqp_tools import eventually

# POST /api/v1/campaigns ("Create Campaign").
SEED_CAMPAIGN: dict[str, Any] = {
    "name": "Welcome Email Series",
    "subject": "Welcome to PenguinMails!",
    "content": {
        "html": "<h1>Welcome!</h1><p>Thank you for joining us.</p>",
        "text": "Welcome! Thank you for joining us.",
        "template_id": "welcome_template",
    },
    "recipients": [
        {
            "email": "user1@example.com",
            "personalization": {"name": "John", "company": "Acme Corp"},
        }
    ],
    "settings": {
        "analytics_enabled": True,
        "ai_optimization": True,
        "track_opens": True,
        "track_clicks": True,
    },
}
# POST /api/v1/emails/send ("Single Email Send").
SEED_SEND: dict[str, Any] = {
    "to": "recipient@example.com",
    "subject": "Test Email",
    "content": {
        "html": "<h1>Hello!</h1><p>This is a test email.</p>",
        "text": "Hello! This is a test email.",
    },
    "tracking": {"track_opens": True, "track_clicks": True},
}
# POST /api/v1/emails/send-bulk ("Bulk Email Send"); campaign_id is replaced.
SEED_BULK: dict[str, Any] = {
    "campaign_id": "campaign_abc123",
    "recipients": [{"email": "user1@example.com", "personalization": {"name": "John Doe"}}],
    "batch_size": 100,
    "delay_between_batches": 5,
}
# GET /api/v1/analytics/campaigns/{campaign_id}?period=7d ("Campaign Analytics").
SEED_ANALYTICS_QUERY = {"period": "7d"}


async def _welcome_template(c: httpx.AsyncClient, h: dict[str, str]) -> None:
    """The template the seed's campaign names by key (`welcome_template`)."""
    r = await c.post(
        "/api/v1/templates",
        json={
            "name": "Welcome",
            "key": "welcome_template",
            "subject": "Welcome {{ name | default('friend') }}",
            "html": "<p>Template body for {{ name }} at {{ company }}</p>",
        },
        headers=h,
    )
    assert r.status_code == 201, r.text


async def test_seed_campaign_send_bulk_and_analytics_bodies(account: Account) -> None:
    h = account.headers("test")
    async with httpx.AsyncClient(base_url=account.gw, timeout=30) as c:
        await _welcome_template(c, h)
        r = await c.post("/api/v1/campaigns", json=SEED_CAMPAIGN, headers=h)
        assert r.status_code == 201, r.text
        campaign = r.json()["data"]
        assert campaign["from_email"] is None and campaign["status"] == "draft"
        assert campaign["content"]["template_id"] == "welcome_template"
        assert campaign["settings"]["ai_optimization"] is True
        assert len(campaign["recipients"]["contact_ids"]) == 1
        r = await c.get("/api/v1/contacts", params={"email": "user1@example.com"}, headers=h)
        assert [x["email"] for x in r.json()["data"]] == ["user1@example.com"]

        # send-bulk with the campaign's id and no content of its own: delivery learns the
        # campaign's content from campaign.created (asynchronously).
        bulk = {**copy.deepcopy(SEED_BULK), "campaign_id": campaign["id"]}

        async def accepted() -> httpx.Response | None:
            r = await c.post("/api/v1/emails/send-bulk", json=bulk, headers=h)
            return r if r.status_code == 202 else None

        r = await eventually(accepted, timeout=600, interval=0.3)
        batch = r.json()["data"]
        assert batch["accepted"] == 1 and batch["batches"] == 1
        r = await c.get(f"/api/v1/emails/batches/{batch['batch_id']}", headers=h)
        assert r.status_code == 200, r.text
        report = r.json()["data"]
        assert report["total"] == 1 and report["delay_between_batches"] == 5
        assert sum(report["counts"].values()) == 1

        r = await c.post(
            "/api/v1/emails/send-bulk",
            json={**SEED_BULK, "campaign_id": "campaign_abc123"},
            headers=h,
        )
        assert r.status_code == 404 and r.json()["error"]["code"] == "campaign_not_found"

        # Test mode starts without a default sender (the sandbox sender).
        r = await c.post(f"/api/v1/campaigns/{campaign['id']}/start", headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["data"]["from_email"] == "sandbox@sandbox.penguinmails.com"

        r = await c.get(
            f"/api/v1/analytics/campaigns/{campaign['id']}", params=SEED_ANALYTICS_QUERY, headers=h
        )
        assert r.status_code == 200, r.text

    # The runner handed the step to delivery: inline html overrides the template's, the
    # template's subject is rendered with the recipient's personalization.
    conn = await connect("delivery")
    try:

        async def rendered() -> Any:
            return await conn.fetchrow(
                "SELECT c.subject, c.html, c.from_email FROM delivery.messages m"
                " JOIN delivery.contents c ON c.id = m.content_id WHERE m.campaign_id = $1"
                " AND m.batch_id IS NULL",
                campaign["id"],
            )

        row = await eventually(rendered, timeout=600, interval=0.3)
    finally:
        await conn.close()
    assert row["subject"] == "Welcome to PenguinMails!"
    assert row["html"] == SEED_CAMPAIGN["content"]["html"]
    assert "sandbox@sandbox.penguinmails.com" in row["from_email"]


async def test_personalization_reaches_the_template(account: Account) -> None:
    h = account.headers("test")
    body = copy.deepcopy(SEED_CAMPAIGN)
    body["content"] = {"template_id": "welcome_template"}
    del body["subject"]
    async with httpx.AsyncClient(base_url=account.gw, timeout=30) as c:
        await _welcome_template(c, h)
        r = await c.post("/api/v1/campaigns", json=body, headers=h)
        assert r.status_code == 201, r.text
        cid = r.json()["data"]["id"]
        r = await c.post(f"/api/v1/campaigns/{cid}/start", headers=h)
        assert r.status_code == 200, r.text
    conn = await connect("delivery")
    try:

        async def rendered() -> Any:
            return await conn.fetchrow(
                "SELECT c.subject, c.html FROM delivery.messages m"
                " JOIN delivery.contents c ON c.id = m.content_id WHERE m.campaign_id = $1",
                cid,
            )

        row = await eventually(rendered, timeout=600, interval=0.3)
    finally:
        await conn.close()
    assert row["subject"] == "Welcome John"
    assert row["html"] == "<p>Template body for John at Acme Corp</p>"
    # Every recipient's first step was handed to delivery: campaign.sent, once.
    conn = await connect("campaigns")
    try:

        async def sent() -> list[Any]:
            return list(
                await conn.fetch(
                    "SELECT payload->'data' AS data FROM campaigns.outbox"
                    " WHERE event_type = 'campaign.sent' AND payload->'data'->>'campaign_id' = $1",
                    cid,
                )
            )

        events = await eventually(sent, timeout=600, interval=0.3)
    finally:
        await conn.close()
    assert len(events) == 1 and json.loads(events[0]["data"])["recipients"] == 1


async def test_seed_send_body_and_the_default_sender(account: Account) -> None:
    test, live = account.headers("test"), account.headers("live")
    async with httpx.AsyncClient(base_url=account.gw, timeout=30) as c:
        r = await c.post("/api/v1/emails/send", json=SEED_SEND, headers=test)
        assert r.status_code == 202, r.text
        # Live mode without a default sender: refused, naming the setting.
        r = await c.post("/api/v1/emails/send", json=SEED_SEND, headers=live)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "sender_required"
        assert r.json()["error"]["details"][0]["field"] == "default_from"
        # A live campaign cannot start without a sender either.
        r = await c.post(
            "/api/v1/campaigns",
            json={**SEED_CAMPAIGN, "content": {"text": "Hi {{ name }}"}},
            headers=live,
        )
        assert r.status_code == 201, r.text
        cid = r.json()["data"]["id"]
        r = await c.post(f"/api/v1/campaigns/{cid}/start", headers=live)
        assert r.status_code == 409 and r.json()["error"]["code"] == "campaign_sender_required"

        # A live default sender must be at a verified domain.
        settings = {"default_from": "hello@acme.example.com", "default_from_name": "Acme"}
        r = await c.put("/api/v1/sending/settings", json=settings, headers=live)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "sender_domain_not_verified"
        domain_id = await account.verify_domain("acme.example.com")
        r = await c.put("/api/v1/sending/settings", json=settings, headers=live)
        assert r.status_code == 200, r.text
        r = await c.get("/api/v1/sending/settings", headers=live)
        assert r.json()["data"]["effective_from"] == "Acme <hello@acme.example.com>"
        r = await c.post("/api/v1/emails/send", json=SEED_SEND, headers=live)
        assert r.status_code == 202, r.text

        # Campaigns learn the default sender from sending_settings.updated.
        async def started() -> httpx.Response | None:
            r = await c.post(f"/api/v1/campaigns/{cid}/start", headers=live)
            return r if r.status_code == 200 else None

        r = await eventually(started, timeout=600, interval=0.3)
        assert r.json()["data"]["from_email"] == "hello@acme.example.com"
        assert r.json()["data"]["from_name"] == "Acme"
        r = await c.delete(f"/api/v1/domains/{domain_id}", headers=live)
        assert r.status_code == 204
