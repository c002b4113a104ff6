"""A campaign's `from_name` with CR/LF or other control characters is refused (issue 13):
it would reach ESP headers and break SMTP batches."""

from __future__ import annotations

import httpx


async def test_from_name_with_control_characters_is_refused(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    body = {
        "name": "Hdr",
        "from_email": "founder@penguin.example",
        "subject": "Hi",
        "content": {"text": "Hi"},
        "recipients": {"tags": ["nobody"]},
    }
    for bad in ("Ada\r\nBcc: victim@example.org", "Ada\x00", "Ada\u2028"):
        r = await api.post("/api/v1/campaigns", json={**body, "from_name": bad}, headers=auth)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "validation_error"
        assert err["details"][0]["field"] == "body.from_name"
    r = await api.post("/api/v1/campaigns", json={**body, "from_name": "Ada, Inc."}, headers=auth)
    assert r.status_code == 201, r.text
    cid = r.json()["data"]["id"]
    r = await api.put(f"/api/v1/campaigns/{cid}", json={"from_name": "A\nB"}, headers=auth)
    assert r.status_code == 422, r.text
