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
   alternating direct / nginx / gateway windows; plus each process's CPU time per request
   (from /proc), which other load on a shared host distorts far less than throughput. nginx
   (Debian `nginx-light`, installed when absent; one worker, keep-alive upstream, a
   `limit_req` zone keyed by the Authorization header) is the reference proxy.

3. added latency: `SEQUENTIAL` requests one at a time, alternating direct / nginx / gateway.

Every process's peak RSS is printed at the end.

Run: `uv run python -m bench.gateway`. Targets (issues 8, 21): gateway >= 0.6x direct and
>= 0.9x nginx throughput, added p99 one at a time <= 1 ms, cold verification <= 400 ms.
"""

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import httpx

from bench.harness import (
    REPO,
    cpu_seconds,
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


def ensure_nginx() -> str:
    """The nginx binary; Debian's `nginx-light` is installed (as root, else with sudo) when
    absent. The package's own service is never started by the bench."""
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print("installing nginx-light from Debian packages", flush=True)
    subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env, check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "nginx-light"], env=env, check=True)
    return shutil.which("nginx") or "/usr/sbin/nginx"


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    # One zone keyed by the caller's credential, like the gateway's per-key buckets; a rate no
    # bench reaches, so it is paid for on every request but never refuses one.
    limit_req_zone $http_authorization zone=per_key:10m rate=100000r/s;
    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive {keepalive};
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            limit_req zone=per_key burst=100000 nodelay;
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@contextlib.contextmanager
def nginx_proxy(upstream_port: int) -> Iterator[tuple[str, int]]:
    """nginx (one worker, like the gateway's one process) in front of the upstream, with
    keep-alive to it and a `limit_req` zone keyed by the Authorization header."""
    binary = ensure_nginx()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="pm-bench-nginx-") as tmp:
        conf = os.path.join(tmp, "nginx.conf")
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(dir=tmp, upstream_port=upstream_port, port=port,
                                      keepalive=CONCURRENCY * 2))  # fmt: skip
        proc = subprocess.Popen(
            [binary, "-c", conf, "-p", tmp, "-e", os.path.join(tmp, "error.log")]
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, "/healthz")
            # The worker serves the requests: its pid is the one whose CPU and memory count.
            worker = int(subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                        text=True, check=True).stdout.split()[0])  # fmt: skip
            yield url, worker
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


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
            # nginx cannot sign principals: it forwards the direct side's, and keys its
            # limit_req zone by the caller's Authorization header as the gateway keys buckets.
            nginx_headers = [{**direct_headers, **h} for h in gw_headers]
            with nginx_proxy(up_port) as (nginx_url, nginx_pid):
                sides: dict[str, tuple[str, Callable[[int], dict[str, str]], int | None]] = {
                    "direct": (up_url + route, lambda i: direct_headers, None),
                    "nginx": (nginx_url + route, lambda i: nginx_headers[i % len(keys)], nginx_pid),
                    "gateway": (gw_url + route, lambda i: gw_headers[i % len(keys)],
                                gateway.pids["gateway"]),
                }  # fmt: skip
                for url, headers_for, _ in sides.values():
                    await load(url, headers_for, 1.0)  # warm-up
                # The sides' windows alternate, so load from other processes on a shared host
                # hits them all alike.
                up_pid = upstream.pid
                count = dict.fromkeys(sides, 0)
                errors = dict.fromkeys(sides, 0)
                lat: dict[str, list[float]] = {name: [] for name in sides}
                up_cpu = dict.fromkeys(sides, 0.0)
                proxy_cpu = dict.fromkeys(sides, 0.0)
                window = SECONDS / ROUNDS
                for _ in range(ROUNDS):
                    for name, (url, headers_for, pid) in sides.items():
                        up0 = cpu_seconds(up_pid)
                        px0 = cpu_seconds(pid) if pid else 0.0
                        n, latencies, err = await load(url, headers_for, window)
                        up_cpu[name] += cpu_seconds(up_pid) - up0
                        if pid:
                            proxy_cpu[name] += cpu_seconds(pid) - px0
                        count[name] += n
                        errors[name] += err
                        lat[name] += latencies

                # 3. added latency without queueing: one request at a time, alternating sides.
                seq: dict[str, list[float]] = {name: [] for name in sides}
                async with httpx.AsyncClient(timeout=10) as client:
                    for i in range(SEQUENTIAL):
                        for name, (url, headers_for, _) in sides.items():
                            started = time.perf_counter()
                            await client.get(url, headers=headers_for(i))
                            seq[name].append(time.perf_counter() - started)
                peaks = peak_rss({"upstream": up_pid, "nginx worker": nginx_pid, **gateway.pids})
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

    rps = {name: n / SECONDS for name, n in count.items()}
    d_rps, n_rps, g_rps = rps["direct"], rps["nginx"], rps["gateway"]
    g_n = count["gateway"]

    def added(name: str, p: float) -> float:
        return (percentile(seq[name], p) - percentile(seq["direct"], p)) * 1000

    print(
        f"concurrency {CONCURRENCY}, {SECONDS:.0f} s per side in {ROUNDS} alternating rounds,"
        f" {KEYS} keys, load average before the run {os.getloadavg()[0]:.1f}"
        f" on {os.cpu_count()} CPUs"
    )
    for name in sides:
        print(f"{name:<7}: {rps[name]:8.0f} req/s  {summary(lat[name])}  errors {errors[name]}")
    print(verdict("gateway / direct throughput", g_rps / d_rps, 0.6))
    print(f"nginx / direct throughput: {n_rps / d_rps:.2f}x")
    print(verdict("gateway / nginx throughput", g_rps / n_rps, 0.9))
    up_direct = up_cpu["direct"] / count["direct"]
    print(
        f"CPU per request: upstream {up_direct * 1000:.2f} ms direct,"
        f" {up_cpu['gateway'] / g_n * 1000:.2f} ms via gateway;"
        f" gateway {proxy_cpu['gateway'] / g_n * 1000:.2f} ms"
        f" ({proxy_cpu['gateway'] / g_n / up_direct:.2f}x the upstream's own work);"
        f" nginx {proxy_cpu['nginx'] / count['nginx'] * 1000:.3f} ms"
    )
    for name in sides:
        print(f"sequential {name:<7}: {summary(seq[name])}")
    g99, n99 = added("gateway", 99), added("nginx", 99)
    print(
        f"added latency, one request at a time: gateway p50 {added('gateway', 50):.2f} ms,"
        f" p99 {g99:.2f} ms (target p99 <= 1 ms) {'OK' if g99 <= 1 else 'ABOVE TARGET'};"
        f" nginx p50 {added('nginx', 50):.2f} ms, p99 {n99:.2f} ms;"
        f" gateway - nginx added p99 {g99 - n99:+.2f} ms"
    )
    queued = {n: (percentile(lat[n], 99) - percentile(lat["direct"], 99)) * 1000 for n in sides}
    print(
        f"added p99 under concurrency {CONCURRENCY}:"
        f" gateway {queued['gateway']:+.1f} ms, nginx {queued['nginx']:+.1f} ms"
    )
    print(memory_line(peaks))
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
