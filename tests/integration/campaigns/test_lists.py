"""Template and campaign lists (issue 15 §2): offset and cursor paging both ways, filters,
unknown parameters refused; and a campaign read back keeps every field it was created with."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.campaigns.test_campaigns_api import campaign_body


async def _walk(api: httpx.AsyncClient, auth: dict[str, str], url: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = await api.get(url + (f"&cursor={cursor}" if cursor else ""), headers=auth)
        assert r.status_code == 200, r.text
        seen += r.json()["data"]
        cursor = r.json()["meta"]["pagination"].get("next_cursor")
        if cursor is None:
            return seen


async def test_templates_page_both_ways_and_filter(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    ids = []
    for i in range(3):
        body = {"name": f"T{i}", "subject": "s", "text": "t"}
        ids.append(
            (await api.post("/api/v1/templates", json=body, headers=auth)).json()["data"]["id"]
        )
    newest = await _walk(api, auth, "/api/v1/templates?limit=2")
    assert [t["id"] for t in newest] == list(reversed(ids))
    oldest = await _walk(api, auth, "/api/v1/templates?limit=2&order=asc")
    assert [t["id"] for t in oldest] == ids
    r = await api.get("/api/v1/templates?limit=1&offset=2&order=asc", headers=auth)
    assert [t["id"] for t in r.json()["data"]] == [ids[2]]
    r = await api.get("/api/v1/templates?name=t1", headers=auth)
    assert [t["id"] for t in r.json()["data"]] == [ids[1]]
    for query, field in (("sort_by=name", "query.sort_by"), ("nam=T1", "query.nam")):
        r = await api.get(f"/api/v1/templates?{query}", headers=auth)
        assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == field


async def test_campaigns_filter_page_and_keep_every_field(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = []
    for i in range(3):
        r = await api.post("/api/v1/campaigns", json=campaign_body(name=f"C{i}"), headers=auth)
        assert r.status_code == 201, r.text
        created.append(r.json()["data"])
    listed = await _walk(api, auth, "/api/v1/campaigns?limit=2&status=draft")
    assert [c["id"] for c in listed] == [c["id"] for c in reversed(created)]
    # The list, the read and the create answer the same complete campaign.
    one = (await api.get(f"/api/v1/campaigns/{created[0]['id']}", headers=auth)).json()["data"]
    assert one == created[0] == next(c for c in listed if c["id"] == one["id"])
    assert one["content"] == {"html": "<p>Hi</p>", "text": "Hi"}
    assert one["recipients"] == {"tags": ["lead"], "match": "any"}
    assert one["follow_ups"][0]["content"] == {"text": "Bumping this"}
    assert one["spacing"] == {"min_seconds": 30, "max_seconds": 90}
    r = await api.get("/api/v1/campaigns?name=c1", headers=auth)
    assert [c["id"] for c in r.json()["data"]] == [created[1]["id"]]
    r = await api.get("/api/v1/campaigns?status=running", headers=auth)
    assert r.json()["data"] == []
    r = await api.get("/api/v1/campaigns?limit=1&offset=1", headers=auth)
    assert [c["id"] for c in r.json()["data"]] == [created[1]["id"]]
    assert r.json()["meta"]["pagination"] == {
        "limit": 1,
        "offset": 1,
        "next_cursor": r.json()["meta"]["pagination"]["next_cursor"],
        "has_more": True,
    }
