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
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import redis

from libs.common.db import migrate
from libs.common.provision import provision_database, provision_vault
from libs.common.signing_keys import public_keys_of
from tests.ports import free_port

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


# ---------------------------------------------------------------- Postgres connections

# Connections a benchmark must leave free on the shared Postgres for everyone else (dev
# stacks, test sessions, other benchmarks): docs/operations.md "Connection budget".
PG_HEADROOM = int(os.environ.get("BENCH_PG_HEADROOM", "30"))
# A one-shot command's sessions (migrate: the advisory-lock session + dbmate; set-plan).
COMMAND_SESSIONS = 2


class ConnectionBudgetError(RuntimeError):
    """The shared Postgres cannot hold this benchmark beside its other users."""


@dataclass(frozen=True)
class ConnectionBudget:
    """What a benchmark may hold at once: each spawned process's pool at its row of
    `libs.common.db.POOL_BUDGET` (the only place pool sizes come from), plus the benchmark's
    own sessions."""

    pools: dict[str, int]  # spawned process -> its pool max
    own: int  # this process's sessions (admin, explain, a command it runs)

    @classmethod
    def of(cls, processes: dict[str, str], own: int) -> ConnectionBudget:
        """`processes`: name -> process kind (`api`, `worker`, ...)."""
        from libs.common.db import pool_budget

        return cls({name: pool_budget(kind).max_size for name, kind in processes.items()}, own)

    @property
    def total(self) -> int:
        return sum(self.pools.values()) + self.own

    def describe(self) -> str:
        parts = [f"{name} {n}" for name, n in self.pools.items()]
        return f"{self.total} ({' + '.join([*parts, f'own sessions {self.own}'])})"


@dataclass(frozen=True)
class PgConnections:
    max_connections: int
    reserved: int  # superuser_reserved_connections
    used: int  # client backends now
    by_database: list[tuple[str, int]]  # the biggest users

    @property
    def free(self) -> int:
        return self.max_connections - self.reserved - self.used

    def describe(self) -> str:
        users = ", ".join(f"{db or '-'} {n}" for db, n in self.by_database[:6])
        return (
            f"{self.used} of {self.max_connections - self.reserved} in use"
            f" (max_connections {self.max_connections} - {self.reserved} reserved; by database:"
            f" {users})"
        )


async def pg_connections() -> PgConnections:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        row = await admin.fetchrow(
            "SELECT current_setting('max_connections')::int AS max,"
            " current_setting('superuser_reserved_connections')::int AS reserved"
        )
        users = await admin.fetch(
            "SELECT datname, count(*) AS n FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            " GROUP BY datname ORDER BY n DESC"
        )
    finally:
        await admin.close()
    assert row is not None
    used = sum(int(r["n"]) for r in users) + 1  # + this check's own session
    return PgConnections(
        row["max"], row["reserved"], used, [(r["datname"], int(r["n"])) for r in users]
    )


async def check_connection_budget(
    budget: ConnectionBudget, what: str, *, wait: float = 0.0
) -> PgConnections:
    """Refuse to start (ConnectionBudgetError, a message saying why and what to do) unless
    Postgres can hold `budget` and still leave PG_HEADROOM connections to its other users;
    waits up to `wait` seconds for them to free some first."""
    deadline = time.monotonic() + wait
    said = 0.0
    while True:
        try:
            now = await pg_connections()
        except asyncpg.TooManyConnectionsError as exc:
            raise ConnectionBudgetError(
                f"{what}: Postgres has no connection left even for a check ({exc})"
            ) from exc
        short = now.free - budget.total < PG_HEADROOM
        if not short or time.monotonic() >= deadline:
            break
        if time.monotonic() - said >= 30:
            print(
                f"  waiting for Postgres connections: {what} needs {budget.total} and leaves"
                f" {PG_HEADROOM} free; {now.describe()}",
                flush=True,
            )
            said = time.monotonic()
        await asyncio.sleep(5)
    if short:
        raise ConnectionBudgetError(
            f"{what} needs {budget.describe()} Postgres connections and must leave"
            f" {PG_HEADROOM} free (BENCH_PG_HEADROOM) for other users, but only {now.free} are"
            f" free (waited {wait:.0f} s, BENCH_PG_WAIT_SECONDS): {now.describe()}. Wait for"
            " other benchmarks or test runs to finish, or"
            " raise max_connections (docs/operations.md, Connection budget)."
        )
    return now


def is_out_of_connections(exc: BaseException) -> bool:
    """Postgres refused a connection for lack of slots (as asyncpg raises it)."""
    return isinstance(exc, asyncpg.TooManyConnectionsError) or (
        isinstance(exc, asyncpg.PostgresError)
        and getattr(exc, "sqlstate", None) in ("53300", "57P03")
    )


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


# ---------------------------------------------------------------- processes


REPO = Path(__file__).resolve().parents[1]
VAULT_TOKEN_FILE = REPO / ".dev" / "vault-root-token"
_VAULT_ADDR_FILE = REPO / ".dev" / "vault-addr"
# This checkout's OpenBao (`make infra` records its address: another checkout's may hold 8200).
VAULT_ADDR = os.environ.get("PM_BENCH_VAULT_ADDR") or (
    _VAULT_ADDR_FILE.read_text().strip() if _VAULT_ADDR_FILE.is_file() else "http://127.0.0.1:8200"
)


def spawn(args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
    """`python <args>` in the repository, its output in `.dev/bench-<name>.log`."""
    (REPO / ".dev").mkdir(exist_ok=True)
    log = (REPO / ".dev" / f"bench-{name}.log").open("w")
    return subprocess.Popen(
        [sys.executable, *args], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
    )


# How long a spawned process may take to answer: three processes starting at once on a busy
# 2-core machine took over 60 s (bench/events_stream.py stopped there); raise it further with
# BENCH_READY_SECONDS.
READY_SECONDS = float(os.environ.get("BENCH_READY_SECONDS", "180"))


def wait_ready(url: str, path: str = "/readyz") -> None:
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc): robust to other load on the host."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of a live process in MiB (/proc: VmRSS, VmHWM)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def peak_rss(pids: dict[str, int]) -> dict[str, float]:
    """Peak RSS (MiB) of each named live process, and of this benchmark process itself.
    Read it before the processes stop: the kernel keeps the peak only while they live."""
    import resource

    out: dict[str, float] = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            out[name] = rss_mib(pid)[1]
    out["bench (this process)"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def memory_line(peaks: dict[str, float]) -> str:
    return "peak RSS: " + ", ".join(f"{name} {mib:.0f} MiB" for name, mib in peaks.items())


def cpu_by_command(*names: str) -> dict[str, float]:
    """CPU seconds so far of every process whose command name starts with one of `names`
    (e.g. the `postgres` backends, RabbitMQ's `beam.smp`), summed per name."""
    totals = dict.fromkeys(names, 0.0)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
            for name in names:
                if comm.startswith(name):
                    totals[name] += cpu_seconds(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    return totals


@dataclass
class Gateway:
    url: str
    api_keys: list[str]
    tenant_id: str
    pids: dict[str, int]
    metrics_url: str  # the gateway serves /metrics on a port of its own

    @property
    def api_key(self) -> str:
        return self.api_keys[0]


@contextlib.asynccontextmanager
async def gateway_stack(
    *,
    keys_dsn: str,
    amqp_url: str,
    signing_key: str,  # the gateway's Ed25519 private key, `<kid>:<seed>`
    upstreams: dict[str, str],
    scopes: list[str],
    plan: str = "unlimited",
    key_count: int = 1,
    gateway_profile: Path | None = None,
    gateway_env: dict[str, str] | None = None,
) -> AsyncIterator[Gateway]:
    """A real keys api (bcrypt cost 12) and gateway in front of `upstreams` (`{"delivery":
    url}` sets `PM_DELIVERY_URL`), a tenant signed up through the gateway on `plan`, and
    `key_count` live API keys with `scopes`. `keys_dsn`'s database must have the keys schema
    migrated. `gateway_profile`: write a cProfile of the gateway there; `gateway_env`: more
    settings of the gateway. The stack's Redis keys are removed at exit."""
    role_id, secret_id = provision_vault(
        VAULT_ADDR, VAULT_TOKEN_FILE.read_text().strip(), ["keys"]
    )["keys"]
    ns = f"pmbench{os.getpid()}x{secrets.token_hex(3)}"  # two stacks may run in one process
    redis_url = "redis://127.0.0.1:6379/14"
    common = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PM_")},
        "PYTHONPATH": str(REPO),
        "PM_ENVIRONMENT": "test",
        "PM_LOG_LEVEL": "WARNING",
        "PM_AMQP_URL": amqp_url,
        "PM_REDIS_URL": redis_url,
        "PM_REDIS_NAMESPACE": ns,
        "PM_PRINCIPAL_PUBLIC_KEYS": public_keys_of(signing_key),
    }
    keys_env = {
        **common,
        "PM_DATABASE_URL": keys_dsn,
        "PM_VAULT_ADDR": VAULT_ADDR,
        "PM_VAULT_ROLE_ID": role_id,
        "PM_VAULT_SECRET_ID": secret_id,
        "PM_BCRYPT_ROUNDS": "12",
    }
    keys_url, gw_url = (f"http://127.0.0.1:{free_port()}" for _ in range(2))
    metrics_port = free_port()
    routes = {f"PM_{name.upper()}_URL": url for name, url in upstreams.items()}
    profile = ["-m", "cProfile", "-o", str(gateway_profile)] if gateway_profile else []
    procs = [
        spawn(
            ["-m", "services.keys", "api"],
            {**keys_env, "PM_HTTP_PORT": keys_url.rsplit(":", 1)[1]},
            "gateway-stack-keys",
        ),
        spawn(
            [*profile, "-m", "services.gateway", "api"],
            {
                **common,
                **routes,
                "PM_HTTP_PORT": gw_url.rsplit(":", 1)[1],
                "PM_KEYS_URL": keys_url,
                "PM_PRINCIPAL_PRIVATE_KEY": signing_key,
                "PM_METRICS_PORT": str(metrics_port),
                **(gateway_env or {}),
            },
            "gateway-stack-gateway",
        ),
    ]
    try:
        wait_ready(keys_url)
        wait_ready(gw_url)
        async with httpx.AsyncClient(timeout=30) as client:
            account = {"email": f"{ns}@example.com", "password": "bench pass 123", "company": "B"}
            signup = await client.post(f"{gw_url}/api/v1/auth/signup", json=account)
            signup.raise_for_status()
            owner = signup.json()["data"]
            tenant_id = owner["tenant"]["id"]
            subprocess.run(
                [sys.executable, "-m", "services.keys", "set-plan", tenant_id, plan],
                cwd=REPO,
                env=keys_env,
                capture_output=True,
                check=True,
            )
            api_keys = []
            for i in range(key_count):
                created = await client.post(
                    f"{gw_url}/api/v1/platform/api-keys",
                    json={"name": f"bench {i}", "scopes": scopes},
                    headers={"Authorization": f"Bearer {owner['access_token']}"},
                )
                created.raise_for_status()
                api_keys.append(created.json()["data"]["key"])
        pids = {"keys": procs[0].pid, "gateway": procs[1].pid}
        yield Gateway(gw_url, api_keys, tenant_id, pids, f"http://127.0.0.1:{metrics_port}/metrics")
    finally:
        stop(procs)
        leftovers = redis.Redis.from_url(redis_url)
        for name in leftovers.scan_iter(match=f"{ns}:*", count=1000):
            leftovers.delete(name)
        leftovers.close()
