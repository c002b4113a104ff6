"""Event stream latency: event committed -> delivered on an open stream, against the webhooks
engine's latency for the same events in the same run.

Setup: real `python -m services.webhooks api|worker|stream|relay` on a database and vhost of
their own. 100 tenants (BENCH_STREAM_TENANTS) each hold one open `GET /api/v1/events/stream`
(signed principals as the gateway forwards them; the gateway's relay adds one hop, measured
by bench/gateway.py). 10 of them also have a webhook endpoint on a local receiver.
Load: 10 `email.opened` per second per tenant (1,000/s in all) committed into the webhooks
outbox, as any service publishes a fact: by default every 10 ms one transaction commits the
events of 10 of the tenants (BENCH_STREAM_GROUPS=10: tenants commit independently of each
other); BENCH_STREAM_GROUPS=1 commits every tenant's event in one transaction every 100 ms, a
burst of 100 that each stage works through in turn (what the bench did before). The relay
publishes, the stream consumer (the `stream` process) stores and notifies, the API pushes it;
the worker fans the same events out to webhook endpoints.

Latency = arrival at the reader (or the receiver) - the event's `created` (stamped just
before the commit). Printed: stream p50/p99 (target p99 <= 100 ms), webhook p50/p99 for the
events of the tenants with an endpoint, and the ratio stream / webhooks.
Throughput: the rate events were committed (offered, 1,000/s), published by the relay and
stored in `stream_events` (count over the span from first to last), and stored / offered
(1.00 when the stream keeps up; below when the pipeline falls behind) and stored / published
(the stream consumer's share: 1.00 when it keeps up with the relay).

Every process runs at the bench's own CPU priority (BENCH_STREAM_PROCESS_NICE, default 0: the
bench's readers and producer stand in for other hosts); empty: each kind's niceness as
deployed (the relay and both consumers at +10, docs/scheduling.md "CPU priority").

Run: `uv run python -m bench.events_stream` (needs the OpenBao dev server of `make infra`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from datetime import datetime

import httpx
import orjson

from bench.harness import (
    REPO,
    VAULT_ADDR,
    VAULT_TOKEN_FILE,
    cpu_seconds,
    free_port,
    fresh_database,
    fresh_vhost,
    memory_line,
    peak_rss,
    percentile,
    service_dsn,
    spawn,
    stop,
    summary,
    wait_ready,
)
from libs.common import outbox
from libs.common.db import create_pool
from libs.common.events import EmailOpened, make_event
from libs.common.principal import Principal, sign_principal
from libs.common.signing_keys import generate_private_key, public_keys_of
from libs.common.vault import Vault, make_client
from services.webhooks import repository as repo
from services.webhooks.secret_store import SecretStore
from services.webhooks.signatures import generate_secret
from tests.fakes.webhook_receiver import WebhookReceiver

TENANTS = int(os.environ.get("BENCH_STREAM_TENANTS", "100"))
WITH_WEBHOOK = int(os.environ.get("BENCH_STREAM_WEBHOOK_TENANTS", "10"))
RATE = int(os.environ.get("BENCH_STREAM_RATE", "10"))  # events/s per tenant
SECONDS = float(os.environ.get("BENCH_STREAM_SECONDS", "20"))
WARMUP = float(os.environ.get("BENCH_STREAM_WARMUP_SECONDS", "3"))
# Commits per 1/RATE s, each with its share of the tenants' events: independent tenants commit
# independently (10: every 10 ms, 10 tenants' events); 1: all in one transaction, a burst of
# TENANTS events that every stage then works through one after the other.
GROUPS = int(os.environ.get("BENCH_STREAM_GROUPS", "10"))
NICE = os.environ.get("BENCH_STREAM_PROCESS_NICE", "0")
DUMP = os.environ.get("BENCH_STREAM_DUMP", "")  # a file for every event's stamps (JSON)
SIGNING_KEY = generate_private_key()  # the bench's own Ed25519 principal key


def _created(payload: bytes) -> float:
    return datetime.fromisoformat(orjson.loads(payload)["created"]).timestamp()


def _id(payload: bytes) -> str:
    return str(orjson.loads(payload)["id"])


def _rate(stamps: list[float]) -> float:
    """Events per second over the span from the first stamp to the last (statement times:
    a batch shares one, so the span is that of the batches)."""
    if len(stamps) < 2 or max(stamps) <= min(stamps):
        return 0.0
    return len(stamps) / (max(stamps) - min(stamps))


async def _reader(
    client: httpx.AsyncClient,
    url: str,
    tenant: str,
    out: list[tuple[float, float, str]],
    ready: asyncio.Event,
) -> None:
    principal = Principal(tenant_id=tenant, subject_type="api_key", subject_id="key_bench",
                          scopes=["read_analytics"], plan="enterprise", mode="live")  # fmt: skip
    # Principals are short-lived per request; the stream is one request.
    token = sign_principal(
        principal,
        SIGNING_KEY,
        3600,
        audience="webhooks",
        method="GET",
        path="/api/v1/events/stream",
    )
    headers = {"X-PM-Principal": token}
    async with client.stream(
        "GET", f"{url}/api/v1/events/stream", headers=headers, timeout=httpx.Timeout(10, read=120)
    ) as resp:
        resp.raise_for_status()
        ready.set()
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                data = line[6:].encode()
                out.append((time.time(), _created(data), _id(data)))


async def main() -> None:
    await fresh_database("webhooks")
    amqp_url = fresh_vhost()
    token = os.environ.get("PM_BENCH_VAULT_TOKEN") or VAULT_TOKEN_FILE.read_text().strip()
    pool = await create_pool(service_dsn("webhooks"), "webhooks", min_size=1, max_size=4)
    secrets = SecretStore(Vault(make_client(VAULT_ADDR, token=token)))
    tenants = [f"t_bench_{i}" for i in range(TENANTS)]
    receiver = WebhookReceiver().start()
    for tenant in tenants[:WITH_WEBHOOK]:
        ep_id = f"ep_{tenant}"
        await secrets.create(ep_id, generate_secret())
        async with pool.acquire() as conn:
            await repo.insert_endpoint(
                conn,
                {"id": ep_id, "tenant_id": tenant, "mode": "live", "url": receiver.url,
                 "description": None, "event_types": ["email.*"], "filter_campaign_ids": [],
                 "filter_contact_tags": [], "enabled": True, "retry_schedule_ms": None,
                 "payload_version": "2026-12-01"},
            )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    env.update(
        **({"PM_PROCESS_NICE": NICE} if NICE else {}),
        PM_DATABASE_URL=service_dsn("webhooks"), PM_AMQP_URL=amqp_url, PM_VAULT_ADDR=VAULT_ADDR,
        PM_VAULT_TOKEN=token, PM_WEBHOOKS_ALLOW_HTTP="true", PM_LOG_LEVEL="WARNING",
        PM_WEBHOOKS_ALLOWED_NETWORKS='["127.0.0.0/8"]',
        PM_PRINCIPAL_PUBLIC_KEYS=public_keys_of(SIGNING_KEY),
        PM_DB_POOL_MAX="5", PYTHONPATH=str(REPO),  # a shared Postgres: few connections
    )  # fmt: skip
    ports = {name: free_port() for name in ("api", "worker", "stream", "relay")}
    procs = [
        spawn(
            ["-m", "services.webhooks", name],
            {**env, "PM_HTTP_PORT": str(port)},
            f"events-stream-{name}",
        )
        for name, port in ports.items()
    ]
    arrivals: list[tuple[float, float, str]] = []
    readers: list[asyncio.Task[None]] = []
    stored_lag: list[float] = []
    relay_lag: list[float] = []
    stored_lag_all: list[float] = []
    stored_at: dict[str, float] = {}
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)
    offered = published = stored_rate = 0.0
    cpu: dict[str, float] = {}
    try:
        for port in ports.values():
            wait_ready(f"http://127.0.0.1:{port}")
        api = f"http://127.0.0.1:{ports['api']}"
        limits = httpx.Limits(max_connections=TENANTS + 10, max_keepalive_connections=TENANTS)
        async with httpx.AsyncClient(limits=limits) as client:
            ready = [asyncio.Event() for _ in tenants]
            readers = [
                asyncio.create_task(_reader(client, api, t, arrivals, r))
                for t, r in zip(tenants, ready, strict=True)
            ]
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in ready)), 60)

            # GROUPS transactions per period of 1/RATE s, evenly spaced, each committing the
            # events of its share of the tenants (GROUPS=1: all tenants' in one transaction).
            interval = 1 / RATE / GROUPS
            ticks = int((WARMUP + SECONDS) * RATE) * GROUPS
            measured_from = time.time() + WARMUP
            t0 = time.perf_counter()
            for tick in range(ticks):
                group = tick % GROUPS
                async with pool.acquire() as conn, conn.transaction():
                    await outbox.enqueue(
                        conn,
                        *(
                            make_event(
                                EmailOpened(
                                    message_id=f"em_{tick // GROUPS}_{i}",
                                    to="u@example.com",
                                    user_agent="Mozilla/5.0 (iPhone)",
                                ),
                                tenant_id=t,
                                source="/bench",
                            )
                            for i, t in enumerate(tenants)
                            if i % GROUPS == group
                        ),
                    )
                await asyncio.sleep(max(0.0, t0 + (tick + 1) * interval - time.perf_counter()))
            offered = ticks // GROUPS * TENANTS / (time.perf_counter() - t0)
            load = os.getloadavg()  # the machine's load while the events went in
            expected = ticks // GROUPS * TENANTS
            deadline = time.monotonic() + 60
            while len(arrivals) < expected and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            webhook_expected = ticks // GROUPS * WITH_WEBHOOK
            while receiver.count < webhook_expected and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        # Where the time goes: committed -> stored in the stream table (relay, broker, the
        # stream consumer) versus stored -> on the stream (NOTIFY, hub, HTTP).
        rows = await pool.fetch(
            "SELECT event_id::text AS id, extract(epoch FROM stored_at) AS stored,"
            " extract(epoch FROM stored_at - (payload::json->>'created')::timestamptz) AS lag,"
            " (payload::json->>'created')::timestamptz >= to_timestamp($1) AS measured"
            " FROM stream_events",
            measured_from,
        )
        stored_lag_all = [float(r["lag"]) for r in rows]
        stored_lag = [float(r["lag"]) for r in rows if r["measured"]]
        stored_at = {r["id"]: float(r["stored"]) for r in rows}
        if DUMP:  # each event's stamps, to see which bursts make the tail and where
            published_at = {
                r["id"]: float(r["at"])
                for r in await pool.fetch(
                    "SELECT id::text AS id, extract(epoch FROM published_at) AS at FROM outbox"
                    " WHERE published_at IS NOT NULL"
                )
            }
            samples = [
                {"id": i, "created": c, "published": published_at.get(i),
                 "stored": stored_at.get(i), "arrived": at}
                for at, c, i in arrivals
            ]  # fmt: skip
            with open(DUMP, "wb") as out:
                out.write(orjson.dumps(samples))
        stored_rate = _rate(list(stored_at.values()))
        published = _rate(
            [
                float(r["at"])
                for r in await pool.fetch(
                    "SELECT extract(epoch FROM published_at) AS at FROM outbox"
                    " WHERE published_at IS NOT NULL"
                )
            ]
        )
        # The relay's share: insert (just before the commit) -> broker confirm.
        relay_lag = [
            float(r["lag"])
            for r in await pool.fetch(
                "SELECT extract(epoch FROM published_at - created_at) AS lag FROM outbox"
                " WHERE published_at IS NOT NULL AND created_at >= to_timestamp($1)",
                measured_from,
            )
        ]
        peaks = peak_rss({f"webhooks {name}": p.pid for name, p in zip(ports, procs, strict=True)})
        # CPU seconds of each process over the whole run (less sensitive to the host's load
        # than rates).
        cpu = {name: cpu_seconds(p.pid) for name, p in zip(ports, procs, strict=True)}
        cpu["bench (readers and producer)"] = cpu_seconds(os.getpid())
    finally:
        for task in readers:
            task.cancel()
        for task in readers:
            with contextlib.suppress(BaseException):
                await task
        stop(procs)
        receiver.stop()
        await pool.close()

    stream = [at - created for at, created, _ in arrivals if created >= measured_from]
    # stored_at is the statement's start (now()): the push share includes the append itself.
    pushed = [at - stored_at[i] for at, c, i in arrivals if i in stored_at and c >= measured_from]
    received = receiver.snapshot()
    hooks = [r.at - _created(r.body) for r in received if _created(r.body) >= measured_from]
    print(
        f"bench/events_stream.py  {TENANTS} tenants x 1 stream x {RATE} events/s, {SECONDS:.0f} s"
        f" measured ({WITH_WEBHOOK} tenants also with a webhook endpoint); {GROUPS * RATE}"
        f" commits/s of {TENANTS // GROUPS} tenants' events each"
    )
    print(f"  stream arrivals: {len(arrivals)} of {expected} (all phases),"
          f" webhook arrivals: {receiver.count} of {webhook_expected}")  # fmt: skip
    print("  load average during the run (1, 5, 15 min): " + ", ".join(f"{x:.1f}" for x in load))
    print(f"  throughput: offered {offered:.0f} events/s, published by the relay {published:.0f}/s,"
          f" stored in stream_events {stored_rate:.0f}/s;"
          f" stored / offered {stored_rate / offered:.2f}x,"
          f" stored / published {stored_rate / max(published, 1e-9):.2f}x")  # fmt: skip
    behind = len(arrivals) < expected or receiver.count < webhook_expected
    if not stream or not hooks:
        # Fell behind so far that no event of the measured phase arrived within 60 s: the
        # figures of what did arrive (the warm-up's), so a run always says where it stands.
        print("  the pipeline fell behind: no measured event arrived within 60 s of the load;"
              " figures below are of the events that arrived (warm-up included)")  # fmt: skip
        stream = [at - created for at, created, _ in arrivals]
        hooks = [r.at - _created(r.body) for r in received]
        stored_lag = stored_lag_all
        pushed = [at - stored_at[i] for at, _, i in arrivals if i in stored_at]
    elif behind:
        print("  the pipeline fell behind: figures below are of the events that arrived")
    if not stream or not hooks:
        print("  nothing arrived: no figures")
        return
    s99, w99 = percentile(stream, 99) * 1000, percentile(hooks, 99) * 1000
    s50, w50 = percentile(stream, 50) * 1000, percentile(hooks, 50) * 1000
    print(f"  stream   (commit -> on the open stream):  {summary(stream)}")
    print(f"  webhooks (commit -> at the receiver):     {summary(hooks)}")
    if stored_lag and pushed:
        print(f"  of which commit -> stored in stream_events: {summary(stored_lag)}")
        if relay_lag:
            print(f"    of which commit -> published by the relay: {summary(relay_lag)}")
        print(f"  and stored -> on the open stream:            {summary(pushed)}")
    print("  " + memory_line(peaks))
    print("  CPU seconds over the run: " + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()))
    print(f"  stream p99 {s99:.1f} ms (target <= 100 ms) {'OK' if s99 <= 100 else 'ABOVE TARGET'}")
    print(f"  ratio stream / webhooks: p50 {s50 / w50:.2f}x, p99 {s99 / w99:.2f}x")
    figures = {
        "stream_p50_ms": s50,
        "stream_p99_ms": s99,
        "webhooks_p50_ms": w50,
        "webhooks_p99_ms": w99,
        "push_p99_ms": percentile(pushed, 99) * 1000,
        "p99_ratio": s99 / w99,
        "delivered": len(arrivals),
        "expected": expected,
        "fell_behind": behind,
        "offered_per_s": offered,
        "published_per_s": published,
        "stored_per_s": stored_rate,
        "stored_ratio": stored_rate / offered,
        "cpu_seconds": cpu,
        "load_1min": load[0],
    }
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    asyncio.run(main())
