"""Contact import and campaign runner throughput against baselines measured in the same run.

1. import: 50,000 contacts (JSON body, parsed, checked, upserted, 50,000 contact.created
   events written to the outbox) vs a plain `COPY` of the same rows into a scratch table.
   Target (issue): >= 0.3x COPY speed.
2. runner: a campaign of 20,000 recipients; the runner claims, renders, logs and enqueues
   every `email.requested` while the outbox relay publishes them; time from start to the
   last broker confirm, vs raw publishing of 20,000 messages of the same size with confirms
   on the relay's connection. Target: >= 0.5x the raw publish rate.

Run: `uv run python -m bench.campaigns` (or `make bench`).
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from uuid import UUID

import aio_pika
import orjson

from bench.harness import fresh_database, fresh_vhost, service_dsn, verdict
from libs.common.db import create_pool
from libs.common.events import EmailRequested
from libs.common.outbox import OutboxRelay
from services.campaigns import repository as repo
from services.campaigns import service
from services.campaigns.runner import CampaignRunner, _requested
from services.campaigns.schemas import CampaignCreate

IMPORT_N = int(os.environ.get("BENCH_IMPORT_N", "50000"))
RUN_N = int(os.environ.get("BENCH_RUN_N", "20000"))


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


async def bench_import(pool) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    rows = contact_rows(IMPORT_N, "imp")
    body = orjson.dumps(rows)

    # Baseline: COPY the same rows (same columns and types) into a scratch table.
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TABLE scratch_copy (id uuid, email text, first_name text, last_name text,"
            " company text, tags text[], custom_fields text, status text)"
        )
        records = [
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
        t0 = time.perf_counter()
        await conn.copy_records_to_table("scratch_copy", records=records)
        copy_s = time.perf_counter() - t0
        await conn.execute("DROP TABLE scratch_copy")

    owner = repo.Owner("bench", "live")
    t0 = time.perf_counter()
    report = await service.import_contacts(pool, owner, service.parse_import_json(body), IMPORT_N)
    import_s = time.perf_counter() - t0
    assert report["created"] == IMPORT_N, report["failed"]
    return copy_s, import_s


async def bench_runner(pool, amqp_url: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    owner = repo.Owner("bench-run", "live")
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
                "from_email": "bench@penguin.test",
                "subject": "Hi {{ first_name }} at {{ company }}",
                "content": {
                    "html": "<p>Hello {{ first_name | default('there') }},</p><p>{{ plan }}</p>",
                    "text": "Hello {{ first_name | default('there') }}, {{ plan }}",
                },
                "recipients": {"tags": ["run"]},
            }
        ),
    )
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
            from_="bench@penguin.test",
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
    return raw_s, run_s


async def main() -> None:
    await fresh_database("campaigns")
    amqp_url = fresh_vhost()
    pool = await create_pool(service_dsn("campaigns"), "campaigns", min_size=2, max_size=6)
    copy_s, import_s = await bench_import(pool)
    raw_s, run_s = await bench_runner(pool, amqp_url)
    await pool.close()

    import_ratio = copy_s / import_s
    run_ratio = raw_s / run_s
    print(f"bench/campaigns.py  import N={IMPORT_N}, campaign N={RUN_N}")
    print(f"  COPY into scratch table:   {IMPORT_N / copy_s:,.0f} rows/s ({copy_s:.2f} s)")
    print(
        f"  import (parse+check+upsert+events): {IMPORT_N / import_s:,.0f} rows/s"
        f" ({import_s:.2f} s)"
    )
    print("  " + verdict("import / COPY", import_ratio, 0.3))
    print(f"  raw publish (confirms):    {RUN_N / raw_s:,.0f} msg/s ({raw_s:.2f} s)")
    print(f"  runner + relay to broker:  {RUN_N / run_s:,.0f} sends/s ({run_s:.2f} s)")
    print("  " + verdict("runner / raw publish", run_ratio, 0.5))
    print(
        orjson.dumps(
            {
                "copy_s": copy_s,
                "import_s": import_s,
                "import_ratio": import_ratio,
                "raw_s": raw_s,
                "run_s": run_s,
                "run_ratio": run_ratio,
            }
        ).decode()
    )


if __name__ == "__main__":
    asyncio.run(main())
