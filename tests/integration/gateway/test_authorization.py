"""Scope x route matrix over the whole public route map, dashboard-only routes, and tenant
isolation on the keys service's tenant-owned resources (API keys and their usage)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from libs.common.principal import PRINCIPAL_HEADER, Principal, sign_principal
from libs.common.signing_keys import DEV_PRINCIPAL_PRIVATE_KEY
from tests.integration.keys.platform_stack import (
    ALL_SCOPES,
    Platform,
    bearer,
    create_key,
    set_plan,
    signup,
)

# (method, path, scope) for every API-key route of the route map.
SCOPED_ROUTES = [
    ("GET", "/api/v1/contacts", "manage_contacts"),
    ("POST", "/api/v1/contacts", "manage_contacts"),
    ("DELETE", "/api/v1/contacts/ct_1", "manage_contacts"),
    ("GET", "/api/v1/templates", "manage_templates"),
    ("PATCH", "/api/v1/templates/tpl_1", "manage_templates"),
    ("GET", "/api/v1/campaigns", "manage_campaigns"),
    ("POST", "/api/v1/campaigns/cmp_1/pause", "manage_campaigns"),
    ("GET", "/api/v1/analytics/campaigns/cmp_1", "read_analytics"),
    ("POST", "/api/v1/emails/send", "send_email"),
    ("POST", "/api/v1/emails/send-bulk", "send_email"),
    ("GET", "/api/v1/emails", "read_analytics"),
    ("GET", "/api/v1/emails/msg_1", "read_analytics"),
    ("GET", "/api/v1/webhooks", "manage_webhooks"),
    ("POST", "/api/v1/webhooks", "manage_webhooks"),
    ("DELETE", "/api/v1/webhooks/wh_1", "manage_webhooks"),
    ("GET", "/api/v1/inbox/threads", "read_inbox"),
    ("PATCH", "/api/v1/inbox/threads/thr_1", "read_inbox"),
    ("GET", "/api/v1/inbox/messages/imsg_1", "read_inbox"),
]
USER_ROUTES = [
    ("GET", "/api/v1/platform/api-keys"),
    ("POST", "/api/v1/platform/api-keys"),
    ("GET", "/api/v1/platform/api-keys/key_x"),
    ("DELETE", "/api/v1/platform/api-keys/key_x"),
    ("POST", "/api/v1/platform/api-keys/key_x/regenerate"),
    ("GET", "/api/v1/platform/api-keys/key_x/usage"),
    ("GET", "/api/v1/billing/subscription"),
    ("POST", "/api/v1/billing/checkout"),
]
ROUTE_SCOPES = sorted({scope for _, _, scope in SCOPED_ROUTES})


async def _call(
    client: httpx.AsyncClient, gw: str, method: str, path: str, token: str | None
) -> httpx.Response:
    headers = bearer(token) if token else {}
    body = b"{}" if method in ("POST", "PATCH") else None
    return await client.request(
        method, gw + path, content=body, headers={**headers, "Content-Type": "application/json"}
    )


async def test_every_route_refuses_a_key_lacking_its_scope(platform: Platform, unique: str) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, platform.gw, unique)
        token = owner["access_token"]
        # Keys per scope: one holding every scope but it, one holding only it. The enterprise
        # plan allows this many keys and keeps this many calls far from the rate limit.
        set_plan(platform, owner["tenant"]["id"], "enterprise")
        without, only = {}, {}
        for scope in ROUTE_SCOPES:
            others = [s for s in ALL_SCOPES if s != scope]
            without[scope] = (await create_key(client, platform.gw, token, others))["key"]
            only[scope] = (await create_key(client, platform.gw, token, [scope]))["key"]
        for method, path, scope in SCOPED_ROUTES:
            refused = await _call(client, platform.gw, method, path, without[scope])
            assert refused.status_code == 403, (method, path, refused.text)
            error = refused.json()["error"]
            assert error["code"] == "insufficient_scope"
            assert f"'{scope}'" in error["message"]
            allowed = await _call(client, platform.gw, method, path, only[scope])
            assert allowed.status_code == 200, (method, path, allowed.text)
            echoed = allowed.json()["data"]
            assert (echoed["method"], echoed["path"]) == (method, path)
            assert echoed["principal"]["scopes"] == [scope]


async def test_every_route_refuses_anonymous_callers(platform: Platform) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        for method, path, _ in SCOPED_ROUTES:
            resp = await _call(client, platform.gw, method, path, None)
            assert resp.status_code == 401, (method, path)
        for method, path in USER_ROUTES:
            resp = await _call(client, platform.gw, method, path, None)
            assert resp.status_code == 401, (method, path)


async def test_dashboard_routes_refuse_api_keys_and_accept_owner_sessions(
    platform: Platform, unique: str
) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, platform.gw, unique)
        key = (await create_key(client, platform.gw, owner["access_token"], ALL_SCOPES))["key"]
        for method, path in USER_ROUTES:
            refused = await _call(client, platform.gw, method, path, key)
            assert refused.status_code == 403, (method, path)
            assert refused.json()["error"]["code"] == "user_session_required"
            as_owner = await _call(client, platform.gw, method, path, owner["access_token"])
            assert as_owner.status_code not in (401, 403), (method, path, as_owner.text)
        billing = await _call(
            client, platform.gw, "GET", "/api/v1/billing/subscription", owner["access_token"]
        )
        assert billing.json()["data"]["principal"]["subject_type"] == "user"


async def test_unauthenticated_routes_are_forwarded_without_a_principal(
    platform: Platform,
) -> None:
    # A caller-made principal, correctly signed with the (dev) key: it must never cross.
    forged = sign_principal(
        Principal(
            tenant_id="ten_victim",
            subject_type="user",
            subject_id="usr_x",
            scopes=["manage_contacts"],
            plan="enterprise",
            mode="live",
        ),
        DEV_PRINCIPAL_PRIVATE_KEY,
        60,
        audience="delivery",
        method="POST",
        path="/hooks/esp/postmark",
    )
    async with httpx.AsyncClient(timeout=20) as client:
        for path in ("/hooks/esp/postmark", "/hooks/stripe", "/t/o/abc.gif", "/unsubscribe/tok"):
            resp = await client.post(
                platform.gw + path, content=b"{}", headers={PRINCIPAL_HEADER: forged}
            )
            # The echo upstream, like every service, refuses a call without a principal: the
            # gateway neither authenticated it nor invented one.
            assert resp.status_code == 401, path
            assert resp.json()["error"]["code"] == "principal_missing"


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("DELETE", ""), ("POST", "/regenerate"), ("GET", "/usage")],
)
async def test_another_tenants_api_key_is_404(
    platform: Platform, unique: str, method: str, suffix: str
) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        a, b = await asyncio.gather(
            signup(client, platform.gw, unique + "a"), signup(client, platform.gw, unique + "b")
        )
        b_key = await create_key(client, platform.gw, b["access_token"], ["manage_contacts"])
        path = f"/api/v1/platform/api-keys/{b_key['id']}{suffix}"
        resp = await _call(client, platform.gw, method, path, a["access_token"])
        assert resp.status_code == 404, resp.text
        assert resp.json()["error"]["code"] == "not_found"
        listed = await client.get(
            f"{platform.gw}/api/v1/platform/api-keys", headers=bearer(a["access_token"])
        )
        assert b_key["id"] not in [k["id"] for k in listed.json()["data"]]
        still = await client.get(f"{platform.gw}/api/v1/contacts", headers=bearer(b_key["key"]))
        assert still.status_code == 200


async def test_the_forwarded_principal_is_bound_to_its_service_method_and_path(
    platform: Platform, unique: str
) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, platform.gw, unique)
        key = (await create_key(client, platform.gw, owner["access_token"], ALL_SCOPES))["key"]
        for method, path, _scope in SCOPED_ROUTES:
            echoed = (await _call(client, platform.gw, method, path, key)).json()["data"]
            expected = "campaigns" if path.split("/")[3] in (
                "contacts", "templates", "campaigns", "analytics"
            ) else path.split("/")[3].replace("emails", "delivery")  # fmt: skip
            assert echoed["audience"] == expected, (method, path)

        # A principal captured at an upstream: valid only for its own method and path.
        got = await _call(client, platform.gw, "GET", "/api/v1/contacts", key)
        captured = {PRINCIPAL_HEADER: got.json()["data"]["headers"]["x-pm-principal"]}
        same = await client.get(f"{platform.echo_url}/api/v1/contacts", headers=captured)
        assert same.status_code == 200, same.text
        for method, path in (
            ("DELETE", "/api/v1/contacts/ct_1"),
            ("GET", "/api/v1/contacts/ct_1"),
            ("POST", "/api/v1/emails/send"),  # another service (audience delivery)
        ):
            replayed = await client.request(method, platform.echo_url + path, headers=captured)
            assert replayed.status_code == 401, (method, path)
            assert replayed.json()["error"]["code"] == "principal_invalid"


async def test_starting_a_campaign_needs_both_scopes(platform: Platform, unique: str) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, platform.gw, unique)
        token = owner["access_token"]
        manage = (await create_key(client, platform.gw, token, ["manage_campaigns"]))["key"]
        both = await create_key(client, platform.gw, token, ["manage_campaigns", "send_email"])
        for action in ("start", "resume"):
            path = f"/api/v1/campaigns/cmp_1/{action}"
            refused = await _call(client, platform.gw, "POST", path, manage)
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"]["code"] == "insufficient_scope"
            assert "'send_email'" in refused.json()["error"]["message"]
            allowed = await _call(client, platform.gw, "POST", path, both["key"])
            assert allowed.status_code == 200, allowed.text
        # Other campaign operations still need manage_campaigns alone.
        paused = await _call(client, platform.gw, "POST", "/api/v1/campaigns/cmp_1/pause", manage)
        assert paused.status_code == 200


async def test_replying_from_the_inbox_needs_both_scopes(platform: Platform, unique: str) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, platform.gw, unique)
        token = owner["access_token"]
        read = (await create_key(client, platform.gw, token, ["read_inbox"]))["key"]
        send = (await create_key(client, platform.gw, token, ["send_email"]))["key"]
        both = (await create_key(client, platform.gw, token, ["read_inbox", "send_email"]))["key"]
        path = "/api/v1/inbox/threads/thr_1/reply"
        for key, missing in ((read, "send_email"), (send, "read_inbox")):
            refused = await _call(client, platform.gw, "POST", path, key)
            assert refused.status_code == 403, refused.text
            assert f"'{missing}'" in refused.json()["error"]["message"]
        allowed = await _call(client, platform.gw, "POST", path, both)
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["data"]["audience"] == "inbox"


async def test_deleting_a_suppression_needs_an_owner_or_admin_behind_the_key(
    platform: Platform, unique: str
) -> None:
    import asyncpg

    from tests.conftest import service_dsn

    path = "/api/v1/emails/suppressions/ada@example.com"
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, platform.gw, unique)
        key = await create_key(client, platform.gw, owner["access_token"], ["send_email"])
        allowed = await _call(client, platform.gw, "DELETE", path, key["key"])
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["data"]["principal"]["role"] == "owner"
        # The same kind of key, created by a user who is now a member: refused.
        member_key = await create_key(client, platform.gw, owner["access_token"], ["send_email"])
        conn = await asyncpg.connect(service_dsn("keys"))
        try:
            await conn.execute(
                "UPDATE keys.users SET role = 'member' WHERE id = $1", owner["user"]["id"]
            )
        finally:
            await conn.close()
        refused = await _call(client, platform.gw, "DELETE", path, member_key["key"])
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "role_required"
        # Adding a suppression is not restricted by role.
        added = await _call(
            client, platform.gw, "POST", "/api/v1/emails/suppressions", member_key["key"]
        )
        assert added.status_code == 200
