"""What the webhooks service does when a fact arrives: fan it out to customer endpoints, and
append it to the tenant's event stream.

Queues `webhooks.fanout` and `webhooks.stream`, each bound to every deliverable catalog type
(public, with a read scope: `email.*`, `campaign.*`, `contact.*`, ...). No inbox: the unique
(endpoint, event) delivery row and the unique stream row are the idempotency marks, so a
redelivered event finds its deliveries and only re-dispatches those still due (an inbox row
would make a redelivery skip deliveries whose first attempt never started).
"""

from __future__ import annotations

import asyncpg

from libs.common.bus import EventBus
from libs.common.events import Envelope
from services.webhooks.dispatcher import Dispatcher
from services.webhooks.payloads import deliverable_types
from services.webhooks.stream import StreamWriter

FANOUT_PATTERNS = sorted(deliverable_types())


def setup(bus: EventBus, dispatcher: Dispatcher) -> None:
    @bus.subscribe("fanout", FANOUT_PATTERNS, inbox=False)
    async def fan_out(event: Envelope, _conn: asyncpg.Connection | None) -> None:
        """Fan events out to the tenant's subscribed webhook endpoints."""
        await dispatcher.fan_out(event)

    # A queue of its own: the stream never waits behind webhook fan-out, nor slows it.
    # Messages are handled concurrently (up to the prefetch); their appends share commits.
    # Made at the first event: declaring the subscriptions (docs, tests) needs no pool.
    writer: StreamWriter | None = None

    @bus.subscribe("stream", FANOUT_PATTERNS, inbox=False)
    async def append_to_stream(event: Envelope, _conn: asyncpg.Connection | None) -> None:
        """Append events to the tenant's event stream (GET /api/v1/events/stream)."""
        nonlocal writer
        if writer is None:
            writer = StreamWriter(dispatcher.pool)
        await writer.store(event)
