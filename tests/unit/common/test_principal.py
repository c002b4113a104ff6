"""The signed principal: signing, verification, and the FastAPI guard on service routes."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import jwt
import pytest
from fastapi import APIRouter, Depends

from libs.common.app import create_app
from libs.common.principal import (
    PRINCIPAL_HEADER,
    Principal,
    PrincipalError,
    PrincipalExpired,
    principal_dependency,
    require_scope,
    sign_principal,
    tenant_id_var,
    verify_principal,
)
from libs.common.principal import current_principal as app_principal
from libs.common.settings import ServiceSettings, SettingsError
from libs.common.signing_keys import (
    DEV_PRINCIPAL_PRIVATE_KEY,
    DEV_PRINCIPAL_PUBLIC_KEYS,
    generate_private_key,
    load_private_key,
    public_keys_of,
)

KEY = generate_private_key("k1")
PUBLIC = public_keys_of(KEY)
OTHER_KEY = generate_private_key("k1")  # same kid, another key: a forger's guess
AUD = "campaigns"
METHOD, PATH = "GET", "/api/v1/contacts/ct_1"

PRINCIPAL = Principal(
    tenant_id="ten_1",
    subject_type="api_key",
    subject_id="key_1",
    scopes=["contacts:read"],
    plan="starter",
    mode="test",
    request_id="req_1",
    role="admin",
)


def sign(
    principal: Principal = PRINCIPAL,
    key: str = KEY,
    ttl: int = 60,
    *,
    audience: str = AUD,
    method: str = METHOD,
    path: str = PATH,
) -> str:
    return sign_principal(principal, key, ttl, audience=audience, method=method, path=path)


def verify(token: str, keys: str = PUBLIC, **kwargs: Any) -> Principal:
    args: dict[str, Any] = {"audience": AUD, "method": METHOD, "path": PATH, **kwargs}
    return verify_principal(token, keys, **args)


def raw_token(key: str = KEY, kid: str = "k1", **overrides: Any) -> str:
    """A token built by hand, to produce what `sign_principal` never would."""
    now = int(time.time())
    claims: dict[str, Any] = {
        **PRINCIPAL.model_dump(),
        "iat": now,
        "exp": now + 60,
        "iss": "pm-gateway",
        "aud": AUD,
        "jti": "j1",
        "htm": METHOD,
        "htu": PATH,
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, load_private_key(key).key, algorithm="EdDSA", headers={"kid": kid})


def tampered(token: str, **changes: Any) -> str:
    """The same signature over a payload the attacker edited."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    edited = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{edited}.{signature}"


# --- sign / verify ---------------------------------------------------------------------------


def test_round_trip() -> None:
    token = sign()
    assert verify(token) == PRINCIPAL
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "pm-gateway" and claims["aud"] == AUD
    assert (claims["htm"], claims["htu"]) == (METHOD, PATH)
    assert claims["exp"] - claims["iat"] == 60
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": "k1", "typ": "JWT"}
    assert (
        sign()[:20]
        and claims["jti"] != jwt.decode(sign(), options={"verify_signature": False})["jti"]
    ), "every principal has its own jti"


def test_a_verifier_holds_no_signing_power() -> None:
    # The public key set cannot be used as a private key.
    with pytest.raises(ValueError):
        sign(key=PUBLIC + "," + PUBLIC)
    with pytest.raises(PrincipalError):
        verify(sign(key=OTHER_KEY))


def test_captured_principal_is_refused_on_another_service_method_or_path() -> None:
    token = sign()
    with pytest.raises(PrincipalError):
        verify(token, audience="delivery")
    with pytest.raises(PrincipalError):
        verify(token, method="DELETE")
    with pytest.raises(PrincipalError):
        verify(token, path="/api/v1/contacts/ct_2")
    with pytest.raises(PrincipalError):
        verify(token, path=PATH + "/")


def test_rotation_two_public_keys_accept_both_then_the_old_one_is_dropped() -> None:
    new = generate_private_key("k2")
    both = f"{PUBLIC},{public_keys_of(new)}"
    assert verify(sign(key=KEY), both) == PRINCIPAL
    assert verify(sign(key=new), both) == PRINCIPAL
    with pytest.raises(PrincipalError, match="unknown key id"):
        verify(sign(key=KEY), public_keys_of(new))


def test_expired_token() -> None:
    now = int(time.time())
    with pytest.raises(PrincipalExpired):
        verify(raw_token(iat=now - 120, exp=now - 60))


def test_leeway_tolerates_small_clock_skew() -> None:
    now = int(time.time())
    token = raw_token(iat=now - 60, exp=now - 3)
    assert verify(token, leeway=5) == PRINCIPAL
    with pytest.raises(PrincipalExpired):
        verify(token, leeway=0)
    with pytest.raises(PrincipalError):
        verify(raw_token(iat=now + 60))  # issued in the future


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda: sign(key=OTHER_KEY), id="wrong-key"),
        pytest.param(lambda: raw_token(kid="k9"), id="unknown-kid"),
        pytest.param(lambda: tampered(sign(), tenant_id="ten_victim"), id="tampered-tenant"),
        pytest.param(lambda: tampered(sign(), htu="/api/v1/other"), id="tampered-path"),
        pytest.param(
            lambda: tampered(sign(), exp=int(time.time()) + 86400),
            id="tampered-exp",
        ),
        pytest.param(lambda: raw_token(iss="someone-else"), id="wrong-issuer"),
        pytest.param(lambda: raw_token(aud="pm-services"), id="wrong-audience"),
        pytest.param(lambda: raw_token(exp=None), id="no-exp"),
        pytest.param(lambda: raw_token(iat=None), id="no-iat"),
        pytest.param(lambda: raw_token(jti=None), id="no-jti"),
        pytest.param(lambda: raw_token(htm=None), id="no-method"),
        pytest.param(lambda: raw_token(htu=None), id="no-path"),
        pytest.param(lambda: raw_token(mode="staging"), id="bad-claim-value"),
        pytest.param(lambda: raw_token(tenant_id=None), id="missing-claim"),
        pytest.param(
            # PyJWT types the key as required even for algorithm "none".
            lambda: jwt.encode({**PRINCIPAL.model_dump()}, None, algorithm="none"),  # type: ignore[arg-type]
            id="alg-none",
        ),
        pytest.param(
            # The old symmetric scheme, keyed with the public key bytes (alg confusion).
            lambda: jwt.encode(
                jwt.decode(raw_token(), options={"verify_signature": False}),
                PUBLIC.encode() * 2,
                algorithm="HS256",
                headers={"kid": "k1"},
            ),
            id="hs256-with-public-key",
        ),
        pytest.param(lambda: "not-a-jwt", id="garbage"),
        pytest.param(lambda: "", id="empty"),
        pytest.param(lambda: "a" * 10_000, id="huge"),
    ],
)
def test_rejected_tokens(token: Any) -> None:
    with pytest.raises(PrincipalError) as caught:
        verify(token())
    assert not isinstance(caught.value, PrincipalExpired)


def test_malformed_keys_are_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        sign(key="k1:c2hvcnQ")
    with pytest.raises(ValueError):
        verify(sign(), "no-kid")


@pytest.mark.parametrize(
    "env",
    [
        {"PM_PRINCIPAL_PUBLIC_KEYS": DEV_PRINCIPAL_PUBLIC_KEYS},
        {"PM_PRINCIPAL_PUBLIC_KEYS": f"{PUBLIC},{DEV_PRINCIPAL_PUBLIC_KEYS}"},
    ],
)
def test_builtin_keys_are_refused_outside_dev_and_test(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    monkeypatch.setenv("PM_CURSOR_KEY", "a-generated-cursor-key-0123456789abcdef")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for environment in ("dev", "test"):
        ServiceSettings(environment=environment)
    with pytest.raises(SettingsError, match="PM_PRINCIPAL_PUBLIC_KEYS"):
        ServiceSettings(environment="production")
    monkeypatch.setenv("PM_PRINCIPAL_PUBLIC_KEYS", PUBLIC)
    assert ServiceSettings(environment="production").principal_public_keys == PUBLIC


def test_the_gateway_refuses_the_builtin_private_key_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.gateway.settings import GatewaySettings
    from services.keys.settings import KeysSettings

    monkeypatch.setenv("PM_PRINCIPAL_PUBLIC_KEYS", PUBLIC)
    monkeypatch.setenv("PM_USER_TOKEN_PUBLIC_KEYS", PUBLIC)
    monkeypatch.setenv("PM_IDEMPOTENCY_ENCRYPTION_KEY", "a-generated-secret-0123456789abcdef")
    monkeypatch.setenv("PM_CURSOR_KEY", "a-generated-cursor-key-0123456789abcdef")
    with pytest.raises(SettingsError, match="PM_PRINCIPAL_PRIVATE_KEY"):
        GatewaySettings(environment="production")
    monkeypatch.setenv("PM_PRINCIPAL_PRIVATE_KEY", KEY)
    GatewaySettings(environment="production")
    assert DEV_PRINCIPAL_PRIVATE_KEY != KEY
    with pytest.raises(SettingsError, match="PM_USER_TOKEN_PRIVATE_KEY"):
        KeysSettings(environment="production")


# --- the FastAPI guard -----------------------------------------------------------------------

current_principal = principal_dependency(lambda: PUBLIC, audience=AUD)


def service_router() -> APIRouter:
    router = APIRouter(prefix="/internal/v1")

    @router.get("/contacts")
    async def list_contacts(
        principal: Annotated[Principal, Depends(require_scope("contacts:read", current_principal))],
    ) -> dict[str, str]:
        return {"tenant_id": principal.tenant_id, "tenant_var": tenant_id_var.get() or ""}

    @router.post("/contacts")
    async def create_contact(
        principal: Annotated[
            Principal, Depends(require_scope("contacts:write", current_principal))
        ],
    ) -> dict[str, str]:
        return {"tenant_id": principal.tenant_id}

    @router.get("/me")
    async def me(principal: Annotated[Principal, Depends(current_principal)]) -> dict[str, Any]:
        return principal.model_dump()

    return router


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        ServiceSettings(service_name="principal-test"), process="api", routers=[service_router()]
    )
    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
        yield c


def assert_401(resp: httpx.Response, code: str) -> None:
    assert resp.status_code == 401, resp.text
    body = resp.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["request_id"] == resp.headers["X-Request-Id"]


def for_route(method: str, path: str, principal: Principal = PRINCIPAL) -> dict[str, str]:
    return {PRINCIPAL_HEADER: sign(principal, method=method, path=path)}


async def test_valid_principal_is_accepted(client: httpx.AsyncClient) -> None:
    resp = await client.get("/internal/v1/me", headers=for_route("GET", "/internal/v1/me"))
    assert resp.status_code == 200, resp.text
    assert Principal.model_validate(resp.json()) == PRINCIPAL

    resp = await client.get(
        "/internal/v1/contacts", headers=for_route("GET", "/internal/v1/contacts")
    )
    assert resp.json() == {"tenant_id": "ten_1", "tenant_var": "ten_1"}
    assert tenant_id_var.get() is None, "the tenant must not outlive the request"


async def test_a_principal_for_one_route_is_refused_on_another(client: httpx.AsyncClient) -> None:
    writer = PRINCIPAL.model_copy(update={"scopes": ["contacts:read", "contacts:write"]})
    captured = for_route("GET", "/internal/v1/contacts", writer)
    assert (await client.get("/internal/v1/contacts", headers=captured)).status_code == 200
    assert_401(await client.post("/internal/v1/contacts", headers=captured), "principal_invalid")
    assert_401(await client.get("/internal/v1/me", headers=captured), "principal_invalid")
    other_service = {
        PRINCIPAL_HEADER: sign(writer, audience="delivery", method="GET", path="/internal/v1/me")
    }
    assert_401(await client.get("/internal/v1/me", headers=other_service), "principal_invalid")


async def test_missing_principal_is_401(client: httpx.AsyncClient) -> None:
    assert_401(await client.get("/internal/v1/me"), "principal_missing")
    assert_401(
        await client.get("/internal/v1/me", headers={PRINCIPAL_HEADER: ""}), "principal_missing"
    )


async def test_expired_principal_is_401(client: httpx.AsyncClient) -> None:
    now = int(time.time())
    token = raw_token(iat=now - 120, exp=now - 60, htu="/internal/v1/me")
    assert_401(
        await client.get("/internal/v1/me", headers={PRINCIPAL_HEADER: token}), "principal_expired"
    )


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(
            lambda: sign(key=OTHER_KEY, method="POST", path="/internal/v1/contacts"),
            id="wrong-key",
        ),
        pytest.param(
            lambda: tampered(
                sign(method="POST", path="/internal/v1/contacts"), scopes=["contacts:write"]
            ),
            id="tampered-scopes",
        ),
        pytest.param(lambda: "garbage.token.here", id="garbage"),
    ],
)
async def test_forged_principal_is_401(client: httpx.AsyncClient, token: Any) -> None:
    resp = await client.post("/internal/v1/contacts", headers={PRINCIPAL_HEADER: token()})
    assert_401(resp, "principal_invalid")


async def test_missing_scope_is_403_naming_it(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/internal/v1/contacts", headers=for_route("POST", "/internal/v1/contacts")
    )
    assert resp.status_code == 403, resp.text
    error = resp.json()["error"]
    assert error["code"] == "insufficient_scope"
    assert "contacts:write" in error["message"]

    writer = PRINCIPAL.model_copy(update={"scopes": ["contacts:write"]})
    resp = await client.post(
        "/internal/v1/contacts", headers=for_route("POST", "/internal/v1/contacts", writer)
    )
    assert resp.status_code == 200


def test_the_scope_catalog_is_the_issues_eight() -> None:
    from libs.common.principal import SCOPES

    assert set(SCOPES) == {
        "send_email", "read_analytics", "manage_contacts", "manage_campaigns",
        "manage_templates", "manage_domains", "read_inbox", "manage_webhooks",
    }  # fmt: skip
    assert len(SCOPES) == 8


def test_the_builtin_cursor_key_is_refused_outside_dev_and_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PM_PRINCIPAL_PUBLIC_KEYS", PUBLIC)
    with pytest.raises(SettingsError, match="PM_CURSOR_KEY"):
        ServiceSettings(environment="production")
    monkeypatch.setenv("PM_CURSOR_KEY", "a-generated-cursor-key-0123456789abcdef")
    ServiceSettings(environment="production")


# --- module-level routers: the principal checked with the app's own settings ----------------

settings_router = APIRouter()


@settings_router.get("/api/v1/whoami")
async def whoami(
    principal: Annotated[Principal, Depends(require_scope("contacts:read", app_principal))],
) -> dict[str, str]:
    return {"tenant_id": principal.tenant_id}


@pytest.mark.parametrize(
    ("service_name", "public_keys", "status"),
    [(AUD, PUBLIC, 200), ("billing", PUBLIC, 401), (AUD, public_keys_of(OTHER_KEY), 401)],
)
async def test_a_module_level_router_verifies_with_the_apps_settings(
    service_name: str, public_keys: str, status: int
) -> None:
    """One router object, two apps: each verifies the token with its own key set and its own
    audience (`app.state.settings`), not with values captured when the router was built."""
    settings = ServiceSettings(service_name=service_name, principal_public_keys=public_keys)
    app = create_app(settings, process="api", routers=[settings_router])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://s") as c:
        resp = await c.get("/api/v1/whoami", headers=for_route("GET", "/api/v1/whoami", PRINCIPAL))
    assert resp.status_code == status, resp.text
    if status == 200:
        assert resp.json() == {"tenant_id": PRINCIPAL.tenant_id}
    else:
        assert_401(resp, "principal_invalid")
