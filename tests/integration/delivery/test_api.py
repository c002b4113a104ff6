"""Emails API contract: scopes, tenant isolation, validation envelopes, cursor pagination."""

from __future__ import annotations

from tests.integration.delivery.conftest import Harness


async def test_scopes_tenants_and_validation(harness: Harness) -> None:
    body = {"to": "z@example.com", "from": "a@acme.example.com", "subject": "s", "text": "t"}
    r = await harness.client.post(
        "/api/v1/emails/send", json=body, headers=harness.headers(scopes=("read_analytics",))
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    r = await harness.client.post("/api/v1/emails/send", json=body)
    assert r.status_code == 401
    mid = await harness.send(to="z@example.com")
    r = await harness.client.get(
        f"/api/v1/emails/{mid}", headers=harness.headers(scopes=("send_email",))
    )
    assert r.status_code == 403
    r = await harness.client.get(f"/api/v1/emails/{mid}", headers=harness.headers(tenant="other"))
    assert r.status_code == 404
    r = await harness.client.post(
        "/api/v1/emails/send",
        headers=harness.headers(),
        json={**body, "text": None, "subject": "{{ broken"},
    )
    assert r.status_code == 422
    r = await harness.client.post(
        "/api/v1/emails/send", headers=harness.headers(), json={**body, "subject": "{% if %}"}
    )
    assert r.status_code == 422
    r = await harness.client.post(
        "/api/v1/emails/send-bulk",
        headers=harness.headers(),
        json={
            "from": "a@acme.example.com",
            "subject": "s",
            "text": "t",
            "recipients": [{"email": "d@example.com"}, {"email": "D@example.com"}],
        },
    )
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == (
        "body.recipients.1.email"
    )
    r = await harness.client.get("/api/v1/emails?cursor=@@@", headers=harness.headers())
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_cursor"


async def test_cursor_pagination(harness: Harness) -> None:
    ids = [await harness.send(to=f"p{i}@example.com") for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        url = "/api/v1/emails?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await harness.client.get(url, headers=harness.headers())).json()
        seen += [e["id"] for e in page["data"]]
        cursor = page["meta"]["pagination"].get("next_cursor")
        if not page["meta"]["pagination"]["has_more"]:
            break
    assert seen == list(reversed(ids))
