"""Memory under steady load: does any process grow? RSS of each process after 1 minute and at
the end (10 minutes by default) of a constant load, compared.

Processes (real, as `make up` runs them): keys api + gateway in front of an upstream built
like every service (bench/gateway.py's), and a webhooks worker, stream consumer and relay
fanning events out to 3 local receivers and into the event stream. Load:
`BENCH_SOAK_CONCURRENCY` clients through the gateway without pause (rotating over several API
keys), and `BENCH_SOAK_RATE` events/s committed to the webhooks outbox (each delivered to 3
endpoints and appended to the event stream).

Target (issue 21): no process grows: RSS at the end <= 1.1x RSS at 1 minute (allocator
warm-up and caches fill in the first minute; a leak keeps growing after it).

Run: `make soak` (not part of `make bench`: it lasts `BENCH_SOAK_MINUTES` minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from typing import Any

import httpx

from bench.gateway import SIGNING_KEY
from bench.harness import (
    REPO,
    VAULT_ADDR,
    VAULT_TOKEN_FILE,
    free_port,
    fresh_database,
    fresh_vhost,
    gateway_stack,
    rss_mib,
    service_dsn,
    spawn,
    stop,
    wait_ready,
)
from libs.common import outbox
from libs.common.db import create_pool
from libs.common.events import EmailOpened, make_event
from libs.common.vault import Vault, make_client
from services.webhooks import repository as repo
from services.webhooks.secret_store import SecretStore
from services.webhooks.signatures import generate_secret
from tests.fakes.webhook_receiver import WebhookReceiver

MINUTES = float(os.environ.get("BENCH_SOAK_MINUTES", "10"))
FIRST = float(os.environ.get("BENCH_SOAK_FIRST_MINUTES", "1"))
CONCURRENCY = int(os.environ.get("BENCH_SOAK_CONCURRENCY", "4"))
RATE = int(os.environ.get("BENCH_SOAK_RATE", "50"))  # events/s
GROWTH_TARGET = 1.1


async def _http_load(url: str, keys: list[str], until: float, counts: dict[str, int]) -> None:
    async with httpx.AsyncClient(timeout=30) as client:

        async def worker(w: int) -> None:
            i = w
            while time.monotonic() < until:
                auth = {"Authorization": f"Bearer {keys[i % len(keys)]}"}
                try:
                    resp = await client.get(url, headers=auth)
                except httpx.HTTPError:
                    counts["errors"] += 1  # counted, not fatal: memory is what is measured
                else:
                    counts["ok" if resp.status_code == 200 else "errors"] += 1
                i += CONCURRENCY

        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))


async def _event_load(pool: Any, until: float, counts: dict[str, int]) -> None:
    tick = 0
    started = time.monotonic()
    while time.monotonic() < until:
        async with pool.acquire() as conn, conn.transaction():
            await outbox.enqueue(
                conn,
                *(
                    make_event(
                        EmailOpened(message_id=f"em_{tick}_{i}", to="u@example.com"),
                        tenant_id="t_soak",
                        source="/bench",
                    )
                    for i in range(max(1, RATE // 10))
                ),
            )
        counts["events"] += max(1, RATE // 10)
        tick += 1
        await asyncio.sleep(max(0.0, started + tick / 10 - time.monotonic()))


async def main() -> None:
    await fresh_database("keys", "webhooks")
    amqp_url = fresh_vhost()
    token = os.environ.get("PM_BENCH_VAULT_TOKEN") or VAULT_TOKEN_FILE.read_text().strip()
    wh_pool = await create_pool(service_dsn("webhooks"), "webhooks", min_size=1, max_size=2)
    secrets = SecretStore(Vault(make_client(VAULT_ADDR, token=token)))
    receivers = [WebhookReceiver(record=False).start() for _ in range(3)]
    for i, rx in enumerate(receivers):
        await secrets.create(f"ep_soak_{i}", generate_secret())
        async with wh_pool.acquire() as conn:
            await repo.insert_endpoint(
                conn,
                {"id": f"ep_soak_{i}", "tenant_id": "t_soak", "mode": "live", "url": rx.url,
                 "description": None, "event_types": ["email.*"], "filter_campaign_ids": [],
                 "filter_contact_tags": [], "enabled": True, "retry_schedule_ms": None,
                 "payload_version": "2026-12-01"},
            )  # fmt: skip
    common = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    common["PYTHONPATH"] = str(REPO)
    wh_env = {
        **common,
        "PM_DATABASE_URL": service_dsn("webhooks"), "PM_AMQP_URL": amqp_url,
        "PM_VAULT_ADDR": VAULT_ADDR, "PM_VAULT_TOKEN": token, "PM_WEBHOOKS_ALLOW_HTTP": "true",
        "PM_WEBHOOKS_ALLOWED_NETWORKS": '["127.0.0.0/8"]', "PM_LOG_LEVEL": "WARNING",
        "PM_DB_POOL_MAX": "4",
    }  # fmt: skip
    up_port = free_port()
    up_url = f"http://127.0.0.1:{up_port}"
    procs = {
        "upstream": spawn(
            ["-m", "bench.gateway", "upstream", str(up_port)],
            {**common, "PM_LOG_LEVEL": "WARNING", "BENCH_GATEWAY_PRIVATE_KEY": SIGNING_KEY},
            "soak-upstream",
        ),
        **{
            f"webhooks {name}": spawn(
                ["-m", "services.webhooks", name],
                {**wh_env, "PM_HTTP_PORT": str(port)},
                f"soak-webhooks-{name}",
            )
            for name, port in (
                ("worker", free_port()),
                ("stream", free_port()),
                ("relay", free_port()),
            )
        },
    }
    counts = {"ok": 0, "errors": 0, "events": 0}
    try:
        wait_ready(up_url, "/healthz")
        async with gateway_stack(
            keys_dsn=service_dsn("keys"),
            amqp_url=amqp_url,
            signing_key=SIGNING_KEY,
            upstreams={"campaigns": up_url},
            scopes=["manage_contacts"],
            key_count=4,
        ) as gateway:
            pids = {name: p.pid for name, p in procs.items()} | gateway.pids
            # Each key verified once before the clock starts (bcrypt via keys and Vault: seconds
            # on a loaded machine); the soak measures the steady state, not cold keys.
            route = gateway.url + "/api/v1/contacts/ct_1"
            async with httpx.AsyncClient(timeout=60) as client:
                for key in gateway.api_keys:
                    for _ in range(10):
                        with contextlib.suppress(httpx.HTTPError):
                            auth = {"Authorization": f"Bearer {key}"}
                            if (await client.get(route, headers=auth)).status_code == 200:
                                break
            started = time.monotonic()
            until = started + MINUTES * 60
            load = asyncio.gather(
                _http_load(route, gateway.api_keys, until, counts),
                _event_load(wh_pool, until, counts),
            )
            load_task = asyncio.ensure_future(load)
            await asyncio.sleep(FIRST * 60)
            first = {name: rss_mib(pid)[0] for name, pid in pids.items()}
            await load_task
            last = {name: rss_mib(pid)[0] for name, pid in pids.items()}
            peak = {name: rss_mib(pid)[1] for name, pid in pids.items()}
    finally:
        stop(list(procs.values()))
        for rx in receivers:
            rx.stop()
        await wh_pool.close()

    print(
        f"bench/soak.py  {MINUTES:g} min of steady load: {CONCURRENCY} clients through the"
        f" gateway ({counts['ok']} requests, {counts['errors']} errors), {RATE} events/s"
        f" into webhooks ({counts['events']} events x 3 endpoints);"
        f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    worst = 0.0
    for name in first:
        growth = last[name] / first[name] if first[name] else float("nan")
        worst = max(worst, growth)
        print(
            f"  {name:<16} RSS at {FIRST:g} min {first[name]:6.0f} MiB, at {MINUTES:g} min"
            f" {last[name]:6.0f} MiB ({growth:.2f}x), peak {peak[name]:6.0f} MiB"
        )
    status = "OK" if worst <= GROWTH_TARGET else "ABOVE TARGET"
    print(f"  largest growth {worst:.2f}x (target <= {GROWTH_TARGET}x) {status}")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
