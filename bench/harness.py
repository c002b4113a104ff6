"""What every benchmark needs: scratch infrastructure of its own and honest statistics.

Benchmarks run against the real local Postgres and RabbitMQ, in a database and vhost of
their own (`pm_bench_<pid>`), so a dev stack, a test run or another benchmark is not
disturbed; both are removed when the benchmark exits. They print
ratios against a baseline measured in the same run: absolute numbers drift on shared
machines, ratios much less.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import statistics
import subprocess

import asyncpg

from libs.common.db import migrate
from libs.common.provision import provision_database

ADMIN_DSN = os.environ.get("PM_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
BENCH_DB = f"pm_bench_{os.getpid()}"
BENCH_VHOST = BENCH_DB
AMQP_BASE = os.environ.get("PM_BENCH_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")


def service_dsn(service: str) -> str:
    host = ADMIN_DSN.split("@", 1)[1].split("/", 1)[0]
    return f"postgresql://pm_{service}@{host}/{BENCH_DB}"


async def fresh_database(*services: str) -> None:
    await _drop_database()
    atexit.register(_cleanup_database)
    await provision_database(ADMIN_DSN, database=BENCH_DB)
    for svc in services:
        migrate(svc, service_dsn(svc))


def _rabbitmqctl(*args: str, check: bool = True) -> None:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([exe, "-q", *args], capture_output=True, check=check)


async def _drop_database() -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", BENCH_DB
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}"')
    finally:
        await admin.close()


def _cleanup_database() -> None:
    """Drop this run's database at exit (registered by fresh_database)."""
    with contextlib.suppress(OSError, asyncpg.PostgresError, RuntimeError):
        asyncio.run(_drop_database())


def fresh_vhost() -> str:
    _rabbitmqctl("delete_vhost", BENCH_VHOST, check=False)
    _rabbitmqctl("add_vhost", BENCH_VHOST)
    atexit.register(_rabbitmqctl, "delete_vhost", BENCH_VHOST, check=False)
    _rabbitmqctl("set_permissions", "-p", BENCH_VHOST, "guest", ".*", ".*", ".*")
    return f"{AMQP_BASE}/{BENCH_VHOST}"


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: list[float]) -> str:
    p50, p95, p99 = (percentile(values, p) * 1000 for p in (50, 95, 99))
    mean = statistics.fmean(values) * 1000
    return f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms, mean {mean:.1f} ms"


def verdict(name: str, ratio: float, target: float) -> str:
    status = "OK" if ratio >= target else "BELOW TARGET"
    return f"{name}: {ratio:.2f}x (target >= {target}x) {status}"
