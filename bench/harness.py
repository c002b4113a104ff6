"""What every benchmark needs: scratch infrastructure of its own and honest statistics.

Benchmarks run against the real local Postgres and RabbitMQ, in database `pm_bench` and
vhost `pm_bench`, recreated per run so a dev stack or test run is not disturbed. They print
ratios against a baseline measured in the same run: absolute numbers drift on shared
machines, ratios much less.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess

import asyncpg

from libs.common.db import migrate
from libs.common.provision import provision_database

ADMIN_DSN = os.environ.get("PM_BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
BENCH_DB = "pm_bench"
BENCH_VHOST = "pm_bench"
AMQP_BASE = os.environ.get("PM_BENCH_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")


def service_dsn(service: str) -> str:
    host = ADMIN_DSN.split("@", 1)[1].split("/", 1)[0]
    return f"postgresql://pm_{service}@{host}/{BENCH_DB}"


async def fresh_database(*services: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", BENCH_DB
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{BENCH_DB}"')
    finally:
        await admin.close()
    await provision_database(ADMIN_DSN, database=BENCH_DB)
    for svc in services:
        migrate(svc, service_dsn(svc))


def fresh_vhost() -> str:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    subprocess.run([exe, "-q", "delete_vhost", BENCH_VHOST], capture_output=True, check=False)
    subprocess.run([exe, "-q", "add_vhost", BENCH_VHOST], capture_output=True, check=True)
    subprocess.run(
        [exe, "-q", "set_permissions", "-p", BENCH_VHOST, "guest", ".*", ".*", ".*"],
        capture_output=True,
        check=True,
    )
    return f"{AMQP_BASE}/{BENCH_VHOST}"


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 50) * 1000:.1f} ms, p95 {percentile(values, 95) * 1000:.1f} ms,"
        f" p99 {percentile(values, 99) * 1000:.1f} ms, mean {statistics.fmean(values) * 1000:.1f} ms"
    )


def verdict(name: str, ratio: float, target: float) -> str:
    return f"{name}: {ratio:.2f}x (target >= {target}x) {'OK' if ratio >= target else 'BELOW TARGET'}"
