"""A stand-in upstream service for gateway tests: it checks the signed principal with
libs.common.principal, exactly as a real service does, and echoes what it received. It stands
in for every upstream service, so it accepts a principal for any of them (one dependency per
audience, picked by the token's `aud`) and echoes the audience.

`python -m tests.integration.gateway.echo_upstream <port>`; `?delay=<seconds>` slows an answer
(for concurrent Idempotency-Key tests).
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Annotated, Any

import jwt
import redis.exceptions
import uvicorn
from fastapi import Depends, FastAPI, Request

from libs.common.http import install_error_handlers, ok
from libs.common.principal import PRINCIPAL_HEADER, Principal, principal_dependency
from libs.common.signing_keys import DEV_PRINCIPAL_PUBLIC_KEYS
from services.gateway.routes import UPSTREAM_SERVICES

KEYS = os.environ.get("PM_PRINCIPAL_PUBLIC_KEYS", DEV_PRINCIPAL_PUBLIC_KEYS)
BY_AUDIENCE = {svc: principal_dependency(lambda: KEYS, audience=svc) for svc in UPSTREAM_SERVICES}


async def current(request: Request) -> Principal:
    token = request.headers.get(PRINCIPAL_HEADER)
    try:
        audience = str(jwt.decode(token or "", options={"verify_signature": False})["aud"])
    except (jwt.PyJWTError, KeyError):
        audience = "campaigns"  # any: the dependency below refuses the token
    request.state.audience = audience
    return await BY_AUDIENCE.get(audience, BY_AUDIENCE["campaigns"])(request, token)


app = FastAPI()
install_error_handlers(app)
calls = {"count": 0}
# Idempotency-Key (forwarded by the gateway) -> calls left that find a dependency down.
dependency_down: dict[str, int] = {}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/calls")
async def count() -> dict[str, int]:
    return calls


@app.post("/_dependency_down/{key}")
async def set_dependency_down(key: str, times: int = 1) -> dict[str, int]:
    """The next `times` calls carrying Idempotency-Key `key` find Redis unreachable (the
    error every service's handler answers 503 `service_unavailable`, nothing done)."""
    dependency_down[key] = times
    return dependency_down


@app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
async def echo(
    path: str, request: Request, principal: Annotated[Principal, Depends(current)]
) -> dict[str, Any]:
    calls["count"] += 1
    key = request.headers.get("idempotency-key", "")
    if dependency_down.get(key):
        dependency_down[key] -= 1
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379.")
    delay = float(request.query_params.get("delay", "0"))
    if delay:
        await asyncio.sleep(delay)
    body = await request.body()
    return ok(
        {
            "path": "/" + path,
            "method": request.method,
            "principal": principal.model_dump(),
            "audience": request.state.audience,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body.decode(),
            "call": calls["count"],
        }
    )


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
