"""Rate limits through the gateway: the per-minute bucket and its headers, plan upgrades
without restart, and serving on with local buckets when Redis is unreachable."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
import redis.asyncio as aioredis

from services.gateway.ratelimit import PLAN_LIMITS, RedisLimiter
from tests.conftest import REPO, free_port
from tests.integration.keys.platform_stack import (
    NAMESPACE,
    Platform,
    bearer,
    create_key,
    gateway_env,
    metrics_url,
    signup,
    start,
)


async def _burst(client: httpx.AsyncClient, url: str, key: str, n: int) -> list[httpx.Response]:
    return list(await asyncio.gather(*(client.get(url, headers=bearer(key)) for _ in range(n))))


async def test_lua_bucket_refuses_the_61st_request_in_a_minute(redis_url: str, unique: str) -> None:
    """The Redis script with an explicit clock: exact counts, no timing in the test."""
    redis = aioredis.from_url(redis_url)
    limiter = RedisLimiter(redis, f"{NAMESPACE}:{unique}")
    starter = PLAN_LIMITS["starter"]
    now = 1_700_000_000_000
    try:
        decisions = [await limiter.hit("k", starter, tenant_id="t", now_ms=now) for _ in range(61)]
        assert [d.allowed for d in decisions] == [True] * 60 + [False]
        assert decisions[59].minute_remaining == 0
        assert decisions[60].retry_after_ms == 1000
        assert not (await limiter.hit("k", starter, tenant_id="t", now_ms=now + 999)).allowed
        assert (await limiter.hit("k", starter, tenant_id="t", now_ms=now + 1000)).allowed
        # An upgrade grants the larger burst at once.
        pro = PLAN_LIMITS["pro"]
        upgraded = [
            await limiter.hit("k", pro, tenant_id="t", now_ms=now + 1000) for _ in range(240)
        ]
        assert all(d.allowed for d in upgraded)
        assert upgraded[-1].minute_limit == 300
    finally:
        await redis.aclose()


async def test_hourly_quota_is_the_second_policy(redis_url: str, unique: str) -> None:
    from services.gateway.ratelimit import PlanLimits

    redis = aioredis.from_url(redis_url)
    limiter = RedisLimiter(redis, f"{NAMESPACE}:{unique}")
    tiny = PlanLimits(per_minute=100, per_hour=3)
    now = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000 + 600_000  # 10 min into an hour
    try:
        results = [await limiter.hit("k", tiny, tenant_id="t", now_ms=now) for _ in range(4)]
        assert [d.allowed for d in results] == [True, True, True, False]
        assert results[3].retry_after_ms == 3_000_000  # until the hour ends
        assert (await limiter.hit("k", tiny, tenant_id="t", now_ms=now + 3_000_000)).allowed
    finally:
        await redis.aclose()


async def test_61st_request_gets_429_with_headers(platform: Platform, unique: str) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, platform.gw, unique)
        key = (await create_key(client, platform.gw, owner["access_token"], ["manage_contacts"]))[
            "key"
        ]
        url = f"{platform.gw}/api/v1/contacts"
        first = await client.get(url, headers=bearer(key))  # verifies and caches the key
        started = time.monotonic()
        burst = await _burst(client, url, key, 70)
        elapsed = time.monotonic() - started
    # The tenant's bucket also paid for the owner's key creation: 58 left, not the key's 59.
    assert first.headers["X-RateLimit-Remaining"] == "58"
    assert first.headers["RateLimit-Policy"] == '"minute";q=60;w=60, "hour";q=10000;w=3600'
    ok = [r for r in burst if r.status_code == 200]
    limited = [r for r in burst if r.status_code == 429]
    assert len(ok) + len(limited) == 70, [r.text for r in burst if r.status_code not in (200, 429)]
    # 58 tokens were left; the bucket refills one per second while the burst runs.
    assert 58 <= len(ok) <= 58 + int(elapsed) + 1, (len(ok), elapsed)
    refused = limited[0]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.headers["X-RateLimit-Limit"] == "60"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert int(refused.headers["X-RateLimit-Reset"]) >= int(time.time())
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit"].startswith('"minute";r=0;t=')


async def test_plan_change_lifts_the_limit_without_restart(platform: Platform, unique: str) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, platform.gw, unique)
        tenant = owner["tenant"]["id"]
        key = (await create_key(client, platform.gw, owner["access_token"], ["manage_contacts"]))[
            "key"
        ]
        url = f"{platform.gw}/api/v1/contacts"
        burst = await _burst(client, url, key, 70)
        assert any(r.status_code == 429 for r in burst)
        # The admin command publishes tenant.plan_changed through the keys outbox, as
        # billing will after a checkout.
        done = subprocess.run(
            [sys.executable, "-m", "services.keys", "change-plan", tenant, "pro"],
            env=platform.keys_env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            resp = await client.get(url, headers=bearer(key))
            if resp.headers.get("X-RateLimit-Limit") == "300":
                break
            await asyncio.sleep(0.1)
        assert resp.headers["X-RateLimit-Limit"] == "300", "plan change never reached the gateway"
        after = await _burst(client, url, key, 150)
        # On starter at most a couple would pass; the pro burst admits them all.
        assert [r.status_code for r in after] == [200] * 150
        other = await client.get(f"{platform.gateways[1].url}/api/v1/contacts", headers=bearer(key))
        assert other.headers["X-RateLimit-Limit"] == "300"


async def test_gateway_serves_with_local_buckets_when_redis_is_unreachable(
    platform: Platform, unique: str
) -> None:
    env = gateway_env(
        platform.amqp_url,
        platform.keys.url,
        platform.echo_url,
        PM_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    gw = start("gateway", "api", env)
    try:
        gw.wait_ready(60)
        async with httpx.AsyncClient(timeout=20) as client:
            owner = await signup(client, gw.url, unique)
            # Dashboard sessions fail closed without Redis (a logout could not be seen) ...
            session = await client.get(
                f"{gw.url}/api/v1/platform/api-keys", headers=bearer(owner["access_token"])
            )
            assert session.status_code == 503, session.text
            assert session.headers["Retry-After"] == "1"
            # ... API keys keep working (the key is made through a gateway that has Redis).
            key = (
                await create_key(client, platform.gw, owner["access_token"], ["manage_contacts"])
            )["key"]
            url = f"{gw.url}/api/v1/contacts"
            idem = await client.post(
                url, headers={**bearer(key), "Idempotency-Key": unique}, json={}
            )
            burst = await _burst(client, url, key, 70)
            metrics = (await client.get(metrics_url(gw.url))).text
        statuses = [r.status_code for r in burst]
        assert 500 not in statuses and 503 not in statuses
        assert (
            statuses.count(200) >= 57
        )  # the tenant bucket also paid for key creation and the POST
        assert 429 in statuses  # the local bucket still enforces the plan
        assert burst[0].headers["X-RateLimit-Limit"] == "60"
        assert idem.status_code == 503  # idempotency cannot be guaranteed without Redis
        assert 'pm_gateway_redis_fallback_total{component="rate_limit"}' in metrics
        assert 'pm_gateway_rate_limit_total{backend="local",outcome="allowed"}' in metrics
        assert "redis unreachable: serving with local fallbacks" in gw.log_path.read_text()
    finally:
        gw.close()


async def test_the_tenant_bucket_is_shared_by_all_its_keys(redis_url: str, unique: str) -> None:
    redis = aioredis.from_url(redis_url)
    limiter = RedisLimiter(redis, f"{NAMESPACE}:{unique}")
    free = PLAN_LIMITS["free"]
    now = 1_700_000_000_000
    try:
        spent = [await limiter.hit("key:a", free, tenant_id="t1", now_ms=now) for _ in range(20)]
        assert all(d.allowed for d in spent)
        refused = await limiter.hit("key:b", free, tenant_id="t1", now_ms=now)
        assert not refused.allowed and refused.minute_remaining == 0
        assert (await limiter.hit("key:b", free, tenant_id="t2", now_ms=now)).allowed
    finally:
        await redis.aclose()


async def test_a_second_key_does_not_double_the_tenants_limit(
    platform: Platform, unique: str
) -> None:
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, platform.gw, unique)
        tenant = owner["tenant"]["id"]
        done = subprocess.run(
            [sys.executable, "-m", "services.keys", "set-plan", tenant, "free"],
            env=platform.keys_env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        keys = [
            (await create_key(client, platform.gw, owner["access_token"], ["manage_contacts"]))[
                "key"
            ]
            for _ in range(2)
        ]
        url = f"{platform.gw}/api/v1/contacts"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            probe = await client.get(url, headers=bearer(keys[0]))
            if probe.headers.get("X-RateLimit-Limit") == "20":
                break
            await asyncio.sleep(0.2)
        assert probe.headers["X-RateLimit-Limit"] == "20", probe.headers
        both = await _burst(client, url, keys[0], 15) + await _burst(client, url, keys[1], 15)
    passed = sum(r.status_code == 200 for r in both)
    # 20 per minute for the tenant (the probes above spent some; the bucket refills 1 per 3s).
    assert passed < 25, passed
