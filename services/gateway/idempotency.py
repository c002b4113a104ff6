"""`Idempotency-Key` on POST, Stripe semantics, stored in Redis for every replica.

The first request with a key takes a lock (SET NX) holding the request's fingerprint
(method, path, query, body); its response is stored under the key for 24 h. A retry with
the same fingerprint gets the stored response; a different fingerprint gets 409
`idempotency_key_reused`; a retry while the first is still running gets 409
`idempotency_key_in_use`. Keys are scoped per tenant and live/test mode.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis

from libs.common.http import ApiError, register_error_code

register_error_code(
    "invalid_idempotency_key", 400, "The Idempotency-Key header must be 1-255 printable characters."
)
register_error_code(
    "idempotency_key_in_use", 409, "A request with this Idempotency-Key is still being processed."
)
register_error_code(
    "idempotency_key_reused",
    409,
    "This Idempotency-Key was already used with a different request.",
)

IDEMPOTENCY_HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
_MAX_KEY_CHARS = 255


@dataclass(frozen=True)
class StoredResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def validate_key(value: str) -> str:
    if not 1 <= len(value) <= _MAX_KEY_CHARS or not value.isprintable():
        raise ApiError(code="invalid_idempotency_key")
    return value


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode()):
        digest.update(part)
        digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()


class IdempotencyStore:
    def __init__(
        self, redis: aioredis.Redis, namespace: str, ttl_seconds: int, lock_seconds: int
    ) -> None:
        self._redis = redis
        self._ns = namespace
        self._ttl = ttl_seconds
        # The lock outlives the longest upstream call; a killed gateway frees it by expiry.
        self._lock_seconds = lock_seconds

    def _key(self, scope: str, key: str) -> str:
        hashed = hashlib.sha256(key.encode()).hexdigest()
        return f"{self._ns}:idem:{scope}:{hashed}"

    async def begin(self, scope: str, key: str, fp: str) -> StoredResponse | None:
        """Claim `key` (returns None: go ahead) or return the stored response; raises 409s."""
        name = self._key(scope, key)
        running = orjson.dumps({"state": "running", "fp": fp})
        if await self._redis.set(name, running, nx=True, ex=self._lock_seconds):
            return None
        raw = await self._redis.get(name)
        if raw is None:  # expired between the two calls: claim again
            if await self._redis.set(name, running, nx=True, ex=self._lock_seconds):
                return None
            raise ApiError(code="idempotency_key_in_use", headers={"Retry-After": "1"})
        entry = orjson.loads(raw)
        if entry["fp"] != fp:
            raise ApiError(code="idempotency_key_reused")
        if entry["state"] == "running":
            raise ApiError(code="idempotency_key_in_use", headers={"Retry-After": "1"})
        return StoredResponse(
            status=int(entry["status"]),
            headers=[(k, v) for k, v in entry["headers"]],
            body=base64.b64decode(entry["body"]),
        )

    async def finish(self, scope: str, key: str, fp: str, response: StoredResponse) -> None:
        entry = {
            "state": "done",
            "fp": fp,
            "status": response.status,
            "headers": response.headers,
            "body": base64.b64encode(response.body).decode(),
        }
        await self._redis.set(self._key(scope, key), orjson.dumps(entry), ex=self._ttl)

    async def abandon(self, scope: str, key: str) -> None:
        """The upstream never saw the request (it was not reachable): allow a retry."""
        await self._redis.delete(self._key(scope, key))
