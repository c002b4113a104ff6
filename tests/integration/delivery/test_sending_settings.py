"""Sender settings (issue 15 §1): GET/PUT /api/v1/sending/settings per tenant and mode, the
default sender of sends without `from`, the sandbox sender in test mode, `422
sender_required` for live sends with neither, and `sending_settings.updated` in the outbox."""

from __future__ import annotations

from typing import Any

from tests.integration.delivery.conftest import Harness

BODY = {"to": "ada@example.com", "subject": "Hi", "text": "Hello"}


async def _from_of(harness: Harness, message_id: str) -> str:
    async with harness.service.pool.acquire() as conn:
        value = await conn.fetchval(
            "SELECT c.from_email FROM messages m JOIN contents c ON c.id = m.content_id"
            " WHERE m.id = $1",
            message_id,
        )
    return str(value)


async def test_default_sender_sandbox_sender_and_sender_required(harness: Harness) -> None:
    c, live, test = harness.client, harness.headers(), harness.headers(mode="test")
    r = await c.get("/api/v1/sending/settings", headers=live)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {
        "default_from": None,
        "default_from_name": None,
        "default_reply_to": None,
        "effective_from": None,
        "updated_at": None,
    }
    # Live, no `from`, no default: refused, naming the setting.
    r = await c.post("/api/v1/emails/send", json=BODY, headers=live)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "sender_required" and err["details"][0]["field"] == "default_from"
    r = await c.post(
        "/api/v1/emails/send-bulk",
        json={"subject": "s", "text": "t", "recipients": [{"email": "b@example.com"}]},
        headers=live,
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "sender_required"
    # Test mode falls back to the documented sandbox sender.
    r = await c.post("/api/v1/emails/send", json=BODY, headers=test)
    assert r.status_code == 202, r.text
    assert await _from_of(harness, r.json()["data"]["message_id"]) == (
        "PenguinMails Sandbox <sandbox@sandbox.penguinmails.com>"
    )

    settings: dict[str, Any] = {
        "default_from": "team@acme.example.com",
        "default_from_name": "Acme Team",
        "default_reply_to": "support@acme.example.com",
    }
    r = await c.put("/api/v1/sending/settings", json=settings, headers=live)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert {k: data[k] for k in settings} == settings
    assert data["effective_from"] == "Acme Team <team@acme.example.com>"
    r = await c.post("/api/v1/emails/send", json=BODY, headers=live)
    assert r.status_code == 202, r.text
    mid = r.json()["data"]["message_id"]
    assert await _from_of(harness, mid) == "Acme Team <team@acme.example.com>"
    # An explicit `from` wins.
    r = await c.post(
        "/api/v1/emails/send", json={**BODY, "from": "ceo@acme.example.com"}, headers=live
    )
    assert await _from_of(harness, r.json()["data"]["message_id"]) == "ceo@acme.example.com"
    # Per mode: the test key's settings are apart; another tenant sees none.
    r = await c.get("/api/v1/sending/settings", headers=test)
    assert r.json()["data"]["default_from"] is None
    r = await c.get("/api/v1/sending/settings", headers=harness.headers(tenant="other-tenant"))
    assert r.json()["data"]["default_from"] is None
    # The change is published for campaigns.
    async with harness.service.pool.acquire() as conn:
        events = await conn.fetch(
            "SELECT payload FROM outbox WHERE tenant_id = $1"
            " AND event_type = 'sending_settings.updated'",
            harness.tenant,
        )
    assert [e["payload"]["data"]["default_from"] for e in events] == ["team@acme.example.com"]
    # Bad input is the validation envelope; scope is send_email.
    r = await c.put("/api/v1/sending/settings", json={"default_from": "nope"}, headers=live)
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    r = await c.get("/api/v1/sending/settings", headers=harness.headers(scopes=("read_analytics",)))
    assert r.status_code == 403
    # PUT replaces: clearing the default brings back sender_required for live sends.
    r = await c.put("/api/v1/sending/settings", json={}, headers=live)
    assert r.json()["data"]["effective_from"] is None
    r = await c.post("/api/v1/emails/send", json=BODY, headers=live)
    assert r.status_code == 422
