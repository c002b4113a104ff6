"""Rate limits per key and per tenant: a token bucket per minute and a fixed hourly quota,
by plan (libs/common/plans.py).

The caller's own buckets (API key or dashboard user) and its tenant's buckets (shared by all
its keys and users, same numbers) are checked and consumed together in one atomic Lua script
in Redis (shared by every gateway replica): a request passes only if all four allow it, so a
tenant cannot multiply its plan by creating keys. The same round trip records the request in
the key's usage counters and checks whether the caller's dashboard session was revoked. When
Redis cannot be reached the gateway keeps serving with `LocalLimiter`, the same algorithm
per process.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from dataclasses import dataclass

import redis.asyncio as aioredis

from libs.common.plans import DEFAULT_PLAN, PLANS, PlanLimits, limits_for

__all__ = [
    "DEFAULT_PLAN",
    "PLAN_LIMITS",
    "LocalLimiter",
    "PlanLimits",
    "RateDecision",
    "RedisLimiter",
    "limits_for",
    "rate_limit_headers",
]


PLAN_LIMITS = PLANS


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    minute_limit: int
    minute_remaining: int
    minute_reset_ms: int  # until the bucket is full again
    hour_limit: int
    hour_remaining: int
    hour_reset_ms: int  # until the hourly window ends
    retry_after_ms: int  # 0 when allowed
    now_ms: int
    session_revoked: bool = False


# KEYS: 1 bucket hash, 2 hourly counter prefix, 3 usage hash, 4 usage dirty set,
#       5 revoked-session marker (a placeholder name when the caller has no session: every
#         key named must be one the gateway's Redis ACL user may access),
#       6 tenant bucket hash, 7 tenant hourly counter prefix
# ARGV: 1 capacity, 2 refill tokens/ms, 3 hourly limit, 4 now ms ("" = Redis clock),
#       5 key id for usage ("" = no usage recording), 6 "1" when KEYS[5] is a real session
# Returns {allowed, tokens (the scarcer bucket), used (the fuller hour), now}.
_SCRIPT = """
if ARGV[6] == '1' and redis.call('EXISTS', KEYS[5]) == 1 then
  return {-1, '0', 0, 0}
end
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local hour_limit = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local hour_start = now - (now % 3600000)
local function load(bucket, hour_prefix)
  local b = redis.call('HMGET', bucket, 't', 'ts', 'c')
  local tokens = tonumber(b[1])
  local ts = tonumber(b[2])
  local old_capacity = tonumber(b[3])
  if not tokens then
    tokens = capacity
    ts = now
  elseif old_capacity and capacity > old_capacity then
    -- a plan upgrade grants the larger burst at once
    tokens = tokens + (capacity - old_capacity)
  end
  tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
  local hour_key = hour_prefix .. ':' .. hour_start
  return tokens, hour_key, tonumber(redis.call('GET', hour_key) or '0')
end
local k_tokens, k_hour, k_used = load(KEYS[1], KEYS[2])
local t_tokens, t_hour, t_used = load(KEYS[6], KEYS[7])
local allowed = 0
if k_tokens >= 1 and t_tokens >= 1 and k_used < hour_limit and t_used < hour_limit then
  k_tokens = k_tokens - 1
  t_tokens = t_tokens - 1
  k_used = redis.call('INCR', k_hour)
  if k_used == 1 then redis.call('PEXPIRE', k_hour, 3660000) end
  t_used = redis.call('INCR', t_hour)
  if t_used == 1 then redis.call('PEXPIRE', t_hour, 3660000) end
  allowed = 1
end
redis.call('HSET', KEYS[1], 't', tostring(k_tokens), 'ts', now, 'c', capacity)
redis.call('PEXPIRE', KEYS[1], math.ceil((capacity - k_tokens) / rate) + 60000)
redis.call('HSET', KEYS[6], 't', tostring(t_tokens), 'ts', now, 'c', capacity)
redis.call('PEXPIRE', KEYS[6], math.ceil((capacity - t_tokens) / rate) + 60000)
if ARGV[5] ~= '' then
  local minute = math.floor(now / 60000) * 60
  redis.call('HINCRBY', KEYS[3], 'r:' .. minute, 1)
  if allowed == 0 then redis.call('HINCRBY', KEYS[3], 'e:' .. minute, 1) end
  redis.call('HSET', KEYS[3], 'last', tostring(now / 1000))
  redis.call('SADD', KEYS[4], ARGV[5])
end
return {allowed, tostring(math.min(k_tokens, t_tokens)), math.max(k_used, t_used), now}
"""


def _decision(
    limits: PlanLimits, allowed: bool, tokens: float, used: int, now_ms: int
) -> RateDecision:
    rate = limits.per_minute / 60_000
    hour_reset = 3_600_000 - now_ms % 3_600_000
    if allowed:
        retry = 0
    elif used >= limits.per_hour:
        retry = hour_reset
    else:
        retry = math.ceil((1 - tokens) / rate)
    return RateDecision(
        allowed=allowed,
        minute_limit=limits.per_minute,
        minute_remaining=max(0, math.floor(tokens)),
        minute_reset_ms=math.ceil((limits.per_minute - tokens) / rate),
        hour_limit=limits.per_hour,
        hour_remaining=max(0, limits.per_hour - used),
        hour_reset_ms=hour_reset,
        retry_after_ms=retry,
        now_ms=now_ms,
    )


class RedisLimiter:
    def __init__(self, redis: aioredis.Redis, namespace: str) -> None:
        self._redis = redis
        self._ns = namespace
        self._script = redis.register_script(_SCRIPT)

    async def hit(
        self,
        subject: str,
        limits: PlanLimits,
        *,
        tenant_id: str,
        usage_key_id: str | None = None,
        session_id: str | None = None,
        now_ms: int | None = None,
    ) -> RateDecision:
        ns = self._ns
        keys = [
            f"{ns}:rl:m:{subject}",
            f"{ns}:rl:h:{subject}",
            f"{ns}:usage:{usage_key_id or '-'}",
            f"{ns}:usage:dirty",
            f"{ns}:auth:revoked_sid:{session_id or '-'}",
            f"{ns}:rl:m:tenant:{tenant_id}",
            f"{ns}:rl:h:tenant:{tenant_id}",
        ]
        args: list[str | int] = [
            limits.per_minute,
            repr(limits.per_minute / 60_000),
            limits.per_hour,
            "" if now_ms is None else now_ms,
            usage_key_id or "",
            "1" if session_id else "",
        ]
        allowed, tokens, used, now = await self._script(keys=keys, args=args)
        if int(allowed) == -1:
            return RateDecision(False, 0, 0, 0, 0, 0, 0, 0, 0, session_revoked=True)
        return _decision(limits, int(allowed) == 1, float(tokens), int(used), int(now))


class LocalLimiter:
    """The same two policies in process memory: used while Redis is unreachable, so each
    replica enforces the plan on its own share of the traffic."""

    def __init__(self, max_subjects: int = 100_000) -> None:
        self._buckets: OrderedDict[str, tuple[float, int, int]] = OrderedDict()
        self._hours: dict[str, tuple[int, int]] = {}
        self._max = max_subjects

    def _load(self, subject: str, limits: PlanLimits, now: int) -> tuple[float, int, int]:
        rate = limits.per_minute / 60_000
        tokens, ts, capacity = self._buckets.get(subject, (float(limits.per_minute), now, 0))
        if capacity and limits.per_minute > capacity:
            tokens += limits.per_minute - capacity
        tokens = min(float(limits.per_minute), tokens + max(0, now - ts) * rate)
        hour = now - now % 3_600_000
        window, used = self._hours.get(subject, (hour, 0))
        return tokens, hour, used if window == hour else 0

    def _save(
        self, subject: str, limits: PlanLimits, state: tuple[float, int, int], now: int
    ) -> None:
        tokens, hour, used = state
        self._buckets[subject] = (tokens, now, limits.per_minute)
        self._buckets.move_to_end(subject)
        self._hours[subject] = (hour, used)
        if len(self._buckets) > self._max:
            old, _ = self._buckets.popitem(last=False)
            self._hours.pop(old, None)

    def hit(
        self, subject: str, limits: PlanLimits, *, tenant_id: str, now_ms: int | None = None
    ) -> RateDecision:
        now = now_ms if now_ms is not None else int(time.time() * 1000)
        own = self._load(subject, limits, now)
        tenant_subject = f"tenant:{tenant_id}"
        tenant = self._load(tenant_subject, limits, now)
        allowed = all(t >= 1 and u < limits.per_hour for t, _, u in (own, tenant))
        if allowed:
            own = (own[0] - 1, own[1], own[2] + 1)
            tenant = (tenant[0] - 1, tenant[1], tenant[2] + 1)
        self._save(subject, limits, own, now)
        self._save(tenant_subject, limits, tenant, now)
        return _decision(limits, allowed, min(own[0], tenant[0]), max(own[2], tenant[2]), now)


def rate_limit_headers(d: RateDecision) -> dict[str, str]:
    """DESIGN.md §4 / seed 004 headers for the binding policy (the one with the fewest
    requests left), the IETF `RateLimit` / `RateLimit-Policy` fields for both policies,
    and `Retry-After` when refused."""
    minute = ("minute", d.minute_limit, d.minute_remaining, d.minute_reset_ms, 60)
    hour = ("hour", d.hour_limit, d.hour_remaining, d.hour_reset_ms, 3600)
    binding = hour if d.hour_remaining < d.minute_remaining else minute
    if not d.allowed and d.hour_remaining == 0:
        binding = hour
    name, limit, remaining, reset_ms, _ = binding
    reset_s = max(1, math.ceil(reset_ms / 1000)) if remaining < limit else 0
    headers = {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(math.ceil((d.now_ms + reset_ms) / 1000)),
        "RateLimit-Policy": ", ".join(f'"{n}";q={q};w={w}' for n, q, _, _, w in (minute, hour)),
        "RateLimit": f'"{name}";r={remaining};t={reset_s}',
    }
    if not d.allowed:
        headers["Retry-After"] = str(max(1, math.ceil(d.retry_after_ms / 1000)))
    return headers
