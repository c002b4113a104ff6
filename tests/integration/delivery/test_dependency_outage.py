"""The send pipeline as deployed (`python -m services.delivery api|relay|worker`) outlives a
Redis restart (the provider token buckets and circuits live there): bulk sends accepted
before, during and after the outage are all sent, none left `queued` (what `make chaos`
asked after its Redis restart). Redis is a private `redis-server` of this test, never the
shared one."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from scripts.chaos.instances import Redis
from tests.conftest import free_port, service_dsn
from tests.fakes.dns_server import FakeDns
from tests.integration.delivery import test_worker_kill as pipeline
from tests.integration.delivery.conftest import Harness


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Redis]:
    """A redis-server of this test alone (the chaos drill's: an append-only file and an
    aclfile, as production's keep their data), stopped and started at will."""
    r = Redis(tmp_path, free_port())
    r.start()
    yield r
    r.stop()


async def test_bulk_sends_around_a_redis_restart_are_all_sent(
    processes: Any,
    reset_fakes: dict[str, Any],
    creds_path: str,
    vault_dev: Any,
    unique: str,
    fake_dns: FakeDns,
    private_redis: Redis,
) -> None:
    tenant = f"t_{unique}"
    env = {
        **pipeline._env(reset_fakes, creds_path, vault_dev, fake_dns),
        "PM_REDIS_URL": private_redis.url,
        # Rate limited through Redis, as every real provider is.
        "PM_PROVIDER_LIMITS": json.dumps({"mailgun": [1000.0, 1000.0]}),
    }
    api, _relay, worker = await pipeline._start_pipeline(
        processes, env, reset_fakes, creds_path, vault_dev, tenant, fake_dns
    )
    batches: list[str] = []

    async def bulk(tag: str) -> None:
        recipients = [{"email": f"{tag}x{i}.{unique}@example.com"} for i in range(5)]
        batches.append(await pipeline._post_bulk(api.url, tenant, recipients, 5))

    await bulk("before")
    private_redis.stop()
    for i in range(4):  # the worker claims these while Redis is down
        await bulk(f"during{i}")
        await asyncio.sleep(1)
    private_redis.start()
    await bulk("after")

    conn = await asyncpg.connect(service_dsn("delivery"))
    try:
        while True:  # bounded by the test timeout; the worker must finish every message
            rows = await conn.fetch(
                "SELECT to_email, status, last_error FROM delivery.messages"
                " WHERE batch_id = ANY($1::text[])",
                batches,
            )
            if all(r["status"] == "sent" for r in rows):
                break
            assert worker.proc.poll() is None, worker.logs()
            await asyncio.sleep(0.5)
    finally:
        await conn.close()
    assert len(rows) == 30
    ours = {r["to_email"] for r in rows}
    sent_to = Counter(
        x for req in reset_fakes["mailgun"].requests() for x in req.recipients if x in ours
    )
    assert sent_to == Counter(ours)  # each exactly once (the fake also logs other tenants')


# The workers' path (express lane off): `dispatch` claims the single send itself.
@pytest.mark.parametrize(
    "harness", [{"retry_base_seconds": 2.0, "express_max_recipients": 0}], indirect=True
)
async def test_claims_during_a_redis_outage_cost_no_attempt_and_retry_soon(
    harness: Harness,
) -> None:
    """Every claim while Redis is down fails before the provider is called. That is our
    outage, not a provider failure: no attempt counted (the provider backoff doubled with
    each claim, and a message waited up to `retry_max_seconds` after a 5 s Redis restart),
    the next try within `dependency_retry_seconds` (jittered), and it is sent once Redis is
    back."""
    h = harness
    mid = await h.send(to="outage@example.com", category="transactional")
    live = h.service.redis
    # Nothing listens on this port: Redis is down for this worker alone.
    h.service.redis = aioredis.from_url(
        f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1.0
    )
    due = "UPDATE messages SET next_attempt_at = now() WHERE id = $1"
    try:
        for _ in range(4):  # four work items find Redis down (each once the retry is due)
            await h.service.pool.execute(due, mid)
            await h.service.dispatch([mid])
    finally:
        await h.service.redis.aclose()
        h.service.redis = live
    row = await h.service.pool.fetchrow(
        "SELECT status, attempts, last_error,"
        " extract(epoch FROM next_attempt_at - updated_at) AS wait FROM messages WHERE id = $1",
        mid,
    )
    assert row["status"] == "queued", dict(row)
    assert row["last_error"] == "internal: ConnectionError", dict(row)
    assert row["attempts"] == 0, dict(row)
    assert row["wait"] <= h.service.settings.dependency_retry_seconds * 1.5, dict(row)
    await h.service.pool.execute(due, mid)
    await h.service.dispatch([mid])
    assert await h.service.pool.fetchval("SELECT status FROM messages WHERE id = $1", mid) == (
        "sent"
    )
