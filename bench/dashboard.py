"""Dashboard benchmark (not a test): Lighthouse (npm `lighthouse`, Debian's chromium) on the
API keys and webhooks pages, and the first-load JavaScript of the built app in kB gzip.

Targets (issue 18): performance >= 90, accessibility >= 95, first-load JS <= 200 kB gzip.

It measures the gateway of `make up` (http://127.0.0.1:8000) when that answers, or
PM_BENCH_DASHBOARD_URL; otherwise it starts its own keys api and gateway (the webhooks page
then shows its "service unavailable" notice, which is still a full render of the page). A
fresh user signs up, owns one API key, and each Lighthouse run gets a session of its own
through the refresh cookie (sent as an extra header): the page loads as a returning user's.

    uv run python -m bench.dashboard
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

import httpx

from bench.harness import (
    REPO,
    fresh_database,
    fresh_vhost,
    gateway_stack,
    service_dsn,
)

LIGHTHOUSE_DIR = REPO / "bench" / "lighthouse"
LIGHTHOUSE = LIGHTHOUSE_DIR / "node_modules" / ".bin" / "lighthouse"
DIST = REPO / "web" / "dashboard" / "dist"
CHROMIUM = "/usr/bin/chromium"
PAGES = {
    "api keys": "/dashboard/settings/developers/api-keys",
    "webhooks": "/dashboard/settings/webhooks",
}
PASSWORD = "bench dashboard password"
SIGNING_KEY = "bench-dashboard-principal-key-0123456789abcdef"
RUNS = int(os.environ.get("BENCH_DASHBOARD_RUNS", "3"))


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


async def measure(base: str) -> None:
    email = await account(base)
    print(f"dashboard at {base}/dashboard/; {RUNS} Lighthouse runs per page, median shown")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'page':<10} {'perf':>5} {'a11y':>5} {'FCP ms':>7} {'LCP ms':>7} {'TBT ms':>7}")
    for name, path in PAGES.items():
        runs = [lighthouse(base + path, await refresh_cookie(base, email)) for _ in range(RUNS)]
        m = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"{name:<10} {m['performance']:>5.0f} {m['accessibility']:>5.0f} "
            f"{m['fcp_ms']:>7.0f} {m['lcp_ms']:>7.0f} {m['tbt_ms']:>7.0f}"
            f"   (performance per run: {[r['performance'] for r in runs]})"
        )
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
    async with gateway_stack(
        keys_dsn=service_dsn("keys"),
        amqp_url=fresh_vhost(),
        signing_key=SIGNING_KEY,
        upstreams={},
        scopes=["read_analytics"],
    ) as gw:
        await measure(gw.url)


if __name__ == "__main__":
    if not shutil.which("node"):
        raise SystemExit("bench/dashboard.py needs Node.js >= 20.19 (Lighthouse, the build)")
    asyncio.run(main())
