"""`Idempotency-Key` on POST, Stripe semantics, stored in Redis for every replica.

The first request with a key takes a lock (SET NX) holding the request's fingerprint
(method, path, query, body); its response is stored under the key for 24 h. A retry with
the same fingerprint gets the stored response; a different fingerprint gets 409
`idempotency_key_reused`; a retry while the first is still running gets 409
`idempotency_key_in_use`. Keys are scoped per tenant and live/test mode.

Stored responses are encrypted (AES-256-GCM, key `PM_IDEMPOTENCY_ENCRYPTION_KEY` from Vault,
held by the gateway alone; the Redis key name and fingerprint are the associated data):
responses such as a new API key or webhook secret are replayed byte for byte, but Redis alone
reveals nothing and an entry cannot be edited or moved to another key undetected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from libs.common.http import ApiError, register_error_code
from libs.common.tenancy import TenantScope

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

log = logging.getLogger(__name__)

IDEMPOTENCY_HEADER = "idempotency-key"
REPLAYED_HEADER = "Idempotent-Replayed"
_MAX_KEY_CHARS = 255
# What `validate_key` accepts, for the spec: printable characters (`str.isprintable`) of
# Latin-1, the only characters a header value can bring (no C0/C1 controls, no NBSP or soft
# hyphen), not starting or ending with a space (HTTP strips those anyway).
_PRINTABLE = r"!-~\u00a1-\u00ac\u00ae-\u00ff"
KEY_PATTERN = rf"^[{_PRINTABLE}](?:[ {_PRINTABLE}]*[{_PRINTABLE}])?$"


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
        self,
        redis: aioredis.Redis,
        namespace: str,
        ttl_seconds: int,
        lock_seconds: int,
        *,
        encryption_key: str,
    ) -> None:
        self._redis = redis
        # A 256-bit AES key derived from the configured secret (any length, from Vault).
        self._aead = AESGCM(
            hmac.new(encryption_key.encode(), b"pm-idempotency-v1", hashlib.sha256).digest()
        )
        self._ns = namespace
        self._ttl = ttl_seconds
        # The lock outlives the longest upstream call; a killed gateway frees it by expiry.
        self._lock_seconds = lock_seconds

    def _key(self, scope: TenantScope, key: str) -> str:
        hashed = hashlib.sha256(key.encode()).hexdigest()
        return f"{self._ns}:idem:{scope.tenant_id}:{scope.mode}:{hashed}"

    async def begin(self, scope: TenantScope, key: str, fp: str) -> StoredResponse | None:
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
        try:
            sealed = base64.b64decode(entry["sealed"])
            plain = self._aead.decrypt(sealed[:12], sealed[12:], _aad(name, fp))
            stored = orjson.loads(plain)
        except (KeyError, ValueError, InvalidTag):
            # Written by something without the key (or edited): never replay it, never
            # run the request a second time either.
            log.error("stored idempotent response failed authentication", extra={"key": name})
            raise ApiError(
                "The response stored for this Idempotency-Key cannot be replayed; use a new key.",
                code="idempotency_key_reused",
            ) from None
        return StoredResponse(
            status=int(stored["status"]),
            headers=[(k, v) for k, v in stored["headers"]],
            body=base64.b64decode(stored["body"]),
        )

    async def finish(self, scope: TenantScope, key: str, fp: str, response: StoredResponse) -> None:
        name = self._key(scope, key)
        plain = orjson.dumps(
            {
                "status": response.status,
                "headers": response.headers,
                "body": base64.b64encode(response.body).decode(),
            }
        )
        nonce = os.urandom(12)
        sealed = nonce + self._aead.encrypt(nonce, plain, _aad(name, fp))
        entry = {"state": "done", "fp": fp, "sealed": base64.b64encode(sealed).decode()}
        await self._redis.set(name, orjson.dumps(entry), ex=self._ttl)

    async def abandon(self, scope: TenantScope, key: str) -> None:
        """The upstream never saw the request (it was not reachable): allow a retry."""
        await self._redis.delete(self._key(scope, key))


def _aad(name: str, fp: str) -> bytes:
    return name.encode() + b"\0" + fp.encode()
