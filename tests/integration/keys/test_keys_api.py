"""The keys service's public routes through the gateway: bad input gets the documented
error envelope, never a 500."""

from __future__ import annotations

import httpx

from tests.integration.keys.platform_stack import Platform, bearer, create_key, signup


async def test_auth_routes_reject_bad_input(platform: Platform, unique: str) -> None:
    gw = platform.gw
    async with httpx.AsyncClient(timeout=20) as client:
        weak = await client.post(
            f"{gw}/api/v1/auth/signup",
            json={"email": f"w-{unique}@example.com", "password": "short", "company": "W"},
        )
        not_json = await client.post(
            f"{gw}/api/v1/auth/login",
            content=b"{nope",
            headers={"Content-Type": "application/json"},
        )
        owner = await signup(client, gw, unique)
        again = await client.post(
            f"{gw}/api/v1/auth/signup",
            json={
                "email": f"OWNER-{unique}@example.com",
                "password": "correct horse battery",
                "company": "Dup",
            },
        )
        wrong = await client.post(
            f"{gw}/api/v1/auth/login",
            json={"email": f"owner-{unique}@example.com", "password": "not the password"},
        )
        right = await client.post(
            f"{gw}/api/v1/auth/login",
            json={"email": f"owner-{unique}@example.com", "password": "correct horse battery"},
        )
        refreshed = await client.post(
            f"{gw}/api/v1/auth/refresh", json={"refresh_token": owner["refresh_token"]}
        )
        bogus_refresh = await client.post(
            f"{gw}/api/v1/auth/refresh", json={"refresh_token": "pmr_nope"}
        )
    assert (weak.status_code, weak.json()["error"]["code"]) == (422, "validation_error")
    assert weak.json()["error"]["details"][0]["field"] == "body.password"
    assert (not_json.status_code, not_json.json()["error"]["code"]) == (400, "invalid_json")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "email_taken")
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (401, "invalid_credentials")
    assert right.status_code == 200
    assert right.json()["data"]["tenant"]["id"] == owner["tenant"]["id"]
    assert refreshed.status_code == 200
    assert refreshed.json()["data"]["refresh_token"] != owner["refresh_token"]
    assert bogus_refresh.status_code == 401
    assert bogus_refresh.json()["error"]["code"] == "invalid_refresh_token"


async def test_api_key_routes_reject_bad_input(platform: Platform, unique: str) -> None:
    gw = platform.gw
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, gw, unique)
        auth = bearer(owner["access_token"])
        url = f"{gw}/api/v1/platform/api-keys"
        cases = {
            "unknown scope": {"name": "x", "scopes": ["root"]},
            "no scopes": {"name": "x", "scopes": []},
            "no name": {"scopes": ["send_email"]},
            "bad mode": {"name": "x", "scopes": ["send_email"], "mode": "prod"},
            "naive expiry": {
                "name": "x",
                "scopes": ["send_email"],
                "expires_at": "2030-01-01T00:00",
            },
            "past expiry": {
                "name": "x",
                "scopes": ["send_email"],
                "expires_at": "2001-01-01T00:00Z",
            },
            "extra field": {"name": "x", "scopes": ["send_email"], "hash": "$2b$"},
        }
        for case, body in cases.items():
            resp = await client.post(url, json=body, headers=auth)
            assert resp.status_code == 422, (case, resp.text)
            assert resp.json()["error"]["code"] == "validation_error", case
        key = await create_key(client, gw, owner["access_token"], ["send_email"])
        long_grace = await client.post(
            f"{url}/{key['id']}/regenerate", json={"grace_period_seconds": 10**9}, headers=auth
        )
        bad_range = await client.get(
            f"{url}/{key['id']}/usage?from=2030-01-02T00:00:00Z&to=2030-01-01T00:00:00Z",
            headers=auth,
        )
        not_a_date = await client.get(f"{url}/{key['id']}/usage?from=yesterday", headers=auth)
        naive = await client.get(
            f"{url}/{key['id']}/usage?from=2030-01-01T00:00:00&to=2030-01-01T01:00:00",
            headers=auth,
        )
        utc = await client.get(
            f"{url}/{key['id']}/usage?from=2030-01-01T00:00:00Z&to=2030-01-01T01:00:00Z",
            headers=auth,
        )
        bad_page = await client.get(f"{url}?limit=0", headers=auth)
        missing = await client.get(f"{url}/key_missing", headers=auth)
        revoked = await client.delete(f"{url}/{key['id']}", headers=auth)
        regen_revoked = await client.post(f"{url}/{key['id']}/regenerate", headers=auth)
        listed = await client.get(f"{url}?status=revoked&limit=1", headers=auth)
    assert long_grace.status_code == 422
    assert bad_range.status_code == 422
    assert not_a_date.status_code == 422
    # RFC 3339 with an offset only (changelog: date-times without one are 422 since the
    # contract fuzz); the same range in UTC is an empty usage report.
    assert naive.status_code == 422
    assert utc.status_code == 200 and utc.json()["data"]["buckets"] == []
    assert bad_page.status_code == 422
    assert missing.status_code == 404
    assert revoked.status_code == 200
    assert regen_revoked.status_code == 409
    assert [k["id"] for k in listed.json()["data"]] == [key["id"]]
    assert listed.json()["meta"]["pagination"] == {"limit": 1, "offset": 0, "has_more": False}


async def test_api_key_list_pages_by_cursor(platform: Platform, unique: str) -> None:
    gw = platform.gw
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, gw, unique)
        auth = bearer(owner["access_token"])
        made = [
            (await create_key(client, gw, owner["access_token"], ["send_email"], name=f"k{i}"))[
                "id"
            ]
            for i in range(5)
        ]
        seen, cursor = [], None
        while True:
            query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
            page = (await client.get(f"{gw}/api/v1/platform/api-keys?{query}", headers=auth)).json()
            seen += [k["id"] for k in page["data"]]
            cursor = page["meta"]["pagination"].get("next_cursor")
            if not page["meta"]["pagination"]["has_more"]:
                break
        broken = await client.get(f"{gw}/api/v1/platform/api-keys?cursor=%%%", headers=auth)
    assert seen == list(reversed(made))
    assert (broken.status_code, broken.json()["error"]["code"]) == (400, "invalid_cursor")
