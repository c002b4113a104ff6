"""What the dashboard asks of the keys service and the gateway, at the HTTP level: the
refresh token in an HttpOnly cookie (JSON tokens unchanged for API clients), the test-mode
switch of a user session, and usage summed by hour or day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.integration.keys.platform_stack import Platform, bearer, create_key, signup

COOKIE = {"X-Refresh-Token-Transport": "cookie"}


async def test_cookie_transport_keeps_the_refresh_token_out_of_the_body(
    platform: Platform, unique: str
) -> None:
    gw = platform.gw
    async with httpx.AsyncClient(timeout=20) as client:
        await signup(client, gw, unique)
        login = await client.post(
            f"{gw}/api/v1/auth/login",
            json={"email": f"owner-{unique}@example.com", "password": "correct horse battery"},
            headers=COOKIE,
        )
        assert login.status_code == 200, login.text
        assert login.json()["data"]["refresh_token"] is None
        set_cookie = login.headers["set-cookie"]
        for attribute in ("HttpOnly", "Secure", "SameSite=strict", "Path=/api/v1/auth"):
            assert attribute.lower() in set_cookie.lower(), set_cookie
        first = login.cookies["pm_refresh"]

        # The cookie alone refreshes (and is rotated); no body needed.
        refreshed = await client.post(
            f"{gw}/api/v1/auth/refresh", headers=COOKIE, cookies={"pm_refresh": first}
        )
        assert refreshed.status_code == 200, refreshed.text
        second = refreshed.cookies["pm_refresh"]
        assert second != first and refreshed.json()["data"]["refresh_token"] is None
        token = refreshed.json()["data"]["access_token"]
        assert (
            await client.get(f"{gw}/api/v1/platform/api-keys", headers=bearer(token))
        ).is_success

        # The rotated cookie is refused (and revokes the session, as a reused JSON token does).
        reused = await client.post(
            f"{gw}/api/v1/auth/refresh", headers=COOKIE, cookies={"pm_refresh": first}
        )
        assert reused.status_code == 401
        assert reused.json()["error"]["code"] == "invalid_refresh_token"

        # Neither cookie nor body: the documented 401, not a validation error.
        bare = await client.post(f"{gw}/api/v1/auth/refresh", headers=COOKIE)
        assert bare.status_code == 401
        assert bare.json()["error"]["code"] == "invalid_refresh_token"

        # JSON tokens keep working for API clients.
        plain = await client.post(
            f"{gw}/api/v1/auth/login",
            json={"email": f"owner-{unique}@example.com", "password": "correct horse battery"},
        )
        assert plain.json()["data"]["refresh_token"].startswith("pmr_")
        assert "set-cookie" not in plain.headers

        # Logout by cookie revokes the session and clears the cookie.
        fresh = await client.post(
            f"{gw}/api/v1/auth/login",
            json={"email": f"owner-{unique}@example.com", "password": "correct horse battery"},
            headers=COOKIE,
        )
        cookie = fresh.cookies["pm_refresh"]
        out = await client.post(
            f"{gw}/api/v1/auth/logout", headers=COOKIE, cookies={"pm_refresh": cookie}
        )
        assert out.status_code == 200, out.text
        assert "max-age=0" in out.headers["set-cookie"].lower()
        after = await client.post(
            f"{gw}/api/v1/auth/refresh", headers=COOKIE, cookies={"pm_refresh": cookie}
        )
        assert after.status_code == 401


async def test_mode_header_is_checked_and_applies_to_user_sessions_only(
    platform: Platform, unique: str
) -> None:
    gw = platform.gw
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, gw, unique)
        token = owner["access_token"]
        bad = await client.get(
            f"{gw}/api/v1/platform/api-keys", headers={**bearer(token), "X-PM-Mode": "prod"}
        )
        assert bad.status_code == 422, bad.text
        assert bad.json()["error"]["details"][0]["field"] == "header.X-PM-Mode"
        # The echo upstream shows the principal the gateway signed: mode "test" for the
        # session that asked, the key's own mode for an API key whatever it asks.
        test_session = await client.get(
            f"{gw}/api/v1/contacts", headers={**bearer(token), "X-PM-Mode": "test"}
        )
        assert test_session.json()["data"]["principal"]["mode"] == "test"
        live_session = await client.get(f"{gw}/api/v1/contacts", headers=bearer(token))
        assert live_session.json()["data"]["principal"]["mode"] == "live"
        key = await create_key(client, gw, token, ["manage_contacts"], mode="live")
        with_key = await client.get(
            f"{gw}/api/v1/contacts",
            headers={"Authorization": f"Bearer {key['key']}", "X-PM-Mode": "test"},
        )
        assert with_key.json()["data"]["principal"]["mode"] == "live"


async def test_usage_by_hour_and_day(platform: Platform, unique: str) -> None:
    gw = platform.gw
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, gw, unique)
        token = owner["access_token"]
        key = await create_key(client, gw, token, ["manage_contacts"])
        url = f"{gw}/api/v1/platform/api-keys/{key['id']}/usage"
        now = datetime.now(UTC)
        for granularity, days, too_long in (("hour", 2, 94), ("day", 40, 367)):
            ok = await client.get(
                url,
                params={
                    "from": (now - timedelta(days=days)).isoformat(),
                    "to": now.isoformat(),
                    "granularity": granularity,
                },
                headers=bearer(token),
            )
            assert ok.status_code == 200, ok.text
            assert ok.json()["data"]["granularity"] == granularity
            long = await client.get(
                url,
                params={
                    "from": (now - timedelta(days=too_long)).isoformat(),
                    "to": now.isoformat(),
                    "granularity": granularity,
                },
                headers=bearer(token),
            )
            assert long.status_code == 422
        unknown = await client.get(url, params={"granularity": "week"}, headers=bearer(token))
        assert unknown.status_code == 422
