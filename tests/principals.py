"""Principals in tests, signed as the gateway signs them (the built-in dev key pair).

A real principal is bound to one service, method and path. Fixtures that hand out one
header for many requests sign it unbound (`htm`/`htu` = "*", which every service refuses) and
give their client `bind_principal` as a request event hook: it re-signs each such header for
that request's method and path. Tokens not signed with the dev key (forgeries a test makes
on purpose) pass through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import jwt

from libs.common.principal import (
    PRINCIPAL_HEADER,
    Principal,
    PrincipalError,
    sign_principal,
    verify_principal,
)
from libs.common.signing_keys import DEV_PRINCIPAL_PRIVATE_KEY, DEV_PRINCIPAL_PUBLIC_KEYS

ANY = "*"


def unbound_principal(principal: Principal, audience: str, ttl_seconds: int = 300) -> str:
    """A dev-signed token for `audience`, to be bound per request by `bind_principal`."""
    return sign_principal(
        principal, DEV_PRINCIPAL_PRIVATE_KEY, ttl_seconds, audience=audience, method=ANY, path=ANY
    )


def bound_principal(principal: Principal, audience: str, method: str, path: str) -> str:
    return sign_principal(
        principal, DEV_PRINCIPAL_PRIVATE_KEY, 300, audience=audience, method=method, path=path
    )


def _rebind(request: httpx.Request) -> None:
    token = request.headers.get(PRINCIPAL_HEADER)
    if not token:
        return
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        audience = str(claims["aud"])
        principal = verify_principal(
            token, DEV_PRINCIPAL_PUBLIC_KEYS, audience=audience, method=ANY, path=ANY
        )
    except (jwt.PyJWTError, KeyError, PrincipalError):
        return  # bound already, or not ours: leave it as the test made it
    request.headers[PRINCIPAL_HEADER] = bound_principal(
        principal, audience, request.method, request.url.path
    )


async def bind_principal(request: httpx.Request) -> None:
    """httpx request hook (AsyncClient): bind an unbound principal to this request."""
    _rebind(request)


def bind_principal_sync(request: httpx.Request) -> None:
    """httpx request hook (Client): bind an unbound principal to this request."""
    _rebind(request)


BIND_HOOKS: dict[str, list[Callable[[httpx.Request], Awaitable[None]]]] = {
    "request": [bind_principal]
}
SYNC_BIND_HOOKS: dict[str, list[Callable[[httpx.Request], None]]] = {
    "request": [bind_principal_sync]
}
