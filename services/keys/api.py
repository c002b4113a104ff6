"""HTTP API of the keys service: tenants, users, login and API keys (hashes in Vault, metadata in
the keys schema), plus the internal routes the gateway uses to verify keys and read plans.

Routers are declared at module level; who may call them is `auth.py`, and settings come from
the app (`app.state.settings`) at request time.
"""

import contextlib
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Cookie, Depends, FastAPI, Header, Query, Request, Response

from libs.common.app import app_settings, create_app
from libs.common.http import ApiError, SuccessEnvelope, ok
from libs.common.pagination import ListParams, list_params, reject_unknown_query
from libs.common.principal import Principal
from libs.common.resources import Resources
from libs.common.timestamps import Timestamp
from libs.common.vault import Vault
from services.keys.auth import User, internal
from services.keys.schemas import (
    ApiKeyCreated,
    ApiKeyOut,
    ApiKeyUsage,
    CreateApiKeyRequest,
    LoggedOut,
    LoginRequest,
    RefreshRequest,
    RegenerateApiKeyRequest,
    SessionOut,
    SignupRequest,
    TokenPair,
    VerifyRequest,
)
from services.keys.service import KeysService
from services.keys.settings import KeysSettings

KeyParams = Annotated[ListParams, Depends(list_params(("created_at",), default_limit=20))]


def _service(request: Request) -> KeysService:
    svc: KeysService = request.app.state.keys
    return svc


def _client_ip(request: Request) -> str:
    # Only the gateway reaches this service (network policy); it sets X-Forwarded-For to the
    # caller's address, overwriting whatever the caller sent.
    forwarded = request.headers.get("x-forwarded-for", "")
    first = forwarded.split(",", 1)[0].strip()
    return first or (request.client.host if request.client else "unknown")


# Cookie mode of the auth routes (the dashboard): the refresh token travels only in an
# HttpOnly cookie scoped to the auth routes, so page scripts never hold it.
REFRESH_COOKIE = "pm_refresh"
REFRESH_COOKIE_PATH = "/api/v1/auth"
TRANSPORT_HEADER = "X-Refresh-Token-Transport"

Transport = Annotated[
    Literal["body", "cookie"],
    Header(
        alias=TRANSPORT_HEADER,
        description="`cookie`: the refresh token is set as an HttpOnly cookie, not returned.",
    ),
]
RefreshCookie = Annotated[str | None, Cookie(alias=REFRESH_COOKIE, max_length=200)]


def _deliver_refresh(
    tokens: dict[str, Any], response: Response, transport: str, max_age: int
) -> dict[str, Any]:
    if transport != "cookie":
        return tokens
    response.set_cookie(
        REFRESH_COOKIE,
        tokens["refresh_token"],
        max_age=max_age,
        path=REFRESH_COOKIE_PATH,
        secure=True,
        httponly=True,
        samesite="strict",
    )
    return {**tokens, "refresh_token": None}


def _refresh_token(body: RefreshRequest | None, cookie: str | None) -> str:
    if body is not None:
        return body.refresh_token
    if cookie:
        return cookie
    raise ApiError(code="invalid_refresh_token")


def _refresh_ttl(settings: Annotated[KeysSettings, Depends(app_settings)]) -> int:
    return settings.refresh_token_ttl_seconds


Svc = Annotated[KeysService, Depends(_service)]
RefreshTtl = Annotated[int, Depends(_refresh_ttl)]


auth = APIRouter(prefix="/api/v1/auth", tags=["auth"], dependencies=[Depends(reject_unknown_query)])


@auth.post("/signup", status_code=201, response_model=SuccessEnvelope[SessionOut])
async def signup(
    body: SignupRequest,
    request: Request,
    response: Response,
    svc: Svc,
    refresh_ttl: RefreshTtl,
    transport: Transport = "body",
) -> dict[str, Any]:
    session = await svc.signup(body.email, body.password, body.company, _client_ip(request))
    return ok(_deliver_refresh(session, response, transport, refresh_ttl))


@auth.post("/login", response_model=SuccessEnvelope[SessionOut])
async def login(
    body: LoginRequest,
    request: Request,
    response: Response,
    svc: Svc,
    refresh_ttl: RefreshTtl,
    transport: Transport = "body",
) -> dict[str, Any]:
    session = await svc.login(body.email, body.password, _client_ip(request))
    return ok(_deliver_refresh(session, response, transport, refresh_ttl))


@auth.post("/refresh", response_model=SuccessEnvelope[TokenPair])
async def refresh(
    response: Response,
    svc: Svc,
    refresh_ttl: RefreshTtl,
    transport: Transport = "body",
    cookie: RefreshCookie = None,
    body: RefreshRequest | None = None,
) -> dict[str, Any]:
    tokens = await svc.refresh(_refresh_token(body, cookie))
    return ok(_deliver_refresh(tokens, response, transport, refresh_ttl))


@auth.post("/logout", response_model=SuccessEnvelope[LoggedOut])
async def logout(
    response: Response,
    svc: Svc,
    cookie: RefreshCookie = None,
    body: RefreshRequest | None = None,
) -> dict[str, Any]:
    await svc.logout(_refresh_token(body, cookie))
    if body is None:
        response.delete_cookie(
            REFRESH_COOKIE,
            path=REFRESH_COOKIE_PATH,
            secure=True,
            httponly=True,
            samesite="strict",
        )
    return ok({"logged_out": True})


keys = APIRouter(
    prefix="/api/v1/platform/api-keys",
    tags=["api-keys"],
    dependencies=[Depends(reject_unknown_query)],
)


@keys.post("", status_code=201, response_model=SuccessEnvelope[ApiKeyCreated])
async def create_key(body: CreateApiKeyRequest, p: User, svc: Svc) -> dict[str, Any]:
    return ok(await svc.create_key(p, body))


@keys.get("", response_model=SuccessEnvelope[list[ApiKeyOut]])
async def list_keys(
    p: User,
    svc: Svc,
    params: KeyParams,
    status: Literal["active", "revoked", "expired"] | None = None,
    mode: Literal["live", "test"] | None = None,
    name: Annotated[str | None, Query(max_length=100, description="Exact name.")] = None,
) -> dict[str, Any]:
    page = await svc.list_keys(p.tenant_id, params, status=status, mode=mode, name=name)
    return page.envelope()


@keys.get("/{key_id}", response_model=SuccessEnvelope[ApiKeyOut])
async def get_key(key_id: str, p: User, svc: Svc) -> dict[str, Any]:
    return ok(await svc.get_key(p.tenant_id, key_id))


@keys.post("/{key_id}/regenerate", response_model=SuccessEnvelope[ApiKeyCreated])
async def regenerate_key(
    key_id: str, p: User, svc: Svc, body: RegenerateApiKeyRequest | None = None
) -> dict[str, Any]:
    grace = body.grace_period_seconds if body else 0
    return ok(await svc.regenerate_key(p.tenant_id, key_id, grace))


@keys.delete("/{key_id}", response_model=SuccessEnvelope[ApiKeyOut])
async def revoke_key(key_id: str, p: User, svc: Svc) -> dict[str, Any]:
    return ok(await svc.revoke_key(p.tenant_id, key_id))


@keys.get("/{key_id}/usage", response_model=SuccessEnvelope[ApiKeyUsage])
async def key_usage(
    key_id: str,
    p: User,
    svc: Svc,
    start: Annotated[Timestamp | None, Query(alias="from")] = None,
    end: Annotated[Timestamp | None, Query(alias="to")] = None,
    granularity: Literal["minute", "hour", "day"] = "minute",
) -> dict[str, Any]:
    return ok(await svc.usage(p.tenant_id, key_id, start, end, granularity))


internal_router = APIRouter(prefix="/internal/v1", include_in_schema=False)


@internal_router.post("/api-keys/verify")
async def verify_key(
    body: VerifyRequest, _: Annotated[Principal, Depends(internal)], svc: Svc
) -> dict[str, Any]:
    return ok(await svc.verify(body.key))


@internal_router.get("/tenants/{tenant_id}/plan")
async def tenant_plan(
    tenant_id: str, _: Annotated[Principal, Depends(internal)], svc: Svc
) -> dict[str, Any]:
    return ok({"tenant_id": tenant_id, "plan": await svc.tenant_plan(tenant_id)})


def api_keys_vault(settings: KeysSettings) -> Vault:
    return Vault.connect(**settings.vault_client_kwargs(), mount=settings.api_keys_mount)


def create_api(settings: KeysSettings | None = None) -> FastAPI:
    settings = settings or KeysSettings()
    resources = Resources(settings, schema="keys", redis=True, vault=False)
    vault_holder: dict[str, Vault] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with resources.lifespan(app):
            vault = api_keys_vault(settings)
            vault_holder["vault"] = vault
            app.state.keys = KeysService(settings, resources.pool, vault, resources.redis)
            yield

    async def vault_ready() -> bool:
        vault = vault_holder.get("vault")
        return vault is not None and await vault.is_ready()

    return create_app(
        settings,
        process="api",
        readiness={**resources.readiness(), "vault": vault_ready},
        lifespan=lifespan,
        routers=[auth, keys, internal_router],
        title="PenguinMails keys service",
    )
