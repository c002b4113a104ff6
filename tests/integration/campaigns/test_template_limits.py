"""Campaign templates are bounded (issue 13): refused at save time when over a limit
whatever the data, a preview that hits a limit answers 422 `template_limit_exceeded`, and
the runner fails only the recipient whose render hits a limit."""

from __future__ import annotations

from uuid import UUID

import asyncpg
import httpx

from services.campaigns.runner import CampaignRunner
from tests.integration.campaigns.test_runner import requested, seed, start

URL = "/api/v1/templates"


async def test_over_limit_templates_are_refused_at_save(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    for field, source in (
        ("html", "{{ 'x' * 10**9 }}"),
        ("text", "{% for i in range(10**8) %}x{% endfor %}"),
        ("subject", "{{ 9 ** 99999999 }}"),
    ):
        body = {"name": "big", "subject": "s", "html": "<p>x</p>", field: source}
        r = await api.post(URL, json=body, headers=auth)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "template_limit_exceeded", err
        assert err["details"][0]["field"] == f"body.{field}"


async def test_preview_hitting_a_limit_is_a_422(
    api: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    loops = "{% for a in l %}{% for b in l %}{% for c in l %}x{% endfor %}{% endfor %}{% endfor %}"
    r = await api.post(URL, json={"name": "loops", "subject": "s", "text": loops}, headers=auth)
    assert r.status_code == 201, r.text
    tid = r.json()["data"]["id"]
    r = await api.post(f"{URL}/{tid}/preview", json={"data": {"l": list(range(200))}}, headers=auth)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "template_limit_exceeded"
    assert "loops too much" in err["message"]
    # The same template with little data still previews.
    r = await api.post(f"{URL}/{tid}/preview", json={"data": {"l": [1, 2]}}, headers=auth)
    assert r.status_code == 200 and r.json()["data"]["text"] == "x" * 8


async def test_runner_fails_only_the_recipient_over_a_limit(
    api: httpx.AsyncClient, auth: dict[str, str], campaigns_pool: asyncpg.Pool
) -> None:
    contacts = await seed(api, auth, 3, "lim")
    big = contacts[0]
    r = await api.put(
        f"/api/v1/contacts/{big['id']}",
        json={"custom_fields": {"n": 100_000_000}},
        headers=auth,
    )
    assert r.status_code == 200, r.text
    cid = await start(
        api,
        auth,
        recipients={"tags": ["lim"]},
        subject="Hi {{ first_name }}",
        content={"text": "{{ 'ab' * (n | default(2)) }}"},
        follow_ups=[],
    )
    await CampaignRunner(campaigns_pool).drain()
    sent = await requested(campaigns_pool, cid)
    assert sorted(e["data"]["to"] for e in sent) == sorted(c["email"] for c in contacts[1:])
    assert all(e["data"]["text"] == "abab" for e in sent)
    row = await campaigns_pool.fetchrow(
        "SELECT state, stop_reason FROM campaign_recipients"
        " WHERE campaign_id = $1 AND contact_id = $2",
        UUID(cid),
        UUID(big["id"]),
    )
    assert row["state"] == "failed"
    assert "builds a value over" in row["stop_reason"]
