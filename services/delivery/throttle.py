"""Limits shared by every delivery worker through Redis: provider token buckets, circuit
breakers, and per-mailbox/domain daily caps. Each decision is one atomic Lua script, so
workers on many hosts never overspend a provider's rate or a mailbox's cap.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import redis.asyncio as aioredis

# Tokens refill continuously at `rate`/s up to `burst`; taking `n` either succeeds now or
# answers how long until `n` are there (the caller sleeps, nothing is reserved meanwhile).
_BUCKET_LUA = """
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(s[1]) or burst
local ts = tonumber(s[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
if tokens >= n then
  redis.call('HSET', KEYS[1], 'tokens', tokens - n, 'ts', now)
  redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
  return '0'
end
return tostring((n - tokens) / rate)
"""

# Consecutive failures open the circuit for `open_ms`; afterwards one probe is let through
# (half-open): its success closes the circuit, its failure opens it again.
_CIRCUIT_ALLOW = """
local open_until = tonumber(redis.call('GET', KEYS[1]) or '0')
if open_until == 0 then return 1 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < open_until then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 2 end
return 0
"""
_CIRCUIT_FAILURE = """
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local probing = redis.call('DEL', KEYS[3])
if n >= tonumber(ARGV[1]) or probing == 1 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('SET', KEYS[2], tostring(now + tonumber(ARGV[2])), 'PX', ARGV[3])
  return 1
end
return 0
"""
# Take `n` of today's cap if all fit; answers how many were taken (0 or n).
_DAILY_CAP = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local n, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
if used + n > cap then return 0 end
redis.call('INCRBY', KEYS[1], n)
redis.call('EXPIRE', KEYS[1], 172800)
return n
"""

PREFIX = "pm:delivery"


class TokenBucket:
    """A provider's rate limit (rate/s, burst), shared by all workers."""

    def __init__(self, redis: aioredis.Redis, name: str, rate: float, burst: float) -> None:
        self.redis = redis
        self.key = f"{PREFIX}:rate:{name}"
        self.rate = rate
        self.burst = burst
        self._script = redis.register_script(_BUCKET_LUA)

    async def take(self, n: int) -> float:
        """0 when `n` tokens were taken, else the seconds to wait before asking again."""
        n = min(n, int(self.burst))
        return float(await self._script(keys=[self.key], args=[self.rate, self.burst, n]))

    async def acquire(self, n: int) -> None:
        """Wait until `n` tokens (at most `burst` at once) were taken."""
        while True:
            wait = await self.take(n)
            if wait <= 0:
                return
            await asyncio.sleep(wait)


class CircuitBreaker:
    """Per provider (and credential owner): closed, open, half-open; state in Redis."""

    def __init__(
        self, redis: aioredis.Redis, name: str, threshold: int, open_seconds: float
    ) -> None:
        base = f"{PREFIX}:circuit:{name}"
        self.keys = (f"{base}:failures", f"{base}:open_until", f"{base}:probe")
        self.threshold = threshold
        self.open_ms = int(open_seconds * 1000)
        self.redis = redis
        self._allow = redis.register_script(_CIRCUIT_ALLOW)
        self._failure = redis.register_script(_CIRCUIT_FAILURE)

    async def allow(self) -> bool:
        """True when closed, or when this caller is the half-open probe."""
        return bool(await self._allow(keys=[self.keys[1], self.keys[2]], args=[self.open_ms]))

    async def is_open(self) -> bool:
        raw = await self.redis.get(self.keys[1])
        if raw is None:
            return False
        now_ms = datetime.now(UTC).timestamp() * 1000
        return now_ms < float(raw)

    async def record_failure(self) -> bool:
        """Count a failure; True when it opened the circuit."""
        window = max(self.open_ms * 10, 600_000)
        opened = await self._failure(
            keys=list(self.keys), args=[self.threshold, self.open_ms, window]
        )
        return bool(opened)

    async def record_success(self) -> None:
        await self.redis.delete(*self.keys)


class DailyCaps:
    """Per-mailbox / per-domain daily sending caps (UTC days)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._script = redis.register_script(_DAILY_CAP)

    async def take(self, tenant_id: str, scope: str, value: str, n: int, cap: int) -> bool:
        day = datetime.now(UTC).strftime("%Y%m%d")
        key = f"{PREFIX}:cap:{tenant_id}:{scope}:{value}:{day}"
        return bool(await self._script(keys=[key], args=[n, cap]))

    async def give_back(self, tenant_id: str, scope: str, value: str, n: int) -> None:
        day = datetime.now(UTC).strftime("%Y%m%d")
        await self.redis.decrby(f"{PREFIX}:cap:{tenant_id}:{scope}:{value}:{day}", n)
