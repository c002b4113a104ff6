"""The signed principal the gateway forwards to services, and how services check it.

The gateway authenticates the integrator (API key or JWT), then calls a service with a
short-lived HS256 token in `X-PM-Principal` saying who is calling: tenant, key or user,
scopes, plan, live/test mode. A service trusts nothing else: `principal_dependency`
rejects a request whose principal is missing, forged, tampered with or expired.
"""

import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, get_args

import jwt
from fastapi import Depends, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, ValidationError

from libs.common.http import Forbidden, Unauthorized, register_error_code

__all__ = [
    "PRINCIPAL_AUDIENCE",
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
PRINCIPAL_AUDIENCE = "pm-services"
_ALGORITHM = "HS256"
# RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
_MIN_KEY_BYTES = 32
# A principal is a few hundred bytes; refuse to parse anything absurd.
_MAX_TOKEN_CHARS = 8192
_REGISTERED_CLAIMS = ("iat", "exp", "iss", "aud")

register_error_code(
    "principal_missing", 401, "The internal request carries no X-PM-Principal header."
)
register_error_code(
    "principal_invalid", 401, "The X-PM-Principal token is malformed or its signature is wrong."
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

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class PrincipalError(Exception):
    """A principal token is missing, malformed, forged, tampered with or not valid now."""


class PrincipalExpired(PrincipalError):
    """The principal token's `exp` has passed (beyond the leeway)."""


def _key_bytes(key: bytes | str) -> bytes:
    raw = key.encode("utf-8") if isinstance(key, str) else key
    if len(raw) < _MIN_KEY_BYTES:
        # A configuration error, not a bad token: surfaces as a 500, never as a 401.
        raise ValueError(f"principal signing key must be at least {_MIN_KEY_BYTES} bytes")
    return raw


def sign_principal(principal: Principal, key: bytes | str, ttl_seconds: int) -> str:
    """An HS256 token carrying `principal`, valid for `ttl_seconds` from now."""
    if ttl_seconds <= 0:
        raise ValueError("ttl_seconds must be positive")
    now = int(time.time())
    claims: dict[str, Any] = principal.model_dump()
    claims.update(iat=now, exp=now + ttl_seconds, iss=PRINCIPAL_ISSUER, aud=PRINCIPAL_AUDIENCE)
    return jwt.encode(claims, _key_bytes(key), algorithm=_ALGORITHM)


def verify_principal(token: str, key: bytes | str, *, leeway: int = 5) -> Principal:
    """The principal in `token`; raises `PrincipalError` unless the signature, issuer,
    audience, `iat` and `exp` all check out (`leeway` seconds of clock skew allowed)."""
    secret = _key_bytes(key)
    if not token or len(token) > _MAX_TOKEN_CHARS:
        raise PrincipalError("principal token is empty or too long")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[_ALGORITHM],
            audience=PRINCIPAL_AUDIENCE,
            issuer=PRINCIPAL_ISSUER,
            leeway=leeway,
            options={"require": list(_REGISTERED_CLAIMS)},
        )
    except jwt.ExpiredSignatureError as exc:
        raise PrincipalExpired("principal token has expired") from exc
    except jwt.PyJWTError as exc:
        raise PrincipalError(f"principal token rejected: {type(exc).__name__}") from exc
    for claim in _REGISTERED_CLAIMS:
        claims.pop(claim, None)
    try:
        return Principal.model_validate(claims)
    except ValidationError as exc:
        raise PrincipalError("principal token claims are incomplete or malformed") from exc


KeyProvider = Callable[[], bytes | str]
"""Returns the current signing key; called per request so a rotated key takes effect."""

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

    def __init__(self, key_provider: KeyProvider, *, leeway: int = 5) -> None:
        self._key_provider = key_provider
        self._leeway = leeway

    async def __call__(
        self, token: Annotated[str | None, Security(_principal_header)]
    ) -> Principal:
        if not token:
            raise Unauthorized("Missing internal principal.", code="principal_missing")
        try:
            principal = verify_principal(token, self._key_provider(), leeway=self._leeway)
        except PrincipalExpired as exc:
            raise Unauthorized("Internal principal has expired.", code="principal_expired") from exc
        except PrincipalError as exc:
            raise Unauthorized("Internal principal is invalid.", code="principal_invalid") from exc
        # Not reset here: the access-log middleware scopes it to the request.
        tenant_id_var.set(principal.tenant_id)
        return principal


def principal_dependency(key_provider: KeyProvider, *, leeway: int = 5) -> PrincipalDependency:
    """The dependency that guards a service's routes, e.g.
    `current_principal = principal_dependency(lambda: settings.principal_signing_key
    .get_secret_value())` then `principal: Annotated[Principal, Depends(current_principal)]`.
    """
    return PrincipalDependency(key_provider, leeway=leeway)


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
