"""The API at a real customer's scale: p50/p95/p99 per endpoint at 10k, 100k and 1M
contacts through a real gateway, how cost grows from 100k to 1M, and each query's plan shape.

Seed (issue 21), cached between runs: one database `pm_bench_scale_<hash>` (the hash covers
the migrations of the seeded services and this seed's version) holding three "scale" tenants
of 10,000, 100,000 and 1,000,000 contacts and 1,000 small tenants of 50 contacts:
- contacts (COPY from here): 0-3 tags from 20 (skewed: `newsletter` on half, `vip` on ~3 %),
  custom fields `plan` (free 60 %, pro 30 %, enterprise 10 %), `country` (20), `score`;
  statuses 93 % active, 4 % unsubscribed, 2.5 % bounced, 0.5 % complained; created over two
  years;
- one campaign per 5,000 contacts (200 at 1M) and `EVENTS_PER_CONTACT` (10) email events per
  contact (10,000,000 at 1M: sent, delivered/bounced, opens, clicks, replies; four events per
  message), their sends and recipients, the pre-aggregated analytics the migrations keep;
- delivery: one message per contact in bulk batches of 1,000, statuses like a real mailbox;
- webhooks: one endpoint per tenant, one logged delivery per contact.
The big tables are loaded without their secondary indexes, which are then rebuilt (what a
restore does); the first seeding's time is printed and kept in the database. The seed is
rebuilt when a migration or the seed changes (the old one is dropped). The run only reads it.

Drive: campaigns, delivery and webhooks APIs on the seeded database behind a real keys api and
gateway (`bench.harness.gateway_stack`); every scale tenant signs up through the gateway on the
internal `unlimited` plan (so limits don't shape figures) and is then given the seeded tenant's
id (keys database and Vault, before its key's first use). Each endpoint: `REQUESTS` requests at
concurrency `CONCURRENCY`, after a warm-up. Then EXPLAIN of each endpoint's SQL, captured from
the services' own repository functions (`PlanCapture`), one line per statement.

Targets (issue 21): p95 <= 200 ms at 1M for every endpoint; 1M/100k p95 growth <= 1.5x except
the documented deep offsets.

Run: `uv run python -m bench.scale` (or `make bench-scale`). BENCH_SCALE_FACTOR=0.01 seeds a
hundredth (a smoke run); BENCH_SCALE_ONLY=<name part>,... drives only matching endpoints.
Besides HTTP latency, each endpoint's database time is printed: the sum of its statements'
EXPLAIN ANALYZE execution times (best of BENCH_SCALE_EXPLAIN_RUNS), which the load other
processes put on a shared machine distorts far less than latency through four processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import asyncpg
import httpx
import orjson

from bench import harness
from bench.harness import (
    ADMIN_DSN,
    COMMAND_SESSIONS,
    REPO,
    VAULT_ADDR,
    VAULT_TOKEN_FILE,
    ConnectionBudget,
    ConnectionBudgetError,
    check_connection_budget,
    free_port,
    fresh_database,
    fresh_vhost,
    gateway_stack,
    is_out_of_connections,
    percentile,
    pg_connections,
    spawn,
    stop,
    wait_ready,
)
from libs.common.db import migrate, migrations_dirs
from libs.common.pagination import ListParams, encode_cursor
from libs.common.provision import provision_database
from libs.common.signing_keys import generate_private_key, public_keys_of
from libs.common.tenancy import TenantScope

SEED_VERSION = "1"
FACTOR = float(os.environ.get("BENCH_SCALE_FACTOR", "1"))
EVENTS_PER_CONTACT = int(os.environ.get("BENCH_SCALE_EVENTS_PER_CONTACT", "10"))
CONCURRENCY = int(os.environ.get("BENCH_SCALE_CONCURRENCY", "16"))
REQUESTS = int(os.environ.get("BENCH_SCALE_REQUESTS", "96"))
# BENCH_SCALE_HTTP=0: database times and plans only (no processes, no HTTP).
HTTP = os.environ.get("BENCH_SCALE_HTTP", "1") != "0"
EXPLAIN_RUNS = int(os.environ.get("BENCH_SCALE_EXPLAIN_RUNS", "3"))
ONLY = [s for s in os.environ.get("BENCH_SCALE_ONLY", "").split(",") if s]
SERVICES = ("campaigns", "delivery", "webhooks")
# Postgres connections the run holds at most (docs/operations.md, Connection budget): each
# service's api pool and the keys api's at their POOL_BUDGET row (the gateway has no
# database), one session for probes and EXPLAIN, one sampling pg_stat_activity, and a
# command's (migrate, set-plan). Checked before anything starts: the run refuses to start
# rather than die midway when the shared server cannot hold it and leave
# harness.PG_HEADROOM (30) connections to everyone else.
RUN_BUDGET = ConnectionBudget.of(
    {**{f"{svc} api": "api" for svc in (*SERVICES, "keys")}}, own=2 + COMMAND_SESSIONS
)
# Seeding alone: its one loading session and a migrate's.
SEED_BUDGET = ConnectionBudget.of({}, own=1 + COMMAND_SESSIONS)
# How long to wait for other users to free connections before refusing to start.
PG_WAIT_SECONDS = float(os.environ.get("BENCH_PG_WAIT_SECONDS", "300"))
SCALES = [("10k", 10_000), ("100k", 100_000), ("1M", 1_000_000)]
SMALL_TENANTS = max(10, int(1000 * min(FACTOR, 1)))
SMALL_CONTACTS = 50
CONTACTS_PER_CAMPAIGN = 5_000
BATCH = 1_000
SIGNING_KEY = generate_private_key()
CURSOR_KEY = "bench-scale-cursor-key-0123456789abcdef0123456789"
TAGS = [
    "newsletter",
    "customer",
    "lead",
    "webinar",
    "trial",
    "partner",
    "churned",
    "beta",
    "enterprise",
    "vip",
    *(f"segment{i}" for i in range(10)),
]
COUNTRIES = [
    "US",
    "GB",
    "DE",
    "FR",
    "ES",
    "IT",
    "NL",
    "SE",
    "PL",
    "BR",
    "CA",
    "AU",
    "JP",
    "IN",
    "MX",
    "AR",
    "ZA",
    "NG",
    "KR",
    "PT",
]
FIRST = ["Ada", "Alan", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Radia", "Guido"]
LAST = ["Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie"]
NOW = datetime(2026, 11, 1, tzinfo=UTC)  # seeded timelines end here; periods reach past it


def scaled(n: int) -> int:
    return max(1_000, int(n * FACTOR))


@dataclass(frozen=True)
class Tenant:
    number: int  # the high 64 bits of its deterministic uuids
    label: str
    contacts: int

    @property
    def id(self) -> str:
        return (
            f"ten_benchscale{self.label.lower()}" if self.number < 100 else f"ten_bs{self.number}"
        )

    @property
    def campaigns(self) -> int:
        return max(2, self.contacts // CONTACTS_PER_CAMPAIGN)


def scale_tenants() -> list[Tenant]:
    return [Tenant(i + 1, label, scaled(n)) for i, (label, n) in enumerate(SCALES)]


def small_tenants() -> list[Tenant]:
    return [Tenant(100 + i, f"s{i}", SMALL_CONTACTS) for i in range(SMALL_TENANTS)]


def contact_uuid(t: int, i: int) -> UUID:
    return UUID(int=(t << 64) | i)


def campaign_uuid(t: int, c: int) -> UUID:
    return UUID(int=(t << 64) | (0xC << 60) | c)


# SQL spellings of the same ids (t, i: integer expressions).
def _sql_uuid(t: str, i: str, tag: str = "") -> str:
    width = 16 - len(tag)
    return f"(lpad(to_hex({t}), 16, '0') || '{tag}' || lpad(to_hex({i}), {width}, '0'))::uuid"


def migration_hashes() -> dict[str, str]:
    """Every migration file of the seeded services -> its SHA-256."""
    return {
        f"{svc}/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest()
        for svc in SERVICES
        for d in migrations_dirs(svc)
        for f in sorted(d.glob("*.sql"))
    }


def seed_digest(migrations: dict[str, str]) -> str:
    h = hashlib.sha256(f"{SEED_VERSION}:{FACTOR}:{EVENTS_PER_CONTACT}".encode())
    h.update(orjson.dumps(migrations, option=orjson.OPT_SORT_KEYS))
    h.update((REPO / "bench" / "scale_seed.sql").read_bytes())
    return h.hexdigest()[:12]


def seed_input_digest() -> str:
    """What the seeded rows depend on besides the schema and FACTOR (version and shape)."""
    h = hashlib.sha256(f"{SEED_VERSION}:{EVENTS_PER_CONTACT}".encode())
    h.update((REPO / "bench" / "scale_seed.sql").read_bytes())
    return h.hexdigest()[:12]


def admin_dsn(database: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + database


def role_dsn(service: str, database: str) -> str:
    host = ADMIN_DSN.split("@", 1)[1].split("/", 1)[0]
    return f"postgresql://pm_{service}@{host}/{database}"


# ---------------------------------------------------------------- seeding


def contact_records(t: Tenant) -> Iterator[tuple[Any, ...]]:
    rnd = random.Random(t.number)
    span = 730 * 86400
    start = NOW - timedelta(days=730)
    for i in range(t.contacts):
        r = rnd.random()
        status = (
            "active"
            if r < 0.93
            else "unsubscribed"
            if r < 0.97
            else "bounced"
            if r < 0.995
            else "complained"
        )
        tags = [tag for k, tag in enumerate(TAGS) if rnd.random() < 0.5 / (k + 1) ** 1.1][:3]
        p = rnd.random()
        fields = {
            "plan": "free" if p < 0.6 else "pro" if p < 0.9 else "enterprise",
            "country": COUNTRIES[rnd.randrange(20)],
            "score": rnd.randrange(100),
        }
        created = start + timedelta(seconds=span * i / t.contacts + rnd.random())
        updated = created + timedelta(seconds=rnd.randrange(0, 86400 * 60))
        yield (
            contact_uuid(t.number, i),
            t.id,
            "live",
            f"user{i}@d{i % 5000}.example.com",
            FIRST[i % len(FIRST)],
            LAST[i % len(LAST)],
            f"Company {i % 20000}",
            tags,
            fields,
            status,
            created,
            min(updated, NOW),
        )


@dataclass
class Seeded:
    database: str
    seconds: float
    counts: dict[str, int]


async def _secondary_indexes(conn: asyncpg.Connection, schema: str, table: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.schemaname = $1"
        " AND i.tablename = $2 AND NOT EXISTS (SELECT 1 FROM pg_constraint c"
        " WHERE c.conindid = (quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))"
        "::regclass)",
        schema,
        table,
    )
    for r in rows:
        await conn.execute(f'DROP INDEX "{schema}"."{r["indexname"]}"')
    return [r["indexdef"] for r in rows]


async def seed(database: str) -> Seeded:
    await provision_database(ADMIN_DSN, database=database)
    for svc in SERVICES:
        migrate(svc, role_dsn(svc, database))
    conn = await asyncpg.connect(admin_dsn(database))
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda v: b"\x01" + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]),
        format="binary",
    )
    await conn.execute("SET maintenance_work_mem = '256MB'; SET synchronous_commit = off")
    started = time.perf_counter()
    tenants = scale_tenants() + small_tenants()
    big = [
        ("campaigns", "contacts"),
        ("campaigns", "email_events"),
        ("campaigns", "campaign_sends"),
        ("campaigns", "campaign_recipients"),
        ("delivery", "messages"),
        ("webhooks", "deliveries"),
    ]
    dropped = {key: await _secondary_indexes(conn, *key) for key in big}
    # Row triggers (the analytics rollup's) off during the bulk load; SEED_BACKFILLS after.
    for schema, table in big:
        await conn.execute(f'ALTER TABLE "{schema}"."{table}" DISABLE TRIGGER USER')
    print(f"  seeding {len(tenants)} tenants into {database} ...", flush=True)
    t0 = time.perf_counter()
    for t in tenants:
        await conn.copy_records_to_table(
            "contacts",
            schema_name="campaigns",
            records=contact_records(t),
            columns=[
                "id",
                "tenant_id",
                "mode",
                "email",
                "first_name",
                "last_name",
                "company",
                "tags",
                "custom_fields",
                "status",
                "created_at",
                "updated_at",
            ],
        )
    print(f"    contacts COPY: {time.perf_counter() - t0:.0f} s", flush=True)
    # Everything else is derived from the contacts server-side (bench/scale_seed.sql):
    # generating 10M rows here and COPYing them costs several times the CPU.
    script = (REPO / "bench" / "scale_seed.sql").read_text()
    for t in tenants:
        t0 = time.perf_counter()
        await conn.execute(
            script.replace("@TN@", str(t.number))
            .replace("@TID@", f"'{t.id}'")
            .replace("@N@", str(t.contacts))
            .replace("@C@", str(t.campaigns))
            .replace("@E@", str(t.contacts * EVENTS_PER_CONTACT))
            .replace("@BATCH@", str(BATCH))
            .replace("@NOW@", f"'{NOW.isoformat()}'::timestamptz")
        )
        if t.number < 100:
            print(f"    tenant {t.label}: {time.perf_counter() - t0:.0f} s", flush=True)
    for (schema, table), defs in dropped.items():
        t0 = time.perf_counter()
        for d in defs:
            await conn.execute(d)
        print(f"    indexes of {schema}.{table}: {time.perf_counter() - t0:.0f} s", flush=True)
    # Pre-aggregated read models the migrations keep (kept by the consumers at run time).
    for schema, table in big:
        await conn.execute(f'ALTER TABLE "{schema}"."{table}" ENABLE TRIGGER USER')
    for backfill in SEED_BACKFILLS.values():
        await conn.execute(backfill)
    for schema, table in big:
        await conn.execute(f'VACUUM ANALYZE "{schema}"."{table}"')
    await conn.execute("VACUUM ANALYZE")
    seconds = time.perf_counter() - started
    counts = {
        f"{s}.{t}": await conn.fetchval(f'SELECT count(*) FROM "{s}"."{t}"')
        for s, t in [*big, ("campaigns", "campaigns"), ("delivery", "batches")]
    }
    await conn.execute(
        "CREATE TABLE public.bench_seed (seconds float8, counts jsonb, done_at timestamptz,"
        " inputs text, migrations jsonb, factor float8)"
    )
    await conn.execute(
        "INSERT INTO public.bench_seed VALUES ($1, $2, now(), $3, $4, $5)",
        seconds,
        counts,
        seed_input_digest(),
        migration_hashes(),
        FACTOR,
    )
    await conn.close()
    return Seeded(database, seconds, counts)


# Statements that fill pre-aggregated tables from the bulk-loaded facts (the migrations that
# add them backfill existing rows themselves, which is what a cached seed being upgraded
# runs; a fresh seed migrates before loading, so it calls the same backfill after).
SEED_BACKFILLS: dict[str, str] = {
    "campaigns/000200_email_event_rollup.sql": (
        "SET search_path TO campaigns; SELECT rebuild_email_event_rollup(); RESET search_path"
    ),
}


async def ensure_seed() -> tuple[Seeded, str]:
    """The cached seed database: as it is when nothing changed; brought up to date in place
    when migrations were only added (they run on the seeded data, as in production, and
    `SEED_BACKFILLS` fill what they add); else built again (the old one dropped)."""
    migrations = migration_hashes()
    database = f"pm_bench_scale_{seed_digest(migrations)}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        others = [
            r["datname"]
            for r in await admin.fetch(
                "SELECT datname FROM pg_database WHERE datname ~ '^pm_bench_scale_[0-9a-f]{12}$'"
            )
        ]
        for name in sorted(others, key=lambda n: n != database):
            try:
                meta = await asyncpg.connect(admin_dsn(name))
                try:
                    row = await meta.fetchrow(
                        "SELECT seconds, counts, inputs, migrations, factor FROM public.bench_seed"
                    )
                finally:
                    await meta.close()
            except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError):
                row = None  # an interrupted (or older) seeding
            if row is not None and row["factor"] != FACTOR:
                continue  # another scale's seed (BENCH_SCALE_FACTOR): kept for its runs
            if row is not None and name == database:
                return Seeded(database, row["seconds"], orjson.loads(row["counts"])), "cached"
            # Another run is seeding it (no bench_seed row yet) or driving on it: never
            # terminate it. Only a seed nobody uses is upgraded or dropped.
            in_use = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", name
            )
            if in_use:
                if row is None and name == database:
                    raise RuntimeError(
                        f"{name} is being seeded by another run: wait for it to finish"
                    )
                print(f"  leaving {name} alone: {in_use} session(s) of another run use it")
                continue
            applied = orjson.loads(row["migrations"]) if row is not None else {}
            upgradable = (
                row is not None
                and row["inputs"] == seed_input_digest()
                and all(migrations.get(k) == v for k, v in applied.items())
                and database not in others
            )
            if upgradable:
                print(f"  {name}: applying the new migrations to the cached seed")
                t0 = time.perf_counter()
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                    name,
                )
                await admin.execute(f'ALTER DATABASE "{name}" RENAME TO "{database}"')
                others.append(database)
                for svc in SERVICES:
                    migrate(svc, role_dsn(svc, database))
                conn = await asyncpg.connect(admin_dsn(database))
                try:
                    await conn.execute("VACUUM ANALYZE")
                    await conn.execute(
                        "UPDATE public.bench_seed SET migrations = $1::jsonb",
                        orjson.dumps(migrations).decode(),
                    )
                finally:
                    await conn.close()
                print(f"  migrated in {time.perf_counter() - t0:.0f} s")
                return (
                    Seeded(database, row["seconds"], orjson.loads(row["counts"])),  # type: ignore[index]
                    "upgraded",
                )
            print(f"  dropping the outdated seed {name}")
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
            )
            await admin.execute(f'DROP DATABASE "{name}"')
    finally:
        await admin.close()
    return await seed(database), "seeded"


# ---------------------------------------------------------------- the tenants' keys


async def adopt_tenant(keys_dsn: str, signed_up: str, seeded: str) -> None:
    """Give the tenant that signed up through the gateway the seeded tenant's id (keys
    database rows and the Vault paths of its API key hashes), on the `unlimited` plan."""
    import hvac

    conn = await asyncpg.connect(keys_dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                "CREATE TEMPORARY TABLE adopted ON COMMIT DROP AS SELECT * FROM tenants"
                " WHERE id = $1",
                signed_up,
            )
            await conn.execute("UPDATE adopted SET id = $1, plan = 'unlimited'", seeded)
            await conn.execute("INSERT INTO tenants SELECT * FROM adopted")
            tables = await conn.fetch(
                "SELECT table_name FROM information_schema.columns WHERE table_schema = 'keys'"
                " AND column_name = 'tenant_id' AND table_name <> 'tenants'"
            )
            for r in tables:
                await conn.execute(
                    f'UPDATE "{r["table_name"]}" SET tenant_id = $1 WHERE tenant_id = $2',
                    seeded,
                    signed_up,
                )
            await conn.execute("DELETE FROM tenants WHERE id = $1", signed_up)
            key_ids = [
                r["id"]
                for r in await conn.fetch("SELECT id FROM api_keys WHERE tenant_id = $1", seeded)
            ]
    finally:
        await conn.close()
    vault = hvac.Client(url=VAULT_ADDR, token=VAULT_TOKEN_FILE.read_text().strip())
    for key_id in key_ids:
        kv = vault.secrets.kv.v2
        data = kv.read_secret_version(
            path=f"{signed_up}/{key_id}", mount_point="api_keys", raise_on_deleted_version=True
        )["data"]["data"]
        kv.create_or_update_secret(path=f"{seeded}/{key_id}", secret=data, mount_point="api_keys")


async def signup_key(
    client: httpx.AsyncClient, gw: str, scopes: list[str], n: int
) -> tuple[str, str]:
    account = {
        "email": f"scale{n}.{os.getpid()}@example.com",
        "password": "bench pass 123",
        "company": "S",
    }
    owner = (await client.post(f"{gw}/api/v1/auth/signup", json=account)).raise_for_status().json()
    token = owner["data"]["access_token"]
    created = await client.post(
        f"{gw}/api/v1/platform/api-keys",
        json={"name": "scale", "scopes": scopes},
        headers={"Authorization": f"Bearer {token}"},
    )
    return owner["data"]["tenant"]["id"], created.raise_for_status().json()["data"]["key"]


# ---------------------------------------------------------------- plans


class PlanCapture:
    """Stands in for a pool: runs each statement for real and records its EXPLAIN."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.plans: list[tuple[str, dict[str, Any]]] = []

    async def _explain(self, sql: str, args: tuple[Any, ...]) -> None:
        raw = await self.conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
        plan = (orjson.loads(raw) if isinstance(raw, str) else raw)[0]
        self.plans.append((sql, plan))

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        await self._explain(sql, args)
        return await self.conn.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        await self._explain(sql, args)
        return await self.conn.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        await self._explain(sql, args)
        return await self.conn.fetchval(sql, *args)

    def acquire(self) -> Any:
        capture = self

        class _Acquired:
            async def __aenter__(self) -> PlanCapture:
                return capture

            async def __aexit__(self, *exc: object) -> None:
                return None

        return _Acquired()


def plan_shape(plan: dict[str, Any]) -> str:
    """`Index Only Scan email_events_rollup_pk`, `Seq Scan contacts`, ... of the scan nodes."""
    scans: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind = node["Node Type"]
        if "Scan" in kind and kind not in ("Subquery Scan", "Function Scan", "Values Scan"):
            target = node.get("Index Name") or node.get("Relation Name") or ""
            scans.append(f"{kind} {target}".strip())
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return ", ".join(dict.fromkeys(scans)) or plan["Plan"]["Node Type"]


# ---------------------------------------------------------------- the endpoints


@dataclass
class Probe:
    name: str
    paths: list[str]  # rotated over the requests
    explain: Callable[[PlanCapture], Awaitable[Any]] | None = None
    deep_offset: bool = False
    latencies: dict[str, list[float]] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=dict)
    db_ms: dict[str, float] = field(default_factory=dict)  # EXPLAIN ANALYZE, best run


async def probes_for(conn: asyncpg.Connection, t: Tenant) -> list[Probe]:
    """The endpoints and their paths for tenant `t`; EXPLAIN hooks call the services' own
    repository/service functions with the same arguments the routes build."""
    from services.campaigns import repository as crepo
    from services.campaigns import service as csvc
    from services.delivery import repository as drepo
    from services.webhooks import repository as wrepo

    owner = TenantScope(t.id, "live")
    flt = crepo.ContactFilter
    rnd = random.Random(t.number)
    n = t.contacts
    deep = n // 2
    deep_row = await conn.fetchrow(
        "SELECT created_at, id FROM campaigns.contacts WHERE tenant_id = $1 AND mode = 'live'"
        " ORDER BY created_at DESC, id::text DESC OFFSET $2 LIMIT 1",
        t.id,
        deep,
    )
    deep_cursor = encode_cursor(deep_row["created_at"], deep_row["id"], sort="created_at:desc")
    first = await conn.fetchrow(
        "SELECT created_at, id FROM campaigns.contacts WHERE tenant_id = $1 AND mode = 'live'"
        " ORDER BY created_at DESC, id::text DESC OFFSET 49 LIMIT 1",
        t.id,
    )
    page2_cursor = encode_cursor(first["created_at"], first["id"], sort="created_at:desc")
    emails = [f"user{i}@d{i % 5000}.example.com" for i in (rnd.randrange(n) for _ in range(16))]
    campaigns = [str(campaign_uuid(t.number, rnd.randrange(t.campaigns))) for _ in range(16)]
    batches = [f"bat_{t.number}_{rnd.randrange(max(1, n // BATCH))}" for _ in range(16)]
    endpoint = f"ep_{t.number}"

    def contacts(q: dict[str, Any], f: crepo.ContactFilter, **lp: Any) -> Probe:
        params = ListParams(limit=int(q.get("limit", 50)), **lp)
        query = urlencode(q, doseq=True)
        return Probe(
            "",
            [f"/api/v1/contacts?{query}"],
            lambda pc: crepo.list_contacts(pc, owner, f, params),  # type: ignore[arg-type]
        )

    def named(name: str, p: Probe, deep_offset: bool = False) -> Probe:
        p.name = name
        p.deep_offset = deep_offset
        return p

    one = contact_uuid(t.number, rnd.randrange(n))
    # Periods run back from today; the seeded timeline ends at NOW: reach its last days.
    behind = max(0, (datetime.now(UTC).date() - NOW.date()).days)
    week, month = (f"{min(90, behind + d)}d" for d in (7, 30))
    probes = [
        Probe(
            "baseline: contact by id",
            [f"/api/v1/contacts/{contact_uuid(t.number, rnd.randrange(n))}" for _ in range(16)],
            lambda pc: crepo.get_contact(pc, owner, one),  # type: ignore[arg-type]
        ),
        named("contacts newest", contacts({}, flt())),
        named(
            "contacts sort updated_at",
            contacts({"sort_by": "updated_at"}, flt(), sort_by="updated_at"),
        ),
        named(
            "contacts sort email asc",
            contacts({"sort_by": "email", "order": "asc"}, flt(), sort_by="email", order="asc"),
        ),
        named(
            "contacts created_at asc",
            contacts({"order": "asc"}, flt(), order="asc"),
        ),
        named(
            "contacts status=unsubscribed",
            contacts({"status": "unsubscribed"}, flt(status="unsubscribed")),
        ),
        named("contacts status=active", contacts({"status": "active"}, flt(status="active"))),
        named("contacts tag=newsletter", contacts({"tag": "newsletter"}, flt(tags=["newsletter"]))),
        named("contacts tag=vip", contacts({"tag": "vip"}, flt(tags=["vip"]))),
        named(
            "contacts tag=vip&tag=newsletter",
            contacts({"tag": ["vip", "newsletter"]}, flt(tags=["vip", "newsletter"])),
        ),
        named(
            "contacts custom_field plan:enterprise",
            contacts(
                {"custom_field": "plan:enterprise"},
                flt(custom_fields=csvc.parse_custom_field_filters(["plan:enterprise"])),
            ),
        ),
        named(
            "contacts created window (30 d)",
            contacts(
                {
                    "created_after": (NOW - timedelta(days=60)).isoformat(),
                    "created_before": (NOW - timedelta(days=30)).isoformat(),
                },
                flt(
                    created_after=NOW - timedelta(days=60), created_before=NOW - timedelta(days=30)
                ),
            ),
        ),
        named(
            "contacts custom_field (no match)",
            contacts(
                {"custom_field": "plan:platinum"},
                flt(custom_fields=csvc.parse_custom_field_filters(["plan:platinum"])),
            ),
        ),
        named("contacts offset=1000", contacts({"offset": 1000}, flt(), offset=1000)),
        named(
            "contacts deep offset (half way)",
            contacts({"offset": deep}, flt(), offset=deep),
            deep_offset=True,
        ),
        named(
            "contacts cursor page 2",
            contacts({"cursor": page2_cursor}, flt(), cursor=page2_cursor),
        ),
        named(
            "contacts deep cursor (half way)",
            contacts({"cursor": deep_cursor}, flt(), cursor=deep_cursor),
        ),
        Probe(
            "contact by email",
            [f"/api/v1/contacts?{urlencode({'email': e})}" for e in emails],
            lambda pc: crepo.list_contacts(
                pc,
                owner,
                flt(email=emails[0]),
                ListParams(limit=50),  # type: ignore[arg-type]
            ),
        ),
        Probe(
            f"campaign analytics period={month} (last 30 seeded days)",
            [f"/api/v1/analytics/campaigns/{c}?period={month}" for c in campaigns],
            lambda pc: csvc.campaign_analytics(pc, owner, UUID(campaigns[0]), month),  # type: ignore[arg-type]
        ),
        Probe(
            "campaign analytics lifetime",
            [f"/api/v1/analytics/campaigns/{c}" for c in campaigns],
            lambda pc: csvc.campaign_analytics(pc, owner, UUID(campaigns[0])),  # type: ignore[arg-type]
        ),
        Probe(
            f"email analytics period={week} (last 7 seeded days)",
            [f"/api/v1/analytics/emails?period={week}"],
            lambda pc: csvc.email_analytics(pc, owner, week),  # type: ignore[arg-type]
        ),
        Probe(
            "email analytics period=90d",
            ["/api/v1/analytics/emails?period=90d"],
            lambda pc: csvc.email_analytics(pc, owner, "90d"),  # type: ignore[arg-type]
        ),
        Probe(
            "emails status=bounced",
            ["/api/v1/emails?status=bounced"],
            lambda pc: drepo.list_messages(
                pc,  # type: ignore[arg-type]
                TenantScope(t.id, "live"),
                ListParams(limit=50),
                status="bounced",
                campaign_id=None,
                batch_id=None,
                recipient=None,
                created_from=None,
                created_to=None,
            ),
        ),
        Probe(
            "emails status=queued (none)",
            ["/api/v1/emails?status=queued"],
            lambda pc: drepo.list_messages(
                pc,  # type: ignore[arg-type]
                TenantScope(t.id, "live"),
                ListParams(limit=50),
                status="queued",
                campaign_id=None,
                batch_id=None,
                recipient=None,
                created_from=None,
                created_to=None,
            ),
        ),
        Probe(
            "emails batch_id=",
            [f"/api/v1/emails?batch_id={b}" for b in batches],
            lambda pc: drepo.list_messages(
                pc,  # type: ignore[arg-type]
                TenantScope(t.id, "live"),
                ListParams(limit=50),
                status=None,
                campaign_id=None,
                batch_id=batches[0],
                recipient=None,
                created_from=None,
                created_to=None,
            ),
        ),
        Probe(
            "email batch report",
            [f"/api/v1/emails/batches/{b}" for b in batches],
            lambda pc: drepo.batch_status_counts(pc, batches[0]),  # type: ignore[arg-type]
        ),
        Probe(
            "webhook delivery log",
            [f"/api/v1/webhooks/{endpoint}/deliveries"],
            lambda pc: wrepo.list_deliveries(
                pc,  # type: ignore[arg-type]
                endpoint,
                ListParams(limit=50),
                status=None,
                event_type=None,
                created_after=None,
                created_before=None,
            ),
        ),
        Probe(
            "webhook delivery log status=failed",
            [f"/api/v1/webhooks/{endpoint}/deliveries?status=failed"],
            lambda pc: wrepo.list_deliveries(
                pc,  # type: ignore[arg-type]
                endpoint,
                ListParams(limit=50),
                status="failed",
                event_type=None,
                created_after=None,
                created_before=None,
            ),
        ),
        Probe(
            "webhook delivery log status=paused (none)",
            [f"/api/v1/webhooks/{endpoint}/deliveries?status=paused"],
            lambda pc: wrepo.list_deliveries(
                pc,  # type: ignore[arg-type]
                endpoint,
                ListParams(limit=50),
                status="paused",
                event_type=None,
                created_after=None,
                created_before=None,
            ),
        ),
    ]
    if ONLY:
        probes = [
            p for p in probes if p.name.startswith("baseline") or any(o in p.name for o in ONLY)
        ]
    return probes


async def drive(
    client: httpx.AsyncClient, base: str, key: str, paths: list[str], count: int
) -> list[float]:
    headers = {"Authorization": f"Bearer {key}"}
    latencies: list[float] = []
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            path = paths[i % len(paths)]
            started = time.perf_counter()
            resp = await client.get(base + path, headers=headers)
            latencies.append(time.perf_counter() - started)
            if resp.status_code != 200:
                await raise_if_out_of_connections(f"{path} answered {resp.status_code}")
                raise RuntimeError(f"{path}: {resp.status_code} {resp.text[:300]}")

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return latencies


async def explain_all(database: str, probes: list[Probe], label: str) -> None:
    from services.campaigns import repository as crepo  # noqa: F401  (jsonb codec below)

    for svc, names in (
        ("campaigns", ("baseline", "contact", "campaign analytics", "email analytics")),
        ("delivery", ("emails", "email batch")),
        ("webhooks", ("webhook",)),
    ):
        conn = await asyncpg.connect(role_dsn(svc, database))
        for typ in ("json", "jsonb"):
            await conn.set_type_codec(
                typ,
                encoder=lambda v: orjson.dumps(v).decode(),
                decoder=orjson.loads,
                schema="pg_catalog",
            )
        try:
            for p in probes:
                if p.explain is None or not p.name.startswith(names):
                    continue
                best = float("inf")
                for _ in range(EXPLAIN_RUNS):
                    capture = PlanCapture(conn)
                    await p.explain(capture)
                    ms = sum(plan.get("Execution Time", 0.0) for _, plan in capture.plans)
                    best = min(best, ms)
                p.plans[label] = "; ".join(plan_shape(plan) for _, plan in capture.plans)
                p.db_ms[label] = best
        finally:
            await conn.close()


# ---------------------------------------------------------------- connections and load

_OUT_OF_SLOTS = ("TooManyConnections", "too many clients", "remaining connection slots")


async def raise_if_out_of_connections(what: str) -> None:
    """A service failed a request: if a spawned process's log says Postgres refused it a
    connection, stop with that said plainly (ConnectionBudgetError) instead of a 500."""
    for svc in SERVICES:
        log = REPO / ".dev" / f"bench-scale-{svc}.log"
        text = log.read_text(errors="replace") if log.is_file() else ""
        if any(marker in text for marker in _OUT_OF_SLOTS):
            try:
                now = (await pg_connections()).describe()
            except Exception as exc:  # the server may refuse this one too
                now = f"not even a check could connect: {exc}"
            raise ConnectionBudgetError(
                f"{what}: Postgres refused the {svc} api a connection midway (see {log});"
                f" the run holds at most {RUN_BUDGET.describe()}; now {now}. Other users took"
                " the headroom this run left them: rerun when they are done."
            )


@dataclass
class LoadSampler:
    """Every `every` s while the run drives: the 1-minute load average and the Postgres
    connections in use (all, and this run's databases), on one session of its own."""

    databases: tuple[str, ...]
    every: float = 2.0
    load: list[float] = field(default_factory=list)
    used: list[int] = field(default_factory=list)
    ours: list[int] = field(default_factory=list)
    limit: int = 0
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        conn = await asyncpg.connect(ADMIN_DSN)
        self.limit = await conn.fetchval(
            "SELECT current_setting('max_connections')::int"
            " - current_setting('superuser_reserved_connections')::int"
        )

        async def sample() -> None:
            try:
                while True:
                    row = await conn.fetchrow(
                        "SELECT count(*) AS used, count(*) FILTER (WHERE datname = ANY($1))"
                        " AS ours FROM pg_stat_activity WHERE backend_type = 'client backend'",
                        list(self.databases),
                    )
                    assert row is not None
                    self.used.append(int(row["used"]))
                    self.ours.append(int(row["ours"]))
                    self.load.append(os.getloadavg()[0])
                    await asyncio.sleep(self.every)
            finally:
                await conn.close()

        self._task = asyncio.create_task(sample())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def describe(self) -> str:
        if not self.load:
            return "no samples"
        return (
            f"load average (1 min) mean {sum(self.load) / len(self.load):.1f},"
            f" max {max(self.load):.1f} on {os.cpu_count()} cores; Postgres connections in use"
            f" peak {max(self.used)} of {self.limit} (fewest free {self.limit - max(self.used)}),"
            f" this run's peak {max(self.ours)} (budget {RUN_BUDGET.total})"
        )


# ---------------------------------------------------------------- main


async def main() -> int:
    """0, or 2 when Postgres cannot hold the run (said plainly, not a traceback midway)."""
    try:
        await _main()
    except ConnectionBudgetError as exc:
        print(f"\nbench/scale.py: not enough Postgres connections: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not is_out_of_connections(exc):
            raise
        try:
            now = (await pg_connections()).describe()
        except Exception as again:
            now = f"not even a check could connect: {again}"
        print(
            f"\nbench/scale.py: Postgres refused this run a connection midway ({exc});"
            f" the run holds at most {RUN_BUDGET.describe()}; now {now}. Other users took the"
            " headroom this run left them: rerun when they are done.",
            file=sys.stderr,
        )
        return 2
    return 0


async def _main() -> None:
    os.environ["PM_CURSOR_KEY"] = CURSOR_KEY
    print(
        f"bench/scale.py  scales {[f'{label}={scaled(n):,}' for label, n in SCALES]},"
        f" {SMALL_TENANTS} small tenants, {EVENTS_PER_CONTACT} email events per contact,"
        f" concurrency {CONCURRENCY}, {REQUESTS} requests per endpoint and scale"
    )
    # Checked first: a seeding can take half an hour before the run needs its connections.
    now = await check_connection_budget(
        RUN_BUDGET if HTTP else SEED_BUDGET, "bench/scale.py", wait=PG_WAIT_SECONDS
    )
    print(
        f"  Postgres connections: this run holds at most"
        f" {(RUN_BUDGET if HTTP else SEED_BUDGET).describe()}; {now.describe()}"
    )
    seeded, how = await ensure_seed()
    print(f"  {seeded.database} ({how}): first seeding took {seeded.seconds:.0f} s")
    for name, n in seeded.counts.items():
        print(f"    {name}: {n:,} rows")
    tenants = scale_tenants()
    results: list[Probe] = []
    if not HTTP:
        by_name: dict[str, Probe] = {}
        for t in tenants:
            conn = await asyncpg.connect(admin_dsn(seeded.database))
            try:
                probes = await probes_for(conn, t)
            finally:
                await conn.close()
            await explain_all(seeded.database, probes, t.label)
            for p in probes:
                kept = by_name.setdefault(p.name, p)
                kept.plans[t.label] = p.plans.get(t.label, "")
                kept.db_ms[t.label] = p.db_ms.get(t.label, float("nan"))
            print(f"  explained {t.label}", flush=True)
        report(seeded, list(by_name.values()))
        return

    harness.BENCH_DB = f"pm_bench_scale_keys_{os.getpid()}"
    harness.BENCH_VHOST = harness.BENCH_DB
    # Again now that the seed is there: others may have come meanwhile.
    await check_connection_budget(RUN_BUDGET, "bench/scale.py (driving)", wait=PG_WAIT_SECONDS)
    await fresh_database("keys")
    amqp_url = fresh_vhost()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PM_")},
        "PYTHONPATH": str(REPO),
        "PM_ENVIRONMENT": "test",
        "PM_LOG_LEVEL": "WARNING",
        "PM_AMQP_URL": amqp_url,
        "PM_REDIS_URL": "redis://127.0.0.1:6379/14",
        "PM_REDIS_NAMESPACE": f"pmscale{os.getpid()}",
        "PM_VAULT_ADDR": VAULT_ADDR,
        "PM_VAULT_TOKEN": VAULT_TOKEN_FILE.read_text().strip(),
        "PM_PRINCIPAL_PUBLIC_KEYS": public_keys_of(SIGNING_KEY),
        "PM_CURSOR_KEY": CURSOR_KEY,
    }
    procs = []
    upstreams = {}
    loads: dict[str, str] = {}
    for svc in SERVICES:
        port = free_port()
        procs.append(
            spawn(
                ["-m", f"services.{svc}", "api"],
                {
                    **env,
                    "PM_DATABASE_URL": role_dsn(svc, seeded.database),
                    "PM_HTTP_PORT": str(port),
                    "PM_DB_POOL_MAX": str(RUN_BUDGET.pools[f"{svc} api"]),
                },
                f"scale-{svc}",
            )
        )
        upstreams[svc] = f"http://127.0.0.1:{port}"
    scopes = ["manage_contacts", "read_analytics", "manage_webhooks"]
    try:
        for url in upstreams.values():
            wait_ready(url)
        async with gateway_stack(
            keys_dsn=harness.service_dsn("keys"),
            amqp_url=amqp_url,
            signing_key=SIGNING_KEY,
            upstreams=upstreams,
            scopes=scopes,
        ) as gateway:
            limits = httpx.Limits(
                max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY
            )
            async with httpx.AsyncClient(timeout=60, limits=limits) as client:
                keys = {tenants[0].id: gateway.api_key}
                await adopt_tenant(harness.service_dsn("keys"), gateway.tenant_id, tenants[0].id)
                for i, t in enumerate(tenants[1:], start=1):
                    signed_up, key = await signup_key(client, gateway.url, scopes, i)
                    await adopt_tenant(harness.service_dsn("keys"), signed_up, t.id)
                    keys[t.id] = key
                by_name: dict[str, Probe] = {}
                for t in tenants:
                    sampler = LoadSampler((seeded.database, harness.BENCH_DB))
                    await sampler.start()
                    try:
                        conn = await asyncpg.connect(admin_dsn(seeded.database))
                        try:
                            probes = await probes_for(conn, t)
                        finally:
                            await conn.close()
                        for p in probes:
                            kept = by_name.setdefault(p.name, p)
                            kept.deep_offset = p.deep_offset
                            await drive(client, gateway.url, keys[t.id], p.paths, CONCURRENCY)
                            kept.latencies[t.label] = await drive(
                                client, gateway.url, keys[t.id], p.paths, REQUESTS
                            )
                            await explain_all(seeded.database, [p], t.label)
                            kept.plans[t.label] = p.plans.get(t.label, "")
                            kept.db_ms[t.label] = p.db_ms.get(t.label, float("nan"))
                    finally:
                        await sampler.stop()
                    loads[t.label] = sampler.describe()
                    print(f"  driven {t.label}: {loads[t.label]}", flush=True)
                results = list(by_name.values())
    finally:
        stop(procs)

    report(seeded, results)
    print("  load while driving:")
    for label, line in loads.items():
        print(f"    @{label}: {line}")


def report(seeded: Seeded, results: list[Probe]) -> None:
    labels = [label for label, _ in SCALES]
    baseline = next(p for p in results if p.name.startswith("baseline"))

    def p95(p: Probe, label: str) -> float:
        return percentile(p.latencies.get(label, []), 95) * 1000

    print()
    print(
        f"  HTTP through the gateway, concurrency {CONCURRENCY}: p50/p95/p99 ms;"
        " x base = p95 / the baseline's p95 at 1M (same run)"
    )
    print(
        f"  {'endpoint':<42}"
        + "".join(f"{'@' + lb:>22}" for lb in labels)
        + f"{'x base':>8}{'p95 1M/100k':>13}"
    )
    for p in results:
        cells = [
            "{:.0f}/{:.0f}/{:.0f}".format(
                *(percentile(p.latencies.get(lb, []), q) * 1000 for q in (50, 95, 99))
            ).rjust(22)
            for lb in labels
        ]
        growth = p95(p, "1M") / p95(p, "100k") if p95(p, "100k") else float("nan")
        print(
            f"  {p.name:<42}"
            + "".join(cells)
            + f"{p95(p, '1M') / p95(baseline, '1M'):>7.2f}x{growth:>12.2f}x"
        )
    print()
    print("  database time per request (EXPLAIN ANALYZE, ms) and its growth 100k -> 1M;")
    print("  verdict: HTTP p95 <= 200 ms at 1M, database growth <= 1.5x (deep offsets exempt)")
    print(
        f"  {'endpoint':<42}" + "".join(f"{lb:>10}" for lb in labels) + f"{'1M/100k':>10}  verdict"
    )
    misses = 0
    for p in results:
        big, mid = p.db_ms.get("1M", float("nan")), p.db_ms.get("100k", float("nan"))
        growth = big / mid if mid else float("nan")
        db_ok = growth <= 1.5 or big < 2.0  # under 2 ms: noise, not growth
        http_ok = p95(p, "1M") <= 200 or not HTTP
        ok = (db_ok or p.deep_offset) and http_ok
        misses += not ok
        notes = []
        if not http_ok:
            notes.append(f"http p95 {p95(p, '1M'):.0f} ms")
        if not db_ok:
            notes.append(f"db grows {growth:.1f}x" + (" (deep offset)" if p.deep_offset else ""))
        print(
            f"  {p.name:<42}"
            + "".join(f"{p.db_ms.get(lb, float('nan')):>10.2f}" for lb in labels)
            + f"{growth:>9.2f}x  {'OK' if ok else 'MISS: ' + ', '.join(notes)}"
        )
    print()
    print("  query plans at 1M (one entry per statement; scan nodes only):")
    for p in results:
        print(f"    {p.name}: {p.plans.get('1M') or '-'}")
    print(f"\n  endpoints missing a target: {misses} of {len(results)}")
    print(
        orjson.dumps(
            {
                "seed_seconds": seeded.seconds,
                "counts": seeded.counts,
                "endpoints": {
                    p.name: {
                        lb: {
                            "p50": percentile(p.latencies.get(lb, []), 50),
                            "p95": percentile(p.latencies.get(lb, []), 95),
                            "p99": percentile(p.latencies.get(lb, []), 99),
                            "db_ms": p.db_ms.get(lb),
                            "plan": p.plans.get(lb),
                        }
                        for lb in labels
                    }
                    for p in results
                },
            }
        ).decode()
    )


async def seed_only() -> None:
    seeded, how = await ensure_seed()
    print(f"  {seeded.database} ({how}): first seeding took {seeded.seconds:.0f} s")


async def _interruptible(work: Awaitable[int | None]) -> int | None:
    """SIGTERM/SIGINT cancel the run: its `finally` blocks stop the spawned processes and the
    scratch database and vhost go at exit (a plain SIGTERM would leave them behind)."""
    import signal

    task = asyncio.ensure_future(work)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        print("\nbench/scale.py: interrupted; spawned processes stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(asyncio.run(_interruptible(seed_only() if sys.argv[1:] == ["seed"] else main())))
