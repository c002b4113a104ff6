"""Dashboard benchmark (not a test): Lighthouse (npm `lighthouse`, Debian's chromium) on the
API keys and webhooks pages, and the first-load JavaScript of the built app in kB gzip.

Targets (issue 18): performance >= 90, accessibility >= 95, first-load JS <= 200 kB gzip.

It measures the gateway of `make up` (http://127.0.0.1:8000) when that answers, or
PM_BENCH_DASHBOARD_URL; otherwise it starts its own keys api and gateway (the webhooks page
then shows its "service unavailable" notice, which is still a full render of the page). A
fresh user signs up, owns one API key, and each Lighthouse run gets a session of its own
through the refresh cookie (sent as an extra header): the page loads as a returning user's.

    uv run python -m bench.dashboard

BENCH_DASHBOARD_BASELINE=<a built dist directory> (its own stack only) also serves that
build from a second gateway and measures both builds in turn, run by run, under the same
load: the ratio of the current build's figures to the baseline's is printed.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.harness import (
    REPO,
    fresh_database,
    fresh_vhost,
    gateway_stack,
    service_dsn,
)
from libs.common.signing_keys import generate_private_key

LIGHTHOUSE_DIR = REPO / "bench" / "lighthouse"
LIGHTHOUSE = LIGHTHOUSE_DIR / "node_modules" / ".bin" / "lighthouse"
DIST = REPO / "web" / "dashboard" / "dist"
CHROMIUM = "/usr/bin/chromium"
PAGES = {
    "api keys": "/dashboard/settings/developers/api-keys",
    "webhooks": "/dashboard/settings/webhooks",
}
PASSWORD = "bench dashboard password"
SIGNING_KEY = generate_private_key()  # the bench's own Ed25519 principal key
RUNS = int(os.environ.get("BENCH_DASHBOARD_RUNS", "3"))
BASELINE = os.environ.get("BENCH_DASHBOARD_BASELINE")


def prepare() -> None:
    subprocess.run(["bash", str(REPO / "web" / "dashboard" / "build.sh")], check=True)
    if not LIGHTHOUSE.exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=LIGHTHOUSE_DIR,
            check=True,
        )
    if not Path(CHROMIUM).exists():
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], check=True)


def first_load_js_gzip_kb() -> tuple[float, list[str]]:
    """Scripts index.html loads (entry + modulepreloads), gzip -9 as a server would send."""
    html = (DIST / "index.html").read_text()
    scripts = re.findall(r'(?:src|href)="/dashboard/(assets/[^"]+\.js)"', html)
    total = sum(len(gzip.compress((DIST / s).read_bytes(), 9)) for s in scripts)
    return total / 1024, scripts


async def account(base: str) -> str:
    email = f"bench-{uuid.uuid4().hex[:10]}@example.com"
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        r = await client.post(
            "/api/v1/auth/signup",
            json={"email": email, "password": PASSWORD, "company": "Bench"},
        )
        r.raise_for_status()
        token = r.json()["data"]["access_token"]
        created = await client.post(
            "/api/v1/platform/api-keys",
            json={"name": "bench key", "scopes": ["read_analytics", "manage_webhooks"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        created.raise_for_status()
    return email


async def refresh_cookie(base: str, email: str) -> str:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        r = await client.post(
            "/api/v1/auth/login",
            json={"email": email, "password": PASSWORD},
            headers={"X-Refresh-Token-Transport": "cookie"},
        )
        r.raise_for_status()
        return r.cookies["pm_refresh"]


def lighthouse(url: str, cookie: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report.json"
        subprocess.run(
            [
                str(LIGHTHOUSE),
                url,
                "--quiet",
                "--only-categories=performance,accessibility",
                "--output=json",
                f"--output-path={out}",
                f"--extra-headers={json.dumps({'Cookie': f'pm_refresh={cookie}'})}",
                "--chrome-flags=--headless=new --no-sandbox --disable-gpu",
            ],
            env={**os.environ, "CHROME_PATH": CHROMIUM},
            check=True,
            capture_output=True,
        )
        report = json.loads(out.read_text())
    cats = report["categories"]
    audits = report["audits"]
    return {
        "performance": round(cats["performance"]["score"] * 100),
        "accessibility": round(cats["accessibility"]["score"] * 100),
        "fcp_ms": round(audits["first-contentful-paint"]["numericValue"]),
        "lcp_ms": round(audits["largest-contentful-paint"]["numericValue"]),
        "tbt_ms": round(audits["total-blocking-time"]["numericValue"]),
    }


async def measure(base: str, baseline: str | None = None) -> None:
    """Median of RUNS Lighthouse runs per page; with `baseline` (a gateway serving another
    build), that build is measured in turn with this one and the ratios printed."""
    builds = {"current": base} if baseline is None else {"baseline": baseline, "current": base}
    emails = {name: await account(url) for name, url in builds.items()}
    print(f"dashboard at {base}/dashboard/; {RUNS} Lighthouse runs per page, median shown")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    head = ("page", "build", "perf", "a11y", "FCP ms", "LCP ms", "TBT ms")
    print("{:<10} {:<9} {:>5} {:>5} {:>7} {:>7} {:>7}".format(*head))
    for name, path in PAGES.items():
        runs: dict[str, list[dict[str, float]]] = {b: [] for b in builds}
        for _ in range(RUNS):
            for build, url in builds.items():
                runs[build].append(lighthouse(url + path, await refresh_cookie(url, emails[build])))
        medians = {}
        for build, rs in runs.items():
            m = medians[build] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
            print(
                f"{name:<10} {build:<9} {m['performance']:>5.0f} {m['accessibility']:>5.0f} "
                f"{m['fcp_ms']:>7.0f} {m['lcp_ms']:>7.0f} {m['tbt_ms']:>7.0f}"
                f"   (performance per run: {[r['performance'] for r in rs]})"
            )
        if baseline is not None:
            b, c = medians["baseline"], medians["current"]
            ratios = ", ".join(
                f"{k} {c[k] / b[k]:.2f}x" for k in ("lcp_ms", "tbt_ms", "fcp_ms") if b[k]
            )
            print(f"{name:<10} current/baseline: {ratios}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print("targets: performance >= 90, accessibility >= 95")
    print("(performance, TBT above all, falls with the machine's load: Lighthouse runs the page")
    print(" on the shared CPU with its simulated 4x slowdown)")


def make_up_gateway() -> str | None:
    url = os.environ.get("PM_BENCH_DASHBOARD_URL", "http://127.0.0.1:8000")
    try:
        if httpx.get(f"{url}/dashboard/", timeout=2).status_code == 200:
            return url
    except httpx.HTTPError:
        pass
    return None


async def main() -> None:
    prepare()
    kb, scripts = first_load_js_gzip_kb()
    print(f"first-load JavaScript: {kb:.1f} kB gzip ({', '.join(scripts)}); target <= 200 kB")
    base = make_up_gateway()
    if base:
        await measure(base)
        return
    await fresh_database("keys")
    amqp_url = fresh_vhost()

    def stack(dist: Path | None = None) -> Any:
        return gateway_stack(
            keys_dsn=service_dsn("keys"),
            amqp_url=amqp_url,
            signing_key=SIGNING_KEY,
            upstreams={},
            scopes=["read_analytics"],
            gateway_env={"PM_DASHBOARD_DIR": str(dist)} if dist else None,
        )

    async with stack() as gw:
        if not BASELINE:
            await measure(gw.url)
            return
        async with stack(Path(BASELINE)) as base_gw:
            await measure(gw.url, base_gw.url)


if __name__ == "__main__":
    if not shutil.which("node"):
        raise SystemExit("bench/dashboard.py needs Node.js >= 20.19 (Lighthouse, the build)")
    asyncio.run(main())
