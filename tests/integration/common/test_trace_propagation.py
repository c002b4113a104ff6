"""One trace follows a change from the request that wrote it, through the outbox and the
broker, into the consumer's handler."""

from __future__ import annotations

import asyncio

import asyncpg
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from libs.common.bus import EventBus
from libs.common.events import ContactDeleted, Envelope, make_event
from libs.common.outbox import OutboxRelay, enqueue
from tests.integration.common.amqp_tools import eventually


async def test_trace_id_survives_outbox_and_broker(
    keys_pool: asyncpg.Pool, amqp_url: str, unique: str
) -> None:
    provider = TracerProvider()  # a recording provider (the global one may be a no-op)
    tracer = provider.get_tracer("test")
    seen: list[int] = []
    bus = EventBus(service=f"t{unique}", amqp_url=amqp_url, pool=keys_pool)

    @bus.subscribe("trace", ["contact.deleted"])
    async def handle(event: Envelope, conn: asyncpg.Connection | None) -> None:
        if event.tenant_id == f"t_{unique}":
            seen.append(trace.get_current_span().get_span_context().trace_id)

    await bus.start()
    with tracer.start_as_current_span("POST /api/v1/contacts") as request_span:
        trace_id = request_span.get_span_context().trace_id
        async with keys_pool.acquire() as conn, conn.transaction():
            await enqueue(
                conn,
                make_event(
                    ContactDeleted(contact_id="ct_1", email="a@example.com"),
                    tenant_id=f"t_{unique}",
                    source="/tests",
                ),
            )
    stored = await keys_pool.fetchval(
        "SELECT headers->>'traceparent' FROM outbox WHERE tenant_id = $1", f"t_{unique}"
    )
    assert stored and f"{trace_id:032x}" in stored, "trace context is stored with the row"
    relay = OutboxRelay(keys_pool, "keys", amqp_url, poll_interval=0.2)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await eventually(lambda: seen, timeout=15)
    finally:
        stop.set()
        await task
        await bus.stop()
    assert seen == [trace_id], "the consumer's span belongs to the request's trace"
