"""delivery.contacts: a burst of contact.created (a contact import), consumed one message at a
time (the former consumer) and in batches (`EventBus.subscribe_batch`, the current one), in
the same run.

Setup: a database and vhost of their own; the handler is delivery's
(`DeliveryService.learn_contacts`, in the inbox transaction). For each consumer in turn, the
burst waits in its queue (published as the relay does) before the consumer starts; timed
from the start to the last contact applied. Printed: contacts/s of each and the ratio.

Run: `uv run python -m bench.contacts_consumer` (BENCH_CONTACTS, default 10,000).
"""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg

from bench.harness import fresh_database, fresh_vhost, service_dsn
from libs.common.bus import EventBus
from libs.common.db import create_pool
from libs.common.events import ContactCreated, Envelope, make_event
from services.delivery.service import DeliveryService
from services.delivery.settings import DeliverySettings
from tests.integration.common.amqp_tools import publish_all

CONTACTS = int(os.environ.get("BENCH_CONTACTS", "10000"))
PATTERNS = ["contact.created", "contact.updated", "contact.deleted"]


async def _run(
    amqp_url: str, pool: asyncpg.Pool, service: DeliveryService, batched: bool
) -> tuple[float, tuple[float, ...]]:
    tenant = f"t_bench_{'batched' if batched else 'single'}"
    bus = EventBus(service="delivery", amqp_url=amqp_url, pool=pool)
    if batched:

        @bus.subscribe_batch("contacts", PATTERNS)
        async def on_contacts(events: list[Envelope], conn: asyncpg.Connection | None) -> None:
            assert conn is not None
            await service.learn_contacts(conn, [e for e in events if e.tenant_id == tenant])
    else:

        @bus.subscribe("contacts_one_by_one", PATTERNS)
        async def on_contact(event: Envelope, conn: asyncpg.Connection | None) -> None:
            assert conn is not None
            if event.tenant_id == tenant:
                await service.learn_contacts(conn, [event])

    events = [
        make_event(
            ContactCreated(contact_id=f"ct_{i}", email=f"c{i}@example.com", contact_tags=["x"]),
            tenant_id=tenant,
            source="/services/campaigns",
        )
        for i in range(CONTACTS)
    ]
    await bus.broker.connect()
    await bus.declare_topology()
    await publish_all(amqp_url, events)
    t0 = time.perf_counter()
    await bus.start()
    try:
        while True:
            n = await pool.fetchval(
                "SELECT count(*) FROM contact_tags WHERE tenant_id = $1", tenant
            )
            if n >= CONTACTS:
                break
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - t0
        load = os.getloadavg()
    finally:
        await bus.stop()
    return CONTACTS / elapsed, load


async def main() -> None:
    await fresh_database("delivery")
    amqp_url = fresh_vhost()
    pool = await create_pool(service_dsn("delivery"), "delivery", min_size=1, max_size=4)
    service = DeliveryService(
        DeliverySettings(database_url=service_dsn("delivery"), amqp_url=amqp_url), pool, None, None
    )
    try:
        single, single_load = await _run(amqp_url, pool, service, batched=False)
        batched, batched_load = await _run(amqp_url, pool, service, batched=True)
    finally:
        await service.client.aclose()
        await pool.close()
    print(f"bench/contacts_consumer.py  {CONTACTS} contact.created waiting in delivery's queue")
    print(f"  one message at a time: {single:.0f} contacts/s (load {single_load[0]:.1f})")
    print(f"  in batches:            {batched:.0f} contacts/s (load {batched_load[0]:.1f})")
    print(f"  ratio batched / one at a time: {batched / single:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
