"""Contact import and campaign runner throughput against baselines measured in the same run.

1. import: 50,000 contacts (JSON body, parsed, checked, upserted, 50,000 contact.created
   events written to the outbox), synchronously (`POST /contacts/import`) and as a job
   (`POST /contacts/imports`: stored, then run in 5,000-row chunks as the worker does), vs
   the same rows COPYed into a scratch table `LIKE contacts INCLUDING ALL` (the same indexes:
   issue 15's baseline, target >= 0.6x), into that table plus the same contact.created
   envelopes COPYed into `LIKE outbox INCLUDING ALL` in one transaction (the two tables the
   import writes: a like-for-like ratio, printed beside it) and into a bare scratch table
   (the retired baseline, printed for comparison), all measured in the same round.
2. runner: a campaign of 20,000 recipients; the runner claims, renders, logs and enqueues
   every `email.requested` while the outbox relay publishes them; time from start to the
   last broker confirm, vs raw publishing of 20,000 messages of the same size with confirms
   (1) through aio-pika on the relay's connection (the baseline; target >= 0.8x, issue 21)
   and (2) on the relay's own aiormq channel, 1,000 in flight like its two batches.

Run: `uv run python -m bench.campaigns` (or `make bench`).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from datetime import UTC, datetime
from uuid import UUID

import aio_pika
import asyncpg
import orjson
from pamqp import commands as spec

from bench import harness
from bench.harness import (
    fresh_database,
    fresh_vhost,
    memory_line,
    peak_rss,
    service_dsn,
    verdict,
)
from libs.common.db import create_pool
from libs.common.events import DomainVerified, EmailRequested, make_event
from libs.common.outbox import OutboxRelay
from libs.common.tenancy import TenantScope
from services.campaigns import service
from services.campaigns.consumers import record_domain_state
from services.campaigns.repository import ImportRow
from services.campaigns.runner import CampaignRunner, _requested
from services.campaigns.schemas import CampaignCreate

IMPORT_N = int(os.environ.get("BENCH_IMPORT_N", "50000"))
RUN_N = int(os.environ.get("BENCH_RUN_N", "20000"))
# BENCH_IMPORT_ROUNDS=0 skips the import part (the runner part imports its own contacts).
IMPORT_ROUNDS = int(os.environ.get("BENCH_IMPORT_ROUNDS", "3"))


def contact_rows(n: int, tag: str) -> list[dict]:
    return [
        {
            "email": f"{tag}{i}@bench.example.com",
            "first_name": f"First{i}",
            "last_name": f"Last{i}",
            "company": f"Company {i % 500}",
            "tags": [tag, f"cohort{i % 10}"],
            "custom_fields": {"plan": "pro" if i % 3 else "free", "seats": i % 50},
        }
        for i in range(n)
    ]


def scratch_records(rows: list[dict]) -> list[tuple]:
    return [
        (
            UUID(int=i + 1),
            r["email"],
            r["first_name"],
            r["last_name"],
            r["company"],
            r["tags"],
            orjson.dumps(r["custom_fields"]).decode(),
            "active",
        )
        for i, r in enumerate(rows)
    ]


async def copy_bare(conn: asyncpg.Connection, rows: list[dict]) -> float:
    """The issue's baseline: a plain COPY of the same rows into a scratch table (no index,
    no constraint, custom_fields as text: nothing for the server to check)."""
    await conn.execute(
        "DROP TABLE IF EXISTS scratch_copy; CREATE TABLE scratch_copy (id uuid, email text,"
        " first_name text, last_name text, company text, tags text[], custom_fields text,"
        " status text)"
    )
    records = scratch_records(rows)
    t0 = time.perf_counter()
    await conn.copy_records_to_table("scratch_copy", records=records)
    elapsed = time.perf_counter() - t0
    await conn.execute("DROP TABLE scratch_copy")
    return elapsed


async def copy_like_contacts(conn: asyncpg.Connection, rows: list[dict]) -> float:
    """The same COPY into `LIKE contacts INCLUDING ALL`: the contacts table's types,
    defaults, generated email_key, checks and every index, empty like the import's table."""
    await conn.execute(
        "DROP TABLE IF EXISTS scratch_like; CREATE TABLE scratch_like (LIKE contacts INCLUDING ALL)"
    )
    records = [
        ("bench-like", "live", *r[:6], orjson.loads(r[6]), r[7]) for r in scratch_records(rows)
    ]
    columns = ["tenant_id", "mode", *ImportRow._fields]
    t0 = time.perf_counter()
    await conn.copy_records_to_table("scratch_like", records=records, columns=columns)
    elapsed = time.perf_counter() - t0
    await conn.execute("DROP TABLE scratch_like")
    return elapsed


async def copy_like_contacts_and_outbox(conn: asyncpg.Connection, rows: list[dict]) -> float:
    """(b) plus the import's other write in the same transaction: one contact.created
    envelope per row COPYed into `LIKE outbox INCLUDING ALL` (its indexes). The same two
    tables the import writes, with nothing checked or built: a like-for-like baseline,
    printed beside the issue's (b)."""
    await conn.execute(
        "DROP TABLE IF EXISTS scratch_like, scratch_outbox;"
        " CREATE TABLE scratch_like (LIKE contacts INCLUDING ALL);"
        " CREATE TABLE scratch_outbox (LIKE outbox INCLUDING ALL)"
    )
    records = [
        ("bench-like", "live", *r[:6], orjson.loads(r[6]), r[7]) for r in scratch_records(rows)
    ]
    events = [
        (
            UUID(int=(1 << 64) + i),
            "contact.created",
            "contact.created",
            "bench-like",
            orjson.dumps(
                {
                    "id": str(UUID(int=(1 << 64) + i)),
                    "type": "contact.created",
                    "source": "/services/campaigns",
                    "subject": f"contacts/{UUID(int=i + 1)}",
                    "tenant_id": "bench-like",
                    "mode": "live",
                    "data": {
                        "contact_id": str(UUID(int=i + 1)),
                        "email": r["email"],
                        "contact_tags": r["tags"],
                    },
                }
            ).decode(),
        )
        for i, r in enumerate(rows)
    ]
    t0 = time.perf_counter()
    async with conn.transaction():
        await conn.copy_records_to_table(
            "scratch_like", records=records, columns=["tenant_id", "mode", *ImportRow._fields]
        )
        await conn.copy_records_to_table(
            "scratch_outbox",
            records=events,
            columns=["id", "event_type", "routing_key", "tenant_id", "payload"],
        )
    elapsed = time.perf_counter() - t0
    await conn.execute("DROP TABLE scratch_like, scratch_outbox")
    return elapsed


async def bench_import(pool: asyncpg.Pool, dsn: str) -> list[dict[str, float]]:
    """Rounds of: bare COPY, COPY into a contacts-like table, the import (empty tables each
    time, so every round measures the same work)."""
    rows = contact_rows(IMPORT_N, "imp")
    body = orjson.dumps(rows)
    # The baselines' own connection, with a binary jsonb codec (COPY needs one).
    conn = await asyncpg.connect(dsn, server_settings={"search_path": "campaigns"})
    await conn.set_type_codec(
        "jsonb",
        schema="pg_catalog",
        encoder=lambda v: b"\x01" + orjson.dumps(v),
        decoder=lambda b: orjson.loads(b[1:]),
        format="binary",
    )
    rounds = []
    try:
        for i in range(IMPORT_ROUNDS):
            await pool.execute("TRUNCATE contacts, outbox")
            await pool.execute("VACUUM ANALYZE contacts")
            bare_s = await copy_bare(conn, rows)
            like_s = await copy_like_contacts(conn, rows)
            both_s = await copy_like_contacts_and_outbox(conn, rows)
            owner = TenantScope(f"bench-{i}", "live")
            t0 = time.perf_counter()
            report = await service.import_contacts(
                pool, owner, service.parse_import_json(body), IMPORT_N
            )
            import_s = time.perf_counter() - t0
            assert report["created"] == IMPORT_N, report["failed"]
            events = await pool.fetchval(
                "SELECT count(*) FROM outbox WHERE tenant_id = $1", owner.tenant_id
            )
            assert events == IMPORT_N, events
            # The job path, on a fresh table too: submit (parse + store) and run all chunks.
            await pool.execute("TRUNCATE contacts, outbox")
            await pool.execute("VACUUM ANALYZE contacts")
            t0 = time.perf_counter()
            job = await service.submit_import(
                pool, owner, service.parse_import_json(body), IMPORT_N
            )
            assert await service.run_import(pool, UUID(str(job["id"])))
            job_s = time.perf_counter() - t0
            done = await service.get_import(pool, owner, UUID(str(job["id"])))
            assert done["created"] == IMPORT_N, done["failed"]
            rounds.append(
                {
                    "bare_s": bare_s,
                    "like_s": like_s,
                    "both_s": both_s,
                    "import_s": import_s,
                    "job_s": job_s,
                }
            )
    finally:
        await conn.close()
    return rounds


async def bench_runner(pool: asyncpg.Pool, amqp_url: str) -> tuple[float, float, float]:
    owner = TenantScope("bench-run", "live")
    report = await service.import_contacts(pool, owner, contact_rows(RUN_N, "run"), RUN_N)
    assert report["created"] == RUN_N
    # The import's contact events are not what is measured: publish them out of the way.
    await pool.execute("UPDATE outbox SET published_at = now() WHERE published_at IS NULL")
    campaign = await service.create_campaign(
        pool,
        owner,
        CampaignCreate.model_validate(
            {
                "name": "bench",
                "from_email": "bench@penguin.example",
                "subject": "Hi {{ first_name }} at {{ company }}",
                "content": {
                    "html": "<p>Hello {{ first_name | default('there') }},</p><p>{{ plan }}</p>",
                    "text": "Hello {{ first_name | default('there') }}, {{ plan }}",
                },
                "recipients": {"tags": ["run"]},
            }
        ),
    )
    # A live campaign starts only from a verified domain: record delivery's domain.verified
    # fact through the consumer that keeps the read model.
    verified = make_event(
        DomainVerified(domain_id="dom_bench", name="penguin.example"),
        tenant_id=owner.tenant_id,
        source="/services/delivery",
    )
    async with pool.acquire() as conn, conn.transaction():
        await record_domain_state(verified, conn)
    await service.start_campaign(pool, owner, campaign["id"])
    await pool.execute("UPDATE outbox SET published_at = now() WHERE published_at IS NULL")

    relay = OutboxRelay(pool, "campaigns", amqp_url, batch_size=500, poll_interval=0.2)
    await relay.connect()
    conn = await aio_pika.connect_robust(amqp_url)
    ch = await conn.channel()
    ex = await ch.declare_exchange("pm.events", aio_pika.ExchangeType.TOPIC, durable=True)
    q = await ch.declare_queue("bench.sink", durable=True, arguments={"x-queue-type": "quorum"})
    await q.bind(ex, "#")

    # Baseline: raw publish, with confirms, of messages the size of the runner's events.
    body = _requested(
        EmailRequested(
            request_id="cmp_x_y_1",
            to="run1@bench.example.com",
            from_="bench@penguin.example",
            subject="Hi First1 at Company 1",
            html="<p>Hello First1,</p><p>pro</p>",
            text="Hello First1, pro",
            campaign_id=str(campaign["id"]),
            contact_id=str(UUID(int=1)),
            step=1,
            tags=["run", "cohort1"],
        ),
        "bench-run",
        f"campaigns/{campaign['id']}",
    ).to_json()
    # (1) The baseline: publishing through the client the platform uses (aio-pika),
    # with confirms, on the relay's channel, 500 in flight.
    assert relay._exchange is not None
    t0 = time.perf_counter()
    for lo in range(0, RUN_N, relay.batch_size):
        await asyncio.gather(
            *(
                relay._exchange.publish(
                    aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="email.requested",
                    mandatory=False,
                )
                for _ in range(min(relay.batch_size, RUN_N - lo))
            )
        )
    raw_s = time.perf_counter() - t0
    # (2) Stricter: the path the relay itself takes (aiormq's channel under aio-pika's), as
    # many in flight as the relay's two batches: the broker's rate, nothing else.
    assert relay._channel is not None
    amqp = await relay._channel.get_underlay_channel()
    window = relay.batch_size * relay.concurrency
    properties = spec.Basic.Properties(delivery_mode=2, message_id="x")
    t0 = time.perf_counter()
    for lo in range(0, RUN_N, window):
        await asyncio.gather(
            *(
                amqp.basic_publish(
                    body,
                    exchange="pm.events",
                    routing_key="email.requested",
                    properties=properties,
                    mandatory=False,
                )
                for _ in range(min(window, RUN_N - lo))
            )
        )
    wire_s = time.perf_counter() - t0

    stop = asyncio.Event()
    runner = CampaignRunner(pool, batch_size=500)
    t0 = time.perf_counter()
    relay_task = asyncio.create_task(relay.run(stop))
    await runner.drain(datetime.now(UTC))
    while await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
        await asyncio.sleep(0.01)
    run_s = time.perf_counter() - t0
    sent = await pool.fetchval(
        "SELECT count(*) FROM campaign_sends WHERE campaign_id = $1", campaign["id"]
    )
    assert sent == RUN_N, sent
    stop.set()
    await relay_task
    await q.purge()
    await conn.close()
    return raw_s, wire_s, run_s


def median(values: list[float]) -> float:
    return statistics.median(values)


async def main() -> None:
    # Its own database and vhost: another benchmark may be using the harness's default ones.
    harness.BENCH_DB = os.environ.get("BENCH_CAMPAIGNS_DB", "pm_bench_campaigns")
    harness.BENCH_VHOST = os.environ.get("BENCH_CAMPAIGNS_VHOST", "pm_bench_campaigns")
    await fresh_database("campaigns")
    amqp_url = fresh_vhost()
    dsn = service_dsn("campaigns")
    pool = await create_pool(dsn, "campaigns", min_size=2, max_size=6)
    rounds = await bench_import(pool, dsn)
    raw_s, wire_s, run_s = await bench_runner(pool, amqp_url)
    await pool.close()

    bare_ratios = [r["bare_s"] / r["import_s"] for r in rounds]
    like_ratios = [r["like_s"] / r["import_s"] for r in rounds]
    job_like_ratios = [r["like_s"] / r["job_s"] for r in rounds]
    job_bare_ratios = [r["bare_s"] / r["job_s"] for r in rounds]
    run_ratio = raw_s / run_s
    both_ratios = [r["both_s"] / r["import_s"] for r in rounds]
    job_both_ratios = [r["both_s"] / r["job_s"] for r in rounds]
    print(f"bench/campaigns.py  import N={IMPORT_N} x {len(rounds)} rounds, campaign N={RUN_N}")
    if rounds:  # BENCH_IMPORT_ROUNDS=0: the runner part only
        bare_s, like_s, both_s, import_s, job_s = (
            median([r[k] for r in rounds]) for k in rounds[0]
        )
        print("  import = parse JSON body + check rows + look up existing emails + COPY into")
        print("  contacts + one contact.created event per row COPYed into the outbox, one commit.")
        print("  Each round: empty contacts/outbox; baselines measured in the same round.")
        print(f"  (a) COPY into a bare scratch table:           {IMPORT_N / bare_s:>9,.0f} rows/s")
        print(f"  (b) COPY into LIKE contacts INCLUDING ALL:    {IMPORT_N / like_s:>9,.0f} rows/s")
        print(f"  (c) (b) + the events COPYed into LIKE outbox: {IMPORT_N / both_s:>9,.0f} rows/s")
        print(
            f"  import (synchronous):                         {IMPORT_N / import_s:>9,.0f} rows/s"
        )
        print(f"  import job (submit + chunks):                 {IMPORT_N / job_s:>9,.0f} rows/s")
        print(
            f"  medians: bare {bare_s:.2f} s, like-contacts {like_s:.2f} s,"
            f" + outbox {both_s:.2f} s, import {import_s:.2f} s, job {job_s:.2f} s"
        )
        print(
            "  "
            + verdict(
                "import / COPY into LIKE contacts (issue 15's target)", median(like_ratios), 0.6
            )
        )
        print("  " + verdict("import job / COPY into LIKE contacts", median(job_like_ratios), 0.6))
        print(
            f"  like for like, (c) the same two tables: import {median(both_ratios):.2f}x,"
            f" job {median(job_both_ratios):.2f}x"
        )
        print(
            f"  retired baseline, bare COPY: import {median(bare_ratios):.2f}x,"
            f" job {median(job_bare_ratios):.2f}x"
        )
    print(
        f"  (1) raw publish, aio-pika, confirms:     {RUN_N / raw_s:>9,.0f} msg/s ({raw_s:.2f} s)"
    )
    print(
        f"  (2) raw publish, relay's aiormq channel: {RUN_N / wire_s:>9,.0f} msg/s ({wire_s:.2f} s)"
    )
    print(f"  runner + relay to last confirm: {RUN_N / run_s:>9,.0f} sends/s ({run_s:.2f} s)")
    print("  " + verdict("runner / raw publish (1) (issue 21)", run_ratio, 0.8))
    print(f"  runner / raw publish (2): {wire_s / run_s:.2f}x")
    print("  " + memory_line(peak_rss({})) + " (import, runner and relay run in it)")
    print(
        orjson.dumps(
            {
                "rounds": rounds,
                "import_vs_bare": bare_ratios,
                "import_vs_like_contacts": like_ratios,
                "job_vs_like_contacts": job_like_ratios,
                "job_vs_bare": job_bare_ratios,
                "import_vs_contacts_and_outbox": both_ratios,
                "job_vs_contacts_and_outbox": job_both_ratios,
                "raw_s": raw_s,
                "wire_s": wire_s,
                "run_s": run_s,
                "run_ratio": run_ratio,
            }
        ).decode()
    )


if __name__ == "__main__":
    asyncio.run(main())
