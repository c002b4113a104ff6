"""Forwarding through the gateway: the upstream gets a verified principal, the caller's
credentials never cross, errors are envelopes."""

from __future__ import annotations

import httpx

from tests.integration.keys.platform_stack import (
    ALL_SCOPES,
    Platform,
    bearer,
    create_key,
    signup,
)


async def test_api_key_call_reaches_upstream_with_signed_principal(
    platform: Platform, unique: str
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        owner = await signup(client, platform.gw, unique)
        key = await create_key(client, platform.gw, owner["access_token"], ["manage_contacts"])
        resp = await client.get(
            f"{platform.gw}/api/v1/contacts/ct_1?x=1",
            headers={**bearer(key["key"]), "X-Request-Id": f"req-{unique}"},
        )
    assert resp.status_code == 200, resp.text
    echoed = resp.json()["data"]
    assert echoed["path"] == "/api/v1/contacts/ct_1"
    principal = echoed["principal"]
    assert principal == {
        "tenant_id": owner["tenant"]["id"],
        "subject_type": "api_key",
        "subject_id": key["id"],
        "scopes": ["manage_contacts"],
        "plan": "starter",
        "mode": "live",
        "request_id": f"req-{unique}",
        "role": "owner",  # the dashboard role of the user who created the key
    }
    assert echoed["audience"] == "campaigns"
    assert "authorization" not in echoed["headers"]
    assert echoed["headers"]["x-request-id"] == f"req-{unique}"
    assert resp.headers["X-Request-Id"] == f"req-{unique}"
    assert resp.headers["X-RateLimit-Limit"] == "60"


async def test_test_mode_key_is_marked_test(platform: Platform, unique: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        owner = await signup(client, platform.gw, unique)
        key = await create_key(client, platform.gw, owner["access_token"], ALL_SCOPES, mode="test")
        assert key["key"].startswith("pm_test_")
        resp = await client.get(f"{platform.gw}/api/v1/campaigns", headers=bearer(key["key"]))
    assert resp.status_code == 200
    assert resp.json()["data"]["principal"]["mode"] == "test"


async def test_unknown_path_is_404_and_dead_service_is_503(platform: Platform, unique: str) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        owner = await signup(client, platform.gw, unique)
        token = owner["access_token"]
        unknown = await client.get(f"{platform.gw}/api/v1/nothing-here", headers=bearer(token))
        dots = await client.get(
            f"{platform.gw}/api/v1/contacts/%2e%2e/platform/api-keys", headers=bearer(token)
        )
        # The second replica is configured with billing down.
        down = await client.get(
            f"{platform.gateways[1].url}/api/v1/billing/subscription", headers=bearer(token)
        )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "not_found"
    assert dots.status_code == 404
    assert down.status_code == 503, down.text
    assert down.json()["error"]["code"] == "service_unavailable"
    assert down.headers["Retry-After"] == "1"
    assert "X-RateLimit-Remaining" in down.headers


async def test_missing_or_malformed_credentials_are_401(platform: Platform) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        missing = await client.get(f"{platform.gw}/api/v1/contacts")
        basic = await client.get(
            f"{platform.gw}/api/v1/contacts", headers={"Authorization": "Basic abc"}
        )
        bad_key = await client.get(
            f"{platform.gw}/api/v1/contacts", headers=bearer("pm_live_" + "A" * 32)
        )
        bad_jwt = await client.get(f"{platform.gw}/api/v1/contacts", headers=bearer("a.b.c"))
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert basic.status_code == 401
    assert bad_key.status_code == 401
    assert bad_key.json()["error"]["code"] == "invalid_api_key"
    assert bad_jwt.status_code == 401
    assert bad_jwt.json()["error"]["code"] == "invalid_token"


async def test_metrics_are_not_served_on_the_public_port(platform: Platform) -> None:
    from tests.integration.keys.platform_stack import metrics_url

    async with httpx.AsyncClient(timeout=20) as client:
        public = await client.get(f"{platform.gw}/metrics")
        private = await client.get(metrics_url(platform.gw))
    assert public.status_code == 404
    assert public.json()["error"]["code"] == "not_found"
    assert private.status_code == 200
    assert "pm_gateway_auth" in private.text


async def test_nul_characters_are_refused_before_forwarding(
    platform: Platform, unique: str
) -> None:
    # Stored text cannot hold U+0000: the gateway refuses it in a query or a JSON body for
    # every route (found by the contract fuzz, as 500s from the services).
    async with httpx.AsyncClient(timeout=10) as client:
        owner = await signup(client, platform.gw, unique)
        key = await create_key(client, platform.gw, owner["access_token"], ["manage_contacts"])
        url = f"{platform.gw}/api/v1/contacts"
        refused = [
            await client.get(url, params={"email": "a\x00b"}, headers=bearer(key["key"])),
            await client.post(url, json={"first_name": "A\x00"}, headers=bearer(key["key"])),
            await client.post(url, json={"k\x00": 1}, headers=bearer(key["key"])),
        ]
        # A backslash followed by the letters u0000 is ordinary text.
        forwarded = await client.post(url, json={"note": "C:\\u0000"}, headers=bearer(key["key"]))
    for resp, field in zip(refused, ("query.email", "body", "body"), strict=True):
        assert resp.status_code == 422, resp.text
        error = resp.json()["error"]
        assert error["code"] == "validation_error"
        assert error["details"] == [
            {"field": field, "message": "Text may not contain the NUL character (U+0000)."}
        ]
    assert forwarded.status_code == 200, forwarded.text
