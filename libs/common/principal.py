"""The signed principal the gateway forwards to services, and how services check it.

The gateway authenticates the integrator (API key or JWT), then calls a service with a
short-lived Ed25519 (EdDSA) token in `X-PM-Principal` saying who is calling: tenant, key or
user (and the user's role), scopes, plan, live/test mode. Only the gateway holds the private
key; services hold public keys, so a compromised service or worker cannot mint a principal.
Each token is bound to one target service (`aud`), one HTTP method (`htm`) and one path
(`htu`) and carries a unique `jti`: a captured principal is useless against another service
or route. A service trusts nothing else: `principal_dependency` rejects a request whose
principal is missing, forged, tampered with, expired or bound to another route.
"""

import base64
import contextvars
import functools
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, get_args

import jwt
import orjson
from fastapi import Depends, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request

from libs.common.http import Forbidden, Unauthorized, register_error_code
from libs.common.signing_keys import load_private_key, load_public_keys

__all__ = [
    "PRINCIPAL_HEADER",
    "PRINCIPAL_ISSUER",
    "SCOPES",
    "KeyProvider",
    "Principal",
    "PrincipalDependency",
    "PrincipalError",
    "PrincipalExpired",
    "Scope",
    "principal_dependency",
    "require_scope",
    "sign_principal",
    "tenant_id_var",
    "verify_principal",
]

PRINCIPAL_HEADER = "X-PM-Principal"
PRINCIPAL_ISSUER = "pm-gateway"
_ALGORITHM = "EdDSA"
# A principal is a few hundred bytes; refuse to parse anything absurd.
_MAX_TOKEN_CHARS = 8192
_REGISTERED_CLAIMS = ("iat", "exp", "iss", "aud", "jti", "htm", "htu")

register_error_code(
    "principal_missing", 401, "The internal request carries no X-PM-Principal header."
)
register_error_code(
    "principal_invalid",
    401,
    "The X-PM-Principal token is malformed, its signature is wrong, or it was issued for "
    "another service, method or path.",
)
register_error_code("principal_expired", 401, "The X-PM-Principal token has expired.")
register_error_code(
    "insufficient_scope", 403, "The credentials lack the scope this operation needs."
)

# Tenant of the verified principal of the current request; read by log lines.
tenant_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "pm_tenant_id", default=None
)


# The 8 API key scopes (seed 002 §1). A route names the one it needs; keys carry a subset.
Scope = Literal[
    "send_email",
    "read_analytics",
    "manage_contacts",
    "manage_campaigns",
    "manage_templates",
    "manage_domains",
    "read_inbox",
    "manage_webhooks",
]
SCOPES: tuple[str, ...] = get_args(Scope)


class Principal(BaseModel):
    """Who is calling, as established by the gateway."""

    # Unknown claims are ignored so the gateway can add fields before services know them.
    model_config = ConfigDict(frozen=True, extra="ignore")

    tenant_id: str
    subject_type: Literal["api_key", "user", "service"]
    subject_id: str
    scopes: list[str]
    plan: str
    mode: Literal["live", "test"]
    request_id: str | None = None
    # Dashboard role of the user (subject_type "user") or of the user who created the API
    # key (subject_type "api_key"); None when unknown.
    role: str | None = None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class PrincipalError(Exception):
    """A principal token is missing, malformed, forged, tampered with or not valid now."""


class PrincipalExpired(PrincipalError):
    """The principal token's `exp` has passed (beyond the leeway)."""


def sign_principal(
    principal: Principal,
    private_key: str,
    ttl_seconds: int,
    *,
    audience: str,
    method: str,
    path: str,
) -> str:
    """An EdDSA token carrying `principal` for one `method` + `path` of service `audience`,
    valid for `ttl_seconds` from now. `private_key` is `<kid>:<base64url seed>`."""
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    signing = load_private_key(private_key)
    now = int(time.time())
    claims: dict[str, Any] = {k: v for k, v in principal if v is not None}
    claims.update(
        iat=now,
        exp=now + ttl_seconds,
        iss=PRINCIPAL_ISSUER,
        aud=audience,
        jti=secrets.token_urlsafe(12),
        htm=method.upper(),
        htu=path,
    )
    # A compact JWS (RFC 7515) built here rather than by `jwt.encode`: the same token, but
    # the gateway signs one per request and PyJWT's generic path cost more than the signature.
    signing_input = _jws_header(signing.kid) + b"." + _b64url(orjson.dumps(claims))
    return (signing_input + b"." + _b64url(signing.key.sign(signing_input))).decode()


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


@functools.lru_cache(maxsize=16)
def _jws_header(kid: str) -> bytes:
    return _b64url(orjson.dumps({"alg": _ALGORITHM, "kid": kid, "typ": "JWT"}))


def verify_principal(
    token: str,
    public_keys: str,
    *,
    audience: str,
    method: str,
    path: str,
    leeway: int = 5,
) -> Principal:
    """The principal in `token`; raises `PrincipalError` unless the signature (by one of
    `public_keys`, chosen by the token's `kid`), issuer, audience, method, path, `iat` and
    `exp` all check out (`leeway` seconds of clock skew allowed)."""
    keys = load_public_keys(public_keys)
    if not token or len(token) > _MAX_TOKEN_CHARS:
        raise PrincipalError("principal token is empty or too long")
    try:
        header = jwt.get_unverified_header(token)
        key = keys.get(str(header.get("kid")))
        if key is None:
            raise PrincipalError("principal token names an unknown key id")
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[_ALGORITHM],
            audience=audience,
            issuer=PRINCIPAL_ISSUER,
            leeway=leeway,
            options={"require": list(_REGISTERED_CLAIMS)},
        )
    except jwt.ExpiredSignatureError as exc:
        raise PrincipalExpired("principal token has expired") from exc
    except jwt.PyJWTError as exc:
        raise PrincipalError(f"principal token rejected: {type(exc).__name__}") from exc
    if claims.get("htm") != method.upper() or claims.get("htu") != path:
        raise PrincipalError("principal token was issued for another method or path")
    for claim in _REGISTERED_CLAIMS:
        claims.pop(claim, None)
    try:
        return Principal.model_validate(claims)
    except ValidationError as exc:
        raise PrincipalError("principal token claims are incomplete or malformed") from exc


KeyProvider = Callable[[], str]
"""Returns the current public key set; called per request so a rotated set takes effect."""

_principal_header = APIKeyHeader(
    name=PRINCIPAL_HEADER,
    scheme_name="PMPrincipal",
    description="Short-lived principal signed by the gateway (internal calls only).",
    auto_error=False,
)


class PrincipalDependency:
    """FastAPI dependency returning the verified `Principal` of the request.

    Use one instance per service: FastAPI caches a dependency per request by identity, so
    `require_scope` built on the same instance verifies the token only once.
    """

    def __init__(
        self,
        key_provider: KeyProvider | None = None,
        *,
        audience: str | None = None,
        leeway: int = 5,
    ) -> None:
        # Without them, the app's settings (`app.state.settings`, set by `create_app`) give
        # the key set and the audience at request time: routers can live at module level.
        self._key_provider = key_provider
        self._audience = audience
        self._leeway = leeway

    async def __call__(
        self, request: Request, token: Annotated[str | None, Security(_principal_header)]
    ) -> Principal:
        if not token:
            raise Unauthorized("Missing internal principal.", code="principal_missing")
        try:
            keys, audience = self._verification(request)
            principal = verify_principal(
                token,
                keys,
                audience=audience,
                method=request.method,
                path=request.scope["path"],
                leeway=self._leeway,
            )
        except PrincipalExpired as exc:
            raise Unauthorized("Internal principal has expired.", code="principal_expired") from exc
        except PrincipalError as exc:
            raise Unauthorized("Internal principal is invalid.", code="principal_invalid") from exc
        # Not reset here: the access-log middleware scopes it to the request.
        tenant_id_var.set(principal.tenant_id)
        return principal

    def _verification(self, request: Request) -> tuple[str, str]:
        """The public key set and the audience to verify this request's token with."""
        if self._key_provider is not None and self._audience is not None:
            return self._key_provider(), self._audience
        settings = request.app.state.settings
        return str(settings.principal_public_keys), str(settings.service_name)


# The principal of a request to any service, verified with that app's settings: the one
# instance every module-level router uses (FastAPI caches a dependency per request by
# identity, so each request's token is verified once). Example: `services/keys/auth.py`.
current_principal = PrincipalDependency()


def principal_dependency(
    key_provider: KeyProvider, *, audience: str, leeway: int = 5
) -> PrincipalDependency:
    """A guard with a fixed key set and audience, for an app without service settings (test
    upstreams, benches). Services use `current_principal`, which reads both from the app's
    settings: `principal: Annotated[Principal, Depends(current_principal)]`.
    """
    return PrincipalDependency(key_provider, audience=audience, leeway=leeway)


def require_scope(
    scope: str, principal: PrincipalDependency
) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency returning the principal when it holds `scope`, else 403
    `insufficient_scope` naming the scope."""

    # Evaluated eagerly (no `from __future__ import annotations` here): FastAPI cannot
    # resolve a string annotation that refers to the closure variable `principal`.
    async def scoped_principal(p: Annotated[Principal, Depends(principal)]) -> Principal:
        if not p.has_scope(scope):
            raise Forbidden(
                f"This operation requires the '{scope}' scope.", code="insufficient_scope"
            )
        return p

    return scoped_principal
