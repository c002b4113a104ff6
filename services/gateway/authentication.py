"""Who is calling: API keys (verified once by the keys service, then cached) and dashboard
access tokens (JWTs issued by the keys service), plus each tenant's current plan.

API key path: parse (prefix, lookup id, checksum; no I/O) → in-process LRU keyed by
HMAC(pepper, key) → Redis cache under the same HMAC → on a miss, one bcrypt check by the keys
service (`POST /internal/v1/api-keys/verify`), shared by concurrent requests for the same key.
Failed checks are counted per (lookup id, client address) and per client address (IPv6 by
/64); past `bad_secret_limit` / `bad_secret_limit_per_address` in the window, that address's
cache misses are refused without asking the keys service. So no address can make the platform
burn more than a bounded amount of bcrypt CPU, and a stranger who knows a key's lookup id
(it is public) cannot lock out the owner's servers: their addresses have their own counts.
Evictions (revoke, regenerate) bump a per-key version in Redis and in process; a
verification that raced an eviction is not cached.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import httpx
import jwt
import orjson
import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from libs.common.apikeys import ApiKeyFormatError, parse_api_key
from libs.common.client_address import address_bucket
from libs.common.http import (
    ApiError,
    ServiceUnavailable,
    Unauthorized,
    ValidationFailed,
    register_error_code,
)
from libs.common.principal import PRINCIPAL_HEADER, SCOPES, Principal, sign_principal
from libs.common.signing_keys import load_public_keys
from libs.common.tenancy import Mode
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

register_error_code(
    "invalid_api_key", 401, "The API key is malformed, unknown, revoked or expired."
)
register_error_code("invalid_token", 401, "The access token is malformed, expired or revoked.")
register_error_code(
    "auth_throttled",
    429,
    "Too many failed API key verifications from this address; wait for Retry-After.",
)

AUTH_OUTCOMES = Counter(
    "pm_gateway_auth",
    "Authentication outcomes at the gateway",
    ["method", "outcome"],
)

# Dashboard users act with every scope except members, who only read.
ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "owner": SCOPES,
    "admin": SCOPES,
    "member": ("read_analytics", "read_inbox"),
}
INTERNAL_SCOPE = "internal:keys"
ACCESS_TOKEN_ISSUER = "pm-keys"  # noqa: S105
ACCESS_TOKEN_AUDIENCE = "pm-gateway"  # noqa: S105


@dataclass(frozen=True)
class Caller:
    """The authenticated caller of one request: a `libs.common.principal.Principal` before
    its plan is known (`principal_for` attaches it), with the principal's field names and
    types, plus what only the gateway needs (the dashboard session, the key's plan hint).
    Its tenant and mode are a `TenantScope` (`TenantScope.of(caller)`), as in every service."""

    subject_type: Literal["api_key", "user"]
    subject_id: str  # key id or user id
    tenant_id: str
    scopes: tuple[str, ...]
    mode: Mode
    role: str | None = None
    session_id: str | None = None
    plan_hint: str | None = None


@dataclass
class _Cached:
    caller: Caller
    expires_at: float  # monotonic


class RedisGuard:
    """Tracks whether Redis answers; after an error, callers use local fallbacks for
    `retry_seconds` instead of paying a failed connection per request."""

    DEGRADED = Counter(
        "pm_gateway_redis_fallback",
        "Operations served by a local fallback because Redis was unreachable",
        ["component"],
    )

    def __init__(self, retry_seconds: float) -> None:
        self.retry_seconds = retry_seconds
        self._down_until = 0.0
        self.degraded = False

    def usable(self) -> bool:
        return time.monotonic() >= self._down_until

    def failed(self, component: str, exc: BaseException) -> None:
        self.DEGRADED.labels(component).inc()
        self._down_until = time.monotonic() + self.retry_seconds
        if not self.degraded:
            self.degraded = True
            log.warning(
                "redis unreachable: serving with local fallbacks",
                extra={"component": component, "error": type(exc).__name__},
            )

    def fallback(self, component: str) -> None:
        self.DEGRADED.labels(component).inc()

    def succeeded(self) -> None:
        if self.degraded:
            self.degraded = False
            log.warning("redis reachable again: shared limits and caches resumed")


class Authenticator:
    def __init__(
        self,
        settings: GatewaySettings,
        redis: aioredis.Redis,
        guard: RedisGuard,
        keys_client: httpx.AsyncClient,
    ) -> None:
        self.s = settings
        self.redis = redis
        self.guard = guard
        self.keys = keys_client
        self.ns = settings.redis_namespace
        self._pepper = settings.key_cache_pepper()
        self._jwt_keys = load_public_keys(settings.user_token_public_keys)
        self._local: OrderedDict[str, _Cached] = OrderedDict()
        self._local_epoch = 0
        self._inflight: dict[str, asyncio.Future[Caller]] = {}
        self._local_bad: dict[str, tuple[int, float]] = {}
        self._plans: dict[str, tuple[str, float]] = {}
        self._cache_write = redis.register_script(_CACHE_WRITE)
        self._evict = redis.register_script(_EVICT)

    # ------------------------------------------------------------ entry point

    async def authenticate(self, authorization: str | None, client: str = "unknown") -> Caller:
        if not authorization:
            AUTH_OUTCOMES.labels("none", "missing").inc()
            raise Unauthorized(
                "Send an API key or access token as 'Authorization: Bearer <token>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            AUTH_OUTCOMES.labels("none", "malformed").inc()
            raise Unauthorized(
                "The Authorization header must be 'Bearer <token>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if token.startswith("pm_"):
            return await self._api_key(token, address_bucket(client))
        return self._access_token(token)

    # ------------------------------------------------------------ dashboard tokens

    def _access_token(self, token: str) -> Caller:
        try:
            key = self._jwt_keys.get(str(jwt.get_unverified_header(token).get("kid")))
            if key is None:
                raise jwt.InvalidKeyError("unknown key id")
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                audience=ACCESS_TOKEN_AUDIENCE,
                issuer=ACCESS_TOKEN_ISSUER,
                options={"require": ["exp", "iat", "sub", "tid", "sid"]},
            )
        except jwt.PyJWTError as exc:
            AUTH_OUTCOMES.labels("jwt", "invalid").inc()
            raise _invalid_token() from exc
        role = str(claims.get("role", "member"))
        if claims.get("typ") != "access" or role not in ROLE_SCOPES:
            AUTH_OUTCOMES.labels("jwt", "invalid").inc()
            raise _invalid_token()
        AUTH_OUTCOMES.labels("jwt", "ok").inc()
        # Revoked sessions are checked in the rate-limit round trip (see ratelimit.py).
        return Caller(
            subject_type="user",
            subject_id=str(claims["sub"]),
            tenant_id=str(claims["tid"]),
            scopes=ROLE_SCOPES[role],
            mode="live",
            role=role,
            session_id=str(claims["sid"]),
        )

    # ------------------------------------------------------------ API keys

    def cache_id(self, raw_key: str) -> str:
        return hmac.new(self._pepper, raw_key.encode(), hashlib.sha256).hexdigest()

    async def _api_key(self, token: str, client: str) -> Caller:
        try:
            parsed = parse_api_key(token)
        except ApiKeyFormatError as exc:
            AUTH_OUTCOMES.labels("api_key", "malformed").inc()
            raise _invalid_key() from exc
        cid = self.cache_id(parsed.raw)
        hit = self._local.get(cid)
        if hit is not None:
            if hit.expires_at > time.monotonic():
                self._local.move_to_end(cid)
                AUTH_OUTCOMES.labels("api_key", "cache_local").inc()
                return hit.caller
            del self._local[cid]
        pending = self._inflight.get(cid)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Caller] = asyncio.get_running_loop().create_future()
        self._inflight[cid] = future
        try:
            caller = await self._resolve(cid, parsed.lookup_id, parsed.raw, client)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # consumed here; waiters re-raise it
            raise
        else:
            future.set_result(caller)
            return caller
        finally:
            del self._inflight[cid]

    async def _resolve(self, cid: str, lookup_id: str, raw: str, client: str) -> Caller:
        bad_key, addr_key = self._bad_keys(lookup_id, client)
        # Evictions bump these epochs; a result fetched before one must not be cached after.
        local_epoch = self._local_epoch
        shared_epoch: int | None = None
        if self.guard.usable():
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.get(f"{self.ns}:gw:key:{cid}")
                pipe.exists(f"{self.ns}:gw:neg:{cid}")
                pipe.get(bad_key)
                pipe.ttl(bad_key)
                pipe.get(addr_key)
                pipe.ttl(addr_key)
                pipe.get(f"{self.ns}:gw:epoch")
                cached, negative, bad, bad_ttl, addr_bad, addr_ttl, epoch = await pipe.execute()
                self.guard.succeeded()
            except RedisError as exc:
                self.guard.failed("key_cache", exc)
            else:
                entry = self._open_entry(cid, cached) if cached is not None else None
                if entry is not None:
                    caller = _caller_from(entry)
                    if self._local_epoch == local_epoch:
                        self._remember(cid, caller, entry.get("valid_until_epoch"))
                    AUTH_OUTCOMES.labels("api_key", "cache_redis").inc()
                    return caller
                if negative:
                    AUTH_OUTCOMES.labels("api_key", "negative_cache").inc()
                    raise _invalid_key()
                if int(bad or 0) >= self.s.bad_secret_limit:
                    AUTH_OUTCOMES.labels("api_key", "throttled").inc()
                    raise _throttled(bad_ttl)
                if int(addr_bad or 0) >= self.s.bad_secret_limit_per_address:
                    AUTH_OUTCOMES.labels("api_key", "throttled").inc()
                    raise _throttled(addr_ttl)
                shared_epoch = int(epoch or 0)
        else:
            self.guard.fallback("key_cache")
        if shared_epoch is None and (
            self._local_bad_count(bad_key) >= self.s.bad_secret_limit
            or self._local_bad_count(addr_key) >= self.s.bad_secret_limit_per_address
        ):
            AUTH_OUTCOMES.labels("api_key", "throttled").inc()
            raise _throttled(self.s.bad_secret_window_seconds)
        result = await self._verify_remote(raw)
        if result is None:
            AUTH_OUTCOMES.labels("api_key", "invalid").inc()
            await self._record_bad(cid, bad_key, addr_key)
            raise _invalid_key()
        caller = _caller_from(result)
        AUTH_OUTCOMES.labels("api_key", "verified").inc()
        self.remember_plan(caller.tenant_id, str(result["plan"]), only_if_absent=True)
        valid_until = result.get("valid_until_epoch")
        if self._local_epoch == local_epoch:
            self._remember(cid, caller, valid_until)
        if shared_epoch is not None:
            await self._store(cid, caller, result, valid_until, shared_epoch)
        return caller

    def _remember(self, cid: str, caller: Caller, valid_until_epoch: float | None) -> None:
        ttl = self.s.key_cache_local_ttl_seconds
        if valid_until_epoch is not None:
            ttl = min(ttl, valid_until_epoch - time.time())
        if ttl <= 0:
            return
        self._local[cid] = _Cached(caller, time.monotonic() + ttl)
        self._local.move_to_end(cid)
        while len(self._local) > self.s.key_cache_local_max_entries:
            self._local.popitem(last=False)

    async def _store(
        self,
        cid: str,
        caller: Caller,
        result: dict[str, Any],
        valid_until: float | None,
        epoch: int,
    ) -> None:
        ttl = float(self.s.key_cache_redis_ttl_seconds)
        if valid_until is not None:
            ttl = min(ttl, valid_until - time.time())
        if ttl < 1 or not self.guard.usable():
            return
        entry = {k: result[k] for k in _CACHED_FIELDS if k in result}
        try:
            # Written only if no eviction of this key happened since we looked (see _EVICT).
            await self._cache_write(
                keys=[
                    f"{self.ns}:gw:key:{cid}",
                    f"{self.ns}:gw:kidx:{caller.subject_id}",
                    f"{self.ns}:gw:epoch",
                ],
                args=[self._seal_entry(cid, orjson.dumps(entry)), int(ttl), epoch],
            )
        except RedisError as exc:
            self.guard.failed("key_cache", exc)

    # Redis is not trusted with authentication: an entry is `<mac>.<json>`, the MAC keyed by
    # the pepper over the cache id and the payload. Whoever can write Redis but does not hold
    # the pepper cannot make (or re-point) an entry; a bad one is a cache miss.
    def _mac(self, cid: str, payload: bytes) -> str:
        return hmac.new(self._pepper, cid.encode() + b"\0" + payload, hashlib.sha256).hexdigest()

    def _seal_entry(self, cid: str, payload: bytes) -> bytes:
        return self._mac(cid, payload).encode() + b"." + payload

    def _open_entry(self, cid: str, sealed: bytes) -> dict[str, Any] | None:
        mac, sep, payload = sealed.partition(b".")
        if not sep or not hmac.compare_digest(mac, self._mac(cid, payload).encode()):
            AUTH_OUTCOMES.labels("api_key", "cache_tampered").inc()
            log.warning("verified-key cache entry failed its MAC: ignored")
            return None
        try:
            entry: dict[str, Any] = orjson.loads(payload)
            _caller_from(entry)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None
        return entry

    async def _verify_remote(self, raw: str) -> dict[str, Any] | None:
        try:
            resp = await self.keys.post(
                "/internal/v1/api-keys/verify",
                content=orjson.dumps({"key": raw}),
                headers={
                    "Content-Type": "application/json",
                    PRINCIPAL_HEADER: self.service_principal(
                        "POST", "/internal/v1/api-keys/verify"
                    ),
                },
            )
        except httpx.HTTPError as exc:
            log.warning("key verification unavailable", extra={"error": type(exc).__name__})
            raise ServiceUnavailable(
                "Authentication is temporarily unavailable.", headers={"Retry-After": "1"}
            ) from exc
        if resp.status_code == 401:
            return None
        if resp.status_code != 200:
            log.warning("key verification failed", extra={"upstream_status": resp.status_code})
            raise ServiceUnavailable(
                "Authentication is temporarily unavailable.", headers={"Retry-After": "1"}
            )
        data: dict[str, Any] = orjson.loads(resp.content)["data"]
        until = data.get("valid_until")
        data["valid_until_epoch"] = datetime.fromisoformat(until).timestamp() if until else None
        return data

    def _bad_keys(self, lookup_id: str, client: str) -> tuple[str, str]:
        return f"{self.ns}:gw:bad:{lookup_id}:{client}", f"{self.ns}:gw:badaddr:{client}"

    async def _record_bad(self, cid: str, bad_key: str, addr_key: str) -> None:
        now = time.monotonic()
        for name in (bad_key, addr_key):
            count, started = self._local_bad.get(name, (0, now))
            if now - started > self.s.bad_secret_window_seconds:
                count, started = 0, now
            self._local_bad[name] = (count + 1, started)
        if len(self._local_bad) > 100_000:
            self._local_bad.clear()
        if not self.guard.usable():
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            for name in (bad_key, addr_key):
                pipe.incr(name)
                pipe.expire(name, self.s.bad_secret_window_seconds, nx=True)
            pipe.set(f"{self.ns}:gw:neg:{cid}", "1", ex=self.s.negative_cache_seconds)
            await pipe.execute()
        except RedisError as exc:
            self.guard.failed("key_cache", exc)

    def _local_bad_count(self, name: str) -> int:
        count, started = self._local_bad.get(name, (0, 0.0))
        if time.monotonic() - started > self.s.bad_secret_window_seconds:
            return 0
        return count

    def service_principal(self, method: str, path: str) -> str:
        principal = Principal(
            tenant_id="platform",
            subject_type="service",
            subject_id="gateway",
            scopes=[INTERNAL_SCOPE],
            plan="internal",
            mode="live",
        )
        return sign_principal(
            principal,
            self.s.principal_private_key.get_secret_value(),
            self.s.principal_ttl_seconds,
            audience="keys",
            method=method,
            path=path,
        )

    # ------------------------------------------------------------ eviction

    def evict_local(self, key_id: str) -> None:
        """Drop every cached secret of `key_id` in this process."""
        self._local_epoch += 1
        stale = [cid for cid, c in self._local.items() if c.caller.subject_id == key_id]
        for cid in stale:
            del self._local[cid]

    def clear_local(self) -> None:
        """After a gap in the eviction feed: forget everything cached in process."""
        self._local.clear()
        self._plans.clear()
        self._local_epoch += 1

    async def evict_shared(self, key_id: str) -> None:
        """Drop `key_id` from the Redis cache and stop in-flight verifications caching it."""
        try:
            await self._evict(
                keys=[f"{self.ns}:gw:kidx:{key_id}", f"{self.ns}:gw:epoch"],
                args=[self.s.key_cache_redis_ttl_seconds + 60],
            )
        except RedisError as exc:
            self.guard.failed("key_cache", exc)

    # ------------------------------------------------------------ plans

    def remember_plan(self, tenant_id: str, plan: str, *, only_if_absent: bool = False) -> None:
        if only_if_absent and tenant_id in self._plans:
            return
        self._plans[tenant_id] = (plan, time.monotonic() + self.s.plan_cache_local_ttl_seconds)

    async def set_plan(self, tenant_id: str, plan: str) -> None:
        """A `tenant.plan_changed` arrived: apply it here and for every replica."""
        self.remember_plan(tenant_id, plan)
        if not self.guard.usable():
            return
        try:
            await self.redis.set(
                f"{self.ns}:gw:plan:{tenant_id}",
                self._seal_entry("plan:" + tenant_id, plan.encode()),
                ex=self.s.plan_cache_redis_ttl_seconds,
            )
        except RedisError as exc:
            self.guard.failed("plan_cache", exc)

    async def plan_of(self, caller: Caller) -> str:
        hit = self._plans.get(caller.tenant_id)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        plan = await self._plan_shared(caller.tenant_id)
        if plan is None:
            plan = await self._plan_from_keys(caller.tenant_id)
            if plan is None:
                return hit[0] if hit else "starter"
            if self.guard.usable():
                try:
                    await self.redis.set(
                        f"{self.ns}:gw:plan:{caller.tenant_id}",
                        self._seal_entry("plan:" + caller.tenant_id, plan.encode()),
                        ex=self.s.plan_cache_redis_ttl_seconds,
                        nx=True,
                    )
                except RedisError as exc:
                    self.guard.failed("plan_cache", exc)
        self.remember_plan(caller.tenant_id, plan)
        return plan

    async def _plan_shared(self, tenant_id: str) -> str | None:
        if not self.guard.usable():
            return None
        try:
            raw = await self.redis.get(f"{self.ns}:gw:plan:{tenant_id}")
        except RedisError as exc:
            self.guard.failed("plan_cache", exc)
            return None
        if not raw:
            return None
        return self._open_plan(tenant_id, raw if isinstance(raw, bytes) else raw.encode())

    def _open_plan(self, tenant_id: str, sealed: bytes) -> str | None:
        mac, sep, payload = sealed.partition(b".")
        if not sep or not hmac.compare_digest(
            mac, self._mac("plan:" + tenant_id, payload).encode()
        ):
            log.warning("plan cache entry failed its MAC: ignored")
            return None
        return payload.decode()

    async def _plan_from_keys(self, tenant_id: str) -> str | None:
        try:
            path = f"/internal/v1/tenants/{tenant_id}/plan"
            resp = await self.keys.get(
                path, headers={PRINCIPAL_HEADER: self.service_principal("GET", path)}
            )
        except httpx.HTTPError:
            log.warning("plan lookup unavailable; keeping the last known plan")
            return None
        if resp.status_code != 200:
            return None
        return str(orjson.loads(resp.content)["data"]["plan"])


# KEYS: 1 cache entry, 2 key's index set, 3 eviction epoch; ARGV: 1 entry, 2 ttl s, 3 epoch
# seen before the verification started (any eviction since then: do not cache).
_CACHE_WRITE = """
local current = tonumber(redis.call('GET', KEYS[3]) or '0')
if current ~= tonumber(ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('EXPIRE', KEYS[2], ARGV[2], 'GT')
if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[2]) end
return 1
"""

# KEYS: 1 key's index set, 2 eviction epoch; ARGV: 1 (unused)
_EVICT = """
redis.call('INCR', KEYS[2])
local entries = redis.call('SMEMBERS', KEYS[1])
for _, k in ipairs(entries) do redis.call('DEL', k) end
redis.call('DEL', KEYS[1])
return #entries
"""


# A dashboard session picks the data it acts on per request (the live/test switch); an API
# key's mode is fixed by the key, so the header is ignored for keys.
MODE_HEADER = "X-PM-Mode"


def session_mode(caller: Caller, requested: str | None) -> Caller:
    if requested is None or caller.subject_type != "user":
        return caller
    if requested not in ("live", "test"):
        raise ValidationFailed(
            details=[{"field": f"header.{MODE_HEADER}", "message": "must be 'live' or 'test'"}]
        )
    mode: Mode = "test" if requested == "test" else "live"
    return dataclasses.replace(caller, mode=mode)


# What the Redis cache keeps of a verification (nothing else is needed to rebuild a Caller).
_CACHED_FIELDS = ("key_id", "tenant_id", "scopes", "mode", "plan", "valid_until_epoch", "role")


def _caller_from(data: dict[str, Any]) -> Caller:
    return Caller(
        subject_type="api_key",
        subject_id=str(data["key_id"]),
        tenant_id=str(data["tenant_id"]),
        scopes=tuple(data["scopes"]),
        mode=data["mode"],
        role=data.get("role"),
        plan_hint=data.get("plan"),
    )


def _invalid_key() -> ApiError:
    return ApiError(
        "The API key is malformed, unknown, revoked or expired.",
        code="invalid_api_key",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _invalid_token() -> ApiError:
    return ApiError(
        "The access token is malformed, expired or revoked.",
        code="invalid_token",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


def _throttled(ttl: Any) -> ApiError:
    return ApiError(
        "Too many failed API key verifications from this address; wait for Retry-After.",
        code="auth_throttled",
        headers={"Retry-After": str(max(1, int(ttl or 1)))},
    )


def principal_for(caller: Caller, plan: str, request_id: str | None) -> Principal:
    return Principal(
        tenant_id=caller.tenant_id,
        subject_type=caller.subject_type,
        subject_id=caller.subject_id,
        scopes=list(caller.scopes),
        plan=plan,
        mode=caller.mode,
        request_id=request_id,
        role=caller.role,
    )
