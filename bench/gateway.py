"""Gateway overhead: an authenticated, rate-limited GET through the gateway vs the same
upstream route called directly (same run, same concurrency), and cold key verification.

Processes (real): keys api (bcrypt cost 12, its own Vault AppRole), gateway api, and an
upstream built like every service (`libs.common.app.create_app` + principal check) serving
`GET /api/v1/contacts/{id}`. The tenant is on the internal `unlimited` plan (set by the admin
command; limits are per key and per tenant) and the load rotates over `KEYS` API keys, so the
run measures forwarding, not 429s.

1. cold: first request of each key (cache miss → keys service → Vault → bcrypt), then a
   second request of the same key (cache hit): cold ms, and the gateway's `verified` counter
   proves bcrypt was paid once per key.
2. throughput/latency: `CONCURRENCY` clients, `SECONDS` in total per side, in `ROUNDS`
   alternating direct / gateway windows; plus each process's CPU time per request (from
   /proc), which other load on a shared host distorts far less than throughput.

3. added latency: `SEQUENTIAL` requests one at a time, alternating direct / gateway.

Run: `uv run python -m bench.gateway`. Targets (issue): gateway >= 0.6x direct throughput,
added p99 <= 3 ms, cold verification <= 400 ms.
"""

import asyncio
import os
import re
import sys
import time
from typing import Annotated, Any

import httpx

from bench.harness import (
    REPO,
    cpu_seconds,
    free_port,
    fresh_database,
    fresh_vhost,
    gateway_stack,
    percentile,
    service_dsn,
    spawn,
    stop,
    summary,
    verdict,
    wait_ready,
)
from libs.common.settings import ServiceSettings
from libs.common.signing_keys import generate_private_key, public_keys_of

CONCURRENCY = int(os.environ.get("BENCH_GATEWAY_CONCURRENCY", "16"))
SECONDS = float(os.environ.get("BENCH_GATEWAY_SECONDS", "10"))
ROUNDS = int(os.environ.get("BENCH_GATEWAY_ROUNDS", "5"))
SEQUENTIAL = int(os.environ.get("BENCH_GATEWAY_SEQUENTIAL", "500"))
KEYS = int(os.environ.get("BENCH_GATEWAY_KEYS", "12"))
PROFILE = os.environ.get("BENCH_GATEWAY_PROFILE") == "1"
# The upstream child process imports this module: the key pair must be the parent's.
SIGNING_KEY = os.environ.get("BENCH_GATEWAY_PRIVATE_KEY") or generate_private_key()


def upstream_app() -> Any:
    from fastapi import Depends

    from libs.common.app import create_app
    from libs.common.http import ok
    from libs.common.principal import Principal, principal_dependency, require_scope

    settings = ServiceSettings(service_name="campaigns", log_level="WARNING")
    current = principal_dependency(lambda: public_keys_of(SIGNING_KEY), audience="campaigns")
    scoped = require_scope("manage_contacts", current)
    app = create_app(settings, process="api")

    @app.get("/api/v1/contacts/{contact_id}")
    async def contact(contact_id: str, p: Annotated[Principal, Depends(scoped)]) -> dict[str, Any]:
        return ok({"id": contact_id, "tenant_id": p.tenant_id, "email": "ada@example.com"})

    return app


async def load(url: str, headers_for: Any, seconds: float) -> tuple[int, list[float], int]:
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def worker(w: int) -> None:
            nonlocal errors
            i = w
            while time.monotonic() < stop:
                started = time.perf_counter()
                resp = await client.get(url, headers=headers_for(i))
                latencies.append(time.perf_counter() - started)
                if resp.status_code != 200:
                    errors += 1
                i += CONCURRENCY

        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    return len(latencies), latencies, errors


def auth_metric(text: str, outcome: str) -> float:
    pattern = rf'pm_gateway_auth_total{{method="api_key",outcome="{outcome}"}} ([0-9.e+]+)'
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


async def main() -> None:
    await fresh_database("keys")
    amqp_url = fresh_vhost()
    common = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PM_")},
        "PYTHONPATH": str(REPO),
        "PM_LOG_LEVEL": "WARNING",
        "BENCH_GATEWAY_PRIVATE_KEY": SIGNING_KEY,
    }
    up_port = free_port()
    up_url = f"http://127.0.0.1:{up_port}"
    upstream = spawn(["-m", "bench.gateway", "upstream", str(up_port)], common, "upstream")
    try:
        wait_ready(up_url, "/healthz")
        async with gateway_stack(
            keys_dsn=service_dsn("keys"),
            amqp_url=amqp_url,
            signing_key=SIGNING_KEY,
            upstreams={"campaigns": up_url},
            scopes=["manage_contacts"],
            key_count=KEYS,
            # BENCH_GATEWAY_PROFILE=1 writes a cProfile of the gateway to .dev/.
            gateway_profile=REPO / ".dev" / "gateway.prof" if PROFILE else None,
        ) as gateway:
            gw_url, keys = gateway.url, gateway.api_keys
            async with httpx.AsyncClient(timeout=30) as client:
                route = "/api/v1/contacts/ct_1"
                before = (await client.get(gateway.metrics_url)).text

                # 1. cold verification, once per key; then the same key warm.
                cold, warm = [], []
                for key in keys:
                    auth = {"Authorization": f"Bearer {key}"}
                    started = time.perf_counter()
                    first = await client.get(gw_url + route, headers=auth)
                    cold.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    second = await client.get(gw_url + route, headers=auth)
                    warm.append(time.perf_counter() - started)
                    assert first.status_code == second.status_code == 200, first.text
                after = (await client.get(gateway.metrics_url)).text
                verified = auth_metric(after, "verified") - auth_metric(before, "verified")

            # 2. throughput and latency, direct vs via the gateway, same concurrency.
            from libs.common.principal import Principal, sign_principal

            principal = Principal(
                tenant_id=gateway.tenant_id,
                subject_type="api_key",
                subject_id="key_bench",
                scopes=["manage_contacts"],
                plan="unlimited",
                mode="live",
            )
            token = sign_principal(
                principal, SIGNING_KEY, 3600, audience="campaigns", method="GET", path=route
            )
            direct_headers = {"X-PM-Principal": token}
            gw_headers = [{"Authorization": f"Bearer {k}"} for k in keys]
            await load(up_url + route, lambda i: direct_headers, 1.0)  # warm-up
            await load(gw_url + route, lambda i: gw_headers[i % len(keys)], 1.0)
            # Direct and gateway windows alternate, so load from other processes on a shared
            # host hits both sides alike.
            gw_pid, up_pid = gateway.pids["gateway"], upstream.pid
            d_n = g_n = d_err = g_err = 0
            d_lat: list[float] = []
            g_lat: list[float] = []
            up_direct_cpu = up_via_cpu = gw_cpu = 0.0
            window = SECONDS / ROUNDS
            for _ in range(ROUNDS):
                up0 = cpu_seconds(up_pid)
                n, lat, err = await load(up_url + route, lambda i: direct_headers, window)
                up_direct_cpu += cpu_seconds(up_pid) - up0
                d_n, d_err = d_n + n, d_err + err
                d_lat += lat
                gw0, up0 = cpu_seconds(gw_pid), cpu_seconds(up_pid)
                n, lat, err = await load(
                    gw_url + route, lambda i: gw_headers[i % len(keys)], window
                )
                gw_cpu += cpu_seconds(gw_pid) - gw0
                up_via_cpu += cpu_seconds(up_pid) - up0
                g_n, g_err = g_n + n, g_err + err
                g_lat += lat
            up_cpu_direct, up_cpu_via, gw_cpu_per = (
                up_direct_cpu / d_n,
                up_via_cpu / g_n,
                gw_cpu / g_n,
            )

            # 3. added latency without queueing: one request at a time, alternating sides.
            seq_direct: list[float] = []
            seq_gateway: list[float] = []
            async with httpx.AsyncClient(timeout=10) as client:
                for i in range(SEQUENTIAL):
                    started = time.perf_counter()
                    await client.get(up_url + route, headers=direct_headers)
                    seq_direct.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    await client.get(gw_url + route, headers=gw_headers[i % len(keys)])
                    seq_gateway.append(time.perf_counter() - started)
    finally:
        stop([upstream])

    # Baseline for the cold path: one bcrypt cost-12 check in this process, same moment.
    import bcrypt

    hashed = bcrypt.hashpw(b"pm_live_baseline", bcrypt.gensalt(12))
    raw_bcrypt = []
    for _ in range(3):
        started = time.perf_counter()
        bcrypt.checkpw(b"pm_live_baseline", hashed)
        raw_bcrypt.append(time.perf_counter() - started)

    d_rps, g_rps = d_n / SECONDS, g_n / SECONDS
    added_p99 = (percentile(seq_gateway, 99) - percentile(seq_direct, 99)) * 1000
    added_p50 = (percentile(seq_gateway, 50) - percentile(seq_direct, 50)) * 1000
    queued_p99 = (percentile(g_lat, 99) - percentile(d_lat, 99)) * 1000
    print(
        f"concurrency {CONCURRENCY}, {SECONDS:.0f} s per side in {ROUNDS} alternating rounds,"
        f" {KEYS} keys, load average before the run {os.getloadavg()[0]:.1f}"
        f" on {os.cpu_count()} CPUs"
    )
    print(f"direct : {d_rps:8.0f} req/s  {summary(d_lat)}  errors {d_err}")
    print(f"gateway: {g_rps:8.0f} req/s  {summary(g_lat)}  errors {g_err}")
    print(verdict("gateway / direct throughput", g_rps / d_rps, 0.6))
    print(
        f"CPU per request: upstream {up_cpu_direct * 1000:.2f} ms direct,"
        f" {up_cpu_via * 1000:.2f} ms via gateway; gateway {gw_cpu_per * 1000:.2f} ms"
        f" ({gw_cpu_per / up_cpu_direct:.2f}x the upstream's own work)"
    )
    print(f"sequential direct : {summary(seq_direct)}")
    print(f"sequential gateway: {summary(seq_gateway)}")
    print(
        f"added latency, one request at a time: p50 {added_p50:.1f} ms, p99 {added_p99:.1f} ms"
        f" (target p99 <= 3 ms) {'OK' if added_p99 <= 3 else 'ABOVE TARGET'};"
        f" under concurrency {CONCURRENCY}: p99 {queued_p99:+.1f} ms"
    )
    print(
        f"cold verification (bcrypt 12, via keys+Vault): {summary(cold)};"
        f" warm second request: {summary(warm)}"
    )
    print(
        f"cold/warm ratio {percentile(cold, 50) / percentile(warm, 50):.0f}x;"
        f" bcrypt verifications paid: {verified:.0f} for {KEYS} keys"
        f" ({len(cold) + len(warm) + g_n} gateway requests);"
        f" cold p99 {percentile(cold, 99) * 1000:.0f} ms (target <= 400 ms)"
        f" {'OK' if percentile(cold, 99) <= 0.4 else 'ABOVE TARGET'}"
    )
    bcrypt_ms = percentile(raw_bcrypt, 50) * 1000
    print(
        f"raw bcrypt cost 12 on this machine now: {bcrypt_ms:.0f} ms;"
        f" cold verification p50 / raw bcrypt = {percentile(cold, 50) * 1000 / bcrypt_ms:.2f}x"
    )


if __name__ == "__main__":
    if sys.argv[1:2] == ["upstream"]:
        import uvicorn

        uvicorn.run(upstream_app(), host="127.0.0.1", port=int(sys.argv[2]), log_config=None)
    else:
        asyncio.run(main())
