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
from libs.common.settings import ServiceSettings

# 64 bytes, so that re-signing with HS512 in a test is not itself a weak-key warning.
KEY = "test-principal-key-0123456789abcdef-0123456789abcdef-0123456789a"
OTHER_KEY = b"another-principal-key-0123456789abcdef"

PRINCIPAL = Principal(
    tenant_id="ten_1",
    subject_type="api_key",
    subject_id="key_1",
    scopes=["contacts:read"],
    plan="starter",
    mode="test",
    request_id="req_1",
)


def raw_token(key: str | bytes = KEY, **overrides: Any) -> str:
    """A token built by hand, to produce what `sign_principal` never would."""
    now = int(time.time())
    claims: dict[str, Any] = {
        **PRINCIPAL.model_dump(),
        "iat": now,
        "exp": now + 60,
        "iss": "pm-gateway",
        "aud": "pm-services",
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm="HS256")


def tampered(token: str, **changes: Any) -> str:
    """The same signature over a payload the attacker edited."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    edited = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{header}.{edited}.{signature}"


# --- sign / verify ---------------------------------------------------------------------------


def test_round_trip() -> None:
    token = sign_principal(PRINCIPAL, KEY, ttl_seconds=60)
    assert verify_principal(token, KEY) == PRINCIPAL
    assert verify_principal(token, KEY.encode()) == PRINCIPAL
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iss"] == "pm-gateway" and claims["aud"] == "pm-services"
    assert claims["exp"] - claims["iat"] == 60
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_expired_token() -> None:
    now = int(time.time())
    with pytest.raises(PrincipalExpired):
        verify_principal(raw_token(iat=now - 120, exp=now - 60), KEY)


def test_leeway_tolerates_small_clock_skew() -> None:
    now = int(time.time())
    token = raw_token(iat=now - 60, exp=now - 3)
    assert verify_principal(token, KEY, leeway=5) == PRINCIPAL
    with pytest.raises(PrincipalExpired):
        verify_principal(token, KEY, leeway=0)
    with pytest.raises(PrincipalError):
        verify_principal(raw_token(iat=now + 60), KEY)  # issued in the future


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda: sign_principal(PRINCIPAL, OTHER_KEY, 60), id="wrong-key"),
        pytest.param(
            lambda: tampered(sign_principal(PRINCIPAL, KEY, 60), tenant_id="ten_victim"),
            id="tampered-tenant",
        ),
        pytest.param(
            lambda: tampered(sign_principal(PRINCIPAL, KEY, 60), exp=int(time.time()) + 86400),
            id="tampered-exp",
        ),
        pytest.param(lambda: raw_token(iss="someone-else"), id="wrong-issuer"),
        pytest.param(lambda: raw_token(aud="pm-public"), id="wrong-audience"),
        pytest.param(lambda: raw_token(exp=None), id="no-exp"),
        pytest.param(lambda: raw_token(iat=None), id="no-iat"),
        pytest.param(lambda: raw_token(mode="staging"), id="bad-claim-value"),
        pytest.param(lambda: raw_token(tenant_id=None), id="missing-claim"),
        pytest.param(
            lambda: jwt.encode({**PRINCIPAL.model_dump()}, None, algorithm="none"), id="alg-none"
        ),
        pytest.param(
            lambda: jwt.encode(
                jwt.decode(raw_token(), KEY, algorithms=["HS256"], audience="pm-services"),
                KEY,
                algorithm="HS512",
            ),
            id="other-algorithm",
        ),
        pytest.param(lambda: "not-a-jwt", id="garbage"),
        pytest.param(lambda: "", id="empty"),
        pytest.param(lambda: "a" * 10_000, id="huge"),
    ],
)
def test_rejected_tokens(token: Any) -> None:
    with pytest.raises(PrincipalError) as caught:
        verify_principal(token(), KEY)
    assert not isinstance(caught.value, PrincipalExpired)


def test_short_keys_are_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        sign_principal(PRINCIPAL, "short", 60)
    with pytest.raises(ValueError, match="32 bytes"):
        verify_principal(sign_principal(PRINCIPAL, KEY, 60), b"short")


# --- the FastAPI guard -----------------------------------------------------------------------

current_principal = principal_dependency(lambda: KEY)


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


async def test_valid_principal_is_accepted(client: httpx.AsyncClient) -> None:
    token = sign_principal(PRINCIPAL, KEY, 60)
    resp = await client.get("/internal/v1/me", headers={PRINCIPAL_HEADER: token})
    assert resp.status_code == 200, resp.text
    assert Principal.model_validate(resp.json()) == PRINCIPAL

    resp = await client.get("/internal/v1/contacts", headers={PRINCIPAL_HEADER: token})
    assert resp.json() == {"tenant_id": "ten_1", "tenant_var": "ten_1"}
    assert tenant_id_var.get() is None, "the tenant must not outlive the request"


async def test_missing_principal_is_401(client: httpx.AsyncClient) -> None:
    assert_401(await client.get("/internal/v1/me"), "principal_missing")
    assert_401(
        await client.get("/internal/v1/me", headers={PRINCIPAL_HEADER: ""}), "principal_missing"
    )


async def test_expired_principal_is_401(client: httpx.AsyncClient) -> None:
    now = int(time.time())
    token = raw_token(iat=now - 120, exp=now - 60)
    assert_401(
        await client.get("/internal/v1/me", headers={PRINCIPAL_HEADER: token}), "principal_expired"
    )


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(lambda: sign_principal(PRINCIPAL, OTHER_KEY, 60), id="wrong-key"),
        pytest.param(
            lambda: tampered(sign_principal(PRINCIPAL, KEY, 60), scopes=["contacts:write"]),
            id="tampered-scopes",
        ),
        pytest.param(lambda: "garbage.token.here", id="garbage"),
    ],
)
async def test_forged_principal_is_401(client: httpx.AsyncClient, token: Any) -> None:
    resp = await client.post("/internal/v1/contacts", headers={PRINCIPAL_HEADER: token()})
    assert_401(resp, "principal_invalid")


async def test_missing_scope_is_403_naming_it(client: httpx.AsyncClient) -> None:
    token = sign_principal(PRINCIPAL, KEY, 60)
    resp = await client.post("/internal/v1/contacts", headers={PRINCIPAL_HEADER: token})
    assert resp.status_code == 403, resp.text
    error = resp.json()["error"]
    assert error["code"] == "insufficient_scope"
    assert "contacts:write" in error["message"]

    writer = PRINCIPAL.model_copy(update={"scopes": ["contacts:write"]})
    resp = await client.post(
        "/internal/v1/contacts", headers={PRINCIPAL_HEADER: sign_principal(writer, KEY, 60)}
    )
    assert resp.status_code == 200


def test_the_scope_catalog_is_the_issues_eight() -> None:
    from libs.common.principal import SCOPES

    assert set(SCOPES) == {
        "send_email", "read_analytics", "manage_contacts", "manage_campaigns",
        "manage_templates", "manage_domains", "read_inbox", "manage_webhooks",
    }  # fmt: skip
    assert len(SCOPES) == 8
