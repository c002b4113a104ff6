"""Background work doesn't starve the API: a 100,000-row import's events drained end to end,
and the API's latency while they drain.

Stack: real processes as `make up` runs them, on a database and vhost of their own: keys api
+ gateway (the tenant on the internal `unlimited` plan, so limits don't shape figures),
campaigns api / worker / relay, the delivery worker (its `delivery.contacts` read model) and
the webhooks worker (`webhooks.fanout`) and stream consumer (`webhooks.stream`): every
consumer of `contact.*`.

1. idle: contact-list probes through the gateway, one at a time (the list, a status filter, a
   tag filter, in turn) for `BENCH_DRAIN_IDLE_SECONDS`: the idle p95.
2. drain: `BENCH_DRAIN_ROWS` rows submitted through the gateway as import jobs of 50,000 rows
   (the per-job cap), one `contact.created` per row. The same probes run until every consumer
   has handled every event (counted by each process's own `pm_events_handled_total`: ok,
   duplicate or dead-lettered).
   - end to end: events / (the last consumer done - the first event committed: the outbox's
     `created_at`);
   - the relay's own rate in the same run: events / (last - first `published_at`);
   - the API's p95 while the events drain against its idle p95.

Targets (issue 21): end to end >= 0.6x the relay's rate; API p95 while draining <= 2x idle.

Processes run at their kind's CPU priority, as deployed (docs/scheduling.md "CPU priority":
workers and relays at nice +10); BENCH_DRAIN_PROCESS_NICE=0 runs them at the API's, to
compare.

Run: `uv run python -m bench.drain` (or `make bench`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families

from bench.gateway import SIGNING_KEY
from bench.harness import (
    REPO,
    VAULT_ADDR,
    VAULT_TOKEN_FILE,
    free_port,
    fresh_database,
    fresh_vhost,
    gateway_stack,
    memory_line,
    peak_rss,
    percentile,
    service_dsn,
    spawn,
    stop,
    summary,
    verdict,
    wait_ready,
)
from libs.common.db import create_pool
from libs.common.settings import BACKGROUND_NICE
from libs.common.signing_keys import public_keys_of
from services.webhooks.payloads import deliverable_types

ROWS = int(os.environ.get("BENCH_DRAIN_ROWS", "100000"))
JOB_ROWS = 50_000  # the per-job cap (`import_max_rows`)
IDLE_SECONDS = float(os.environ.get("BENCH_DRAIN_IDLE_SECONDS", "15"))
DRAIN_TIMEOUT = float(os.environ.get("BENCH_DRAIN_TIMEOUT_SECONDS", "900"))
PROBES = ("/api/v1/contacts?limit=50", "/api/v1/contacts?limit=50&status=active",
          "/api/v1/contacts?limit=50&tag=cohort3")  # fmt: skip
CONTACT_TYPES = ("contact.created", "contact.updated", "contact.deleted")
# The consumers of contact.* and the event types each is bound to.
CONSUMERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "delivery.contacts": ("delivery worker", CONTACT_TYPES),
    "webhooks.fanout": ("webhooks worker", tuple(deliverable_types())),
    "webhooks.stream": ("webhooks stream", tuple(deliverable_types())),
}
TERMINAL = ("ok", "duplicate", "dead_lettered")
# The background processes' niceness; unset: the platform's (libs/common/settings.py
# BACKGROUND_NICE); 0: at the API's priority, for comparison.
NICE = os.environ.get("BENCH_DRAIN_PROCESS_NICE", "")


def rows(start: int, n: int) -> bytes:
    return orjson.dumps(
        [
            {
                "email": f"drain{i}@bench.example.com",
                "first_name": f"First{i}",
                "last_name": f"Last{i}",
                "company": f"Company {i % 500}",
                "tags": ["drain", f"cohort{i % 10}"],
                "custom_fields": {"plan": "pro" if i % 3 else "free", "seats": i % 50},
            }
            for i in range(start, start + n)
        ]
    )


def handled(metrics_text: str) -> dict[str, float]:
    """Terminal outcomes per queue from a process's Prometheus exposition."""
    counts: dict[str, float] = {}
    # Only pm_events_handled's lines go to the parser: the bench polls three processes ten
    # times a second, and parsing every family took CPU the API competes for on 2 cores.
    wanted = "\n".join(line for line in metrics_text.splitlines() if "pm_events_handled" in line)
    for family in text_string_to_metric_families(wanted):
        if family.name != "pm_events_handled":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("outcome") in TERMINAL:
                queue = sample.labels["queue"]
                counts[queue] = counts.get(queue, 0.0) + sample.value
    return counts


class Prober:
    """Contact-list probes through the gateway, one at a time, each latency kept with its
    phase: in a process of its own, so the bench's bookkeeping (scraping and parsing every
    consumer's metrics ten times a second) never delays a probe's measurement, as it would
    on a shared event loop; the probes see what an outside caller sees."""

    def __init__(self, url: str, key: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._phase = ctx.Value("i", 0)  # 0 idle, 1 drain
        self._stop = ctx.Event()
        self._ready = ctx.Event()
        self._out: Any = ctx.Queue()
        self._proc = ctx.Process(
            target=_probe_process,
            args=(url, key, self._phase, self._stop, self._ready, self._out),
            daemon=True,
        )
        self.latencies: dict[str, list[float]] = {"idle": [], "drain": []}
        self.errors: dict[int, int] = {}  # status -> count

    async def start(self) -> None:
        self._proc.start()
        while not self._ready.is_set():
            await asyncio.sleep(0.05)

    def drain_phase(self) -> None:
        self._phase.value = 1

    async def stop(self) -> None:
        self._stop.set()
        self.latencies, self.errors = await asyncio.to_thread(self._out.get)
        await asyncio.to_thread(self._proc.join)


def _probe_process(url: str, key: str, phase: Any, stop: Any, ready: Any, out: Any) -> None:
    out.put(asyncio.run(_probe(url, key, phase, stop, ready)))


async def _probe(
    url: str, key: str, phase: Any, stop: Any, ready: Any
) -> tuple[dict[str, list[float]], dict[int, int]]:
    headers = {"Authorization": f"Bearer {key}"}
    latencies: dict[str, list[float]] = {"idle": [], "drain": []}
    errors: dict[int, int] = {}
    async with httpx.AsyncClient(timeout=120) as client:
        await client.get(url + PROBES[0], headers=headers)  # connected and warm
        ready.set()
        i = 0
        while not stop.is_set():
            name = "drain" if phase.value else "idle"
            t0 = time.perf_counter()
            resp = await client.get(url + PROBES[i % len(PROBES)], headers=headers)
            took = time.perf_counter() - t0
            if resp.status_code == 200:
                latencies[name].append(took)
            else:
                errors[resp.status_code] = errors.get(resp.status_code, 0) + 1
            i += 1
    return latencies, errors


async def main() -> None:
    await fresh_database("keys", "campaigns", "delivery", "webhooks")
    amqp_url = fresh_vhost()
    token = VAULT_TOKEN_FILE.read_text().strip()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PM_")},
        "PYTHONPATH": str(REPO),
        "PM_ENVIRONMENT": "test",
        "PM_LOG_LEVEL": "WARNING",
        "PM_AMQP_URL": amqp_url,
        "PM_REDIS_URL": "redis://127.0.0.1:6379/14",
        "PM_REDIS_NAMESPACE": f"pmdrain{os.getpid()}",
        "PM_VAULT_ADDR": VAULT_ADDR,
        "PM_VAULT_TOKEN": token,
        "PM_PRINCIPAL_PUBLIC_KEYS": public_keys_of(SIGNING_KEY),
        "PM_DB_POOL_MAX": "5",  # a shared Postgres: few connections
        # Unset: each process's kind's niceness, as deployed (workers and relays at +10).
        **({"PM_PROCESS_NICE": NICE} if NICE else {}),
    }
    programs = [("campaigns", "api"), ("campaigns", "worker"), ("campaigns", "relay"),
                ("delivery", "worker"), ("webhooks", "worker"), ("webhooks", "stream")]  # fmt: skip
    ports = {f"{svc} {proc}": free_port() for svc, proc in programs}
    procs = [
        spawn(
            ["-m", f"services.{svc}", proc],
            {
                **env,
                "PM_DATABASE_URL": service_dsn(svc),
                "PM_HTTP_PORT": str(ports[f"{svc} {proc}"]),
            },
            f"drain-{svc}-{proc}",
        )
        for svc, proc in programs
    ]
    pool = await create_pool(service_dsn("campaigns"), "campaigns", min_size=1, max_size=2)
    try:
        for port in ports.values():
            wait_ready(f"http://127.0.0.1:{port}")
        async with (
            gateway_stack(
                keys_dsn=service_dsn("keys"),
                amqp_url=amqp_url,
                signing_key=SIGNING_KEY,
                upstreams={"campaigns": f"http://127.0.0.1:{ports['campaigns api']}"},
                scopes=["manage_contacts"],
            ) as gateway,
            httpx.AsyncClient(timeout=120) as client,
        ):
            figures = await drive(client, gateway.url, gateway.api_key, ports, pool)
            pids = {name: p.pid for name, p in zip(ports, procs, strict=True)}
            figures["peak_rss_mib"] = peak_rss({**pids, **gateway.pids})
    finally:
        stop(procs)
        await pool.close()
    report(figures)


async def drive(
    client: httpx.AsyncClient,
    gw: str,
    key: str,
    ports: dict[str, int],
    pool: Any,
) -> dict[str, Any]:
    auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    # A first import so the probes list real pages while idle (and every path is warm).
    warm = await client.post(
        f"{gw}/api/v1/contacts/imports", content=rows(10_000_000, 1_000), headers=auth
    )
    warm.raise_for_status()
    await wait_import(client, gw, auth, warm.json()["data"]["id"])
    metrics = {q: f"http://127.0.0.1:{ports[proc]}/metrics" for q, (proc, _) in CONSUMERS.items()}
    expected = await expected_counts(pool)
    while any(await counts_below(client, metrics, expected)):
        await asyncio.sleep(0.2)
    base = await current_counts(client, metrics)

    prober = Prober(gw, key)
    await prober.start()
    await asyncio.sleep(IDLE_SECONDS)

    prober.drain_phase()
    since = await pool.fetchval("SELECT clock_timestamp()")
    started = time.time()
    for lo in range(0, ROWS, JOB_ROWS):
        job = await client.post(
            f"{gw}/api/v1/contacts/imports", content=rows(lo, min(JOB_ROWS, ROWS - lo)),
            headers=auth,
        )  # fmt: skip
        job.raise_for_status()
    submitted = time.time() - started
    expected = {q: n + base[q] for q, n in (await expected_counts(pool, since)).items()}
    done_at: dict[str, float] = {}
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while len(done_at) < len(CONSUMERS) and time.monotonic() < deadline:
        seen = await current_counts(client, metrics)
        for queue in CONSUMERS:
            # The expected count grows while the jobs run (the events are written by them).
            if queue not in done_at and seen[queue] >= expected[queue]:
                expected = {q: n + base[q] for q, n in (await expected_counts(pool, since)).items()}
                if seen[queue] >= expected[queue] and await jobs_done(pool, since):
                    done_at[queue] = time.time()
        await asyncio.sleep(0.1)
    await prober.stop()
    window = await pool.fetchrow(
        "SELECT count(*) AS n, extract(epoch FROM min(created_at)) AS first_commit,"
        " extract(epoch FROM max(created_at)) AS last_commit,"
        " extract(epoch FROM min(published_at)) AS first_pub,"
        " extract(epoch FROM max(published_at)) AS last_pub"
        " FROM outbox WHERE created_at >= $1 AND event_type = 'contact.created'",
        since,
    )
    return {
        "rows": ROWS,
        "events": int(window["n"]),
        "submit_seconds": submitted,
        "first_commit": float(window["first_commit"]),
        "last_commit": float(window["last_commit"]),
        "first_published": float(window["first_pub"]),
        "last_published": float(window["last_pub"]),
        "done_at": done_at,
        "timed_out": [q for q in CONSUMERS if q not in done_at],
        "idle": prober.latencies["idle"],
        "drain": prober.latencies["drain"],
        "probe_errors": prober.errors,
        "load": os.getloadavg(),
    }


async def wait_import(
    client: httpx.AsyncClient, gw: str, auth: dict[str, str], import_id: str
) -> None:
    while True:
        job = (await client.get(f"{gw}/api/v1/contacts/imports/{import_id}", headers=auth)).json()
        if job["data"]["status"] == "completed":
            return
        await asyncio.sleep(0.2)


async def jobs_done(pool: Any, since: Any) -> bool:
    return not await pool.fetchval(
        "SELECT count(*) FROM contact_imports WHERE created_at >= $1 AND status <> 'completed'",
        since,
    )


async def expected_counts(pool: Any, since: Any = None) -> dict[str, int]:
    """Events each consumer must handle: the campaigns outbox's events of its bound types."""
    out = {}
    for queue, (_, types) in CONSUMERS.items():
        out[queue] = int(
            await pool.fetchval(
                "SELECT count(*) FROM outbox WHERE event_type = ANY($1::text[])"
                " AND ($2::timestamptz IS NULL OR created_at >= $2)",
                list(types),
                since,
            )
        )
    return out


async def current_counts(client: httpx.AsyncClient, metrics: dict[str, str]) -> dict[str, float]:
    texts = {url: (await client.get(url)).text for url in set(metrics.values())}
    return {q: handled(texts[url]).get(q, 0.0) for q, url in metrics.items()}


async def counts_below(
    client: httpx.AsyncClient, metrics: dict[str, str], expected: dict[str, int]
) -> list[str]:
    seen = await current_counts(client, metrics)
    return [q for q in CONSUMERS if seen[q] < expected[q]]


def report(f: dict[str, Any]) -> None:
    n = f["events"]
    print(
        f"bench/drain.py  {f['rows']:,} rows imported through the gateway as jobs of"
        f" {JOB_ROWS:,}; consumers: {', '.join(CONSUMERS)}"
    )
    nice = NICE or f"{BACKGROUND_NICE} (the platform's)"
    print(f"  workers and relays at nice +{nice}; api, gateway and keys at 0")
    print("  load average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.1f}" for x in f["load"]))
    print(f"  submitted in {f['submit_seconds']:.1f} s; {n:,} contact.created committed over"
          f" {f['last_commit'] - f['first_commit']:.1f} s")  # fmt: skip
    relay_s = f["last_published"] - f["first_published"]
    relay_rate = n / relay_s if relay_s > 0 else float("nan")
    print(f"  relay: published in {relay_s:.1f} s, {relay_rate:,.0f} events/s")
    if f["timed_out"]:
        print(f"  not every consumer finished within {DRAIN_TIMEOUT:.0f} s: {f['timed_out']}")
    ratio = float("nan")
    if f["done_at"]:
        for queue, at in sorted(f["done_at"].items(), key=lambda kv: kv[1]):
            print(f"  {queue}: done {at - f['first_commit']:.1f} s after the first commit")
        if not f["timed_out"]:
            e2e_s = max(f["done_at"].values()) - f["first_commit"]
            e2e_rate = n / e2e_s
            ratio = e2e_rate / relay_rate
            print(f"  end to end (first commit -> every consumer done): {e2e_s:.1f} s,"
                  f" {e2e_rate:,.0f} events/s")  # fmt: skip
            print("  " + verdict("end to end / relay rate", ratio, 0.6))
    idle, drain = f["idle"], f["drain"]
    print(f"  API idle     ({len(idle)} probes): {summary(idle)}")
    print(f"  API draining ({len(drain)} probes): {summary(drain)}; errors {f['probe_errors']}")
    p95_ratio = percentile(drain, 95) / percentile(idle, 95)
    status = "OK" if p95_ratio <= 2 else "ABOVE TARGET"
    print(f"  API p95 draining / idle: {p95_ratio:.2f}x (target <= 2x) {status}")
    print("  " + memory_line(f["peak_rss_mib"]))
    print(
        orjson.dumps(
            {
                "events": n,
                "relay_per_s": relay_rate,
                "end_to_end_ratio": ratio,
                "api_idle_p95_ms": percentile(idle, 95) * 1000,
                "api_drain_p95_ms": percentile(drain, 95) * 1000,
                "api_p95_ratio": p95_ratio,
                "load_1min": f["load"][0],
            }
        ).decode()
    )


if __name__ == "__main__":
    asyncio.run(main())
