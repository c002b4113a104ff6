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
from services.webhooks.stream import store_events

FANOUT_PATTERNS = sorted(deliverable_types())
STREAM_BATCH = 500


def setup(bus: EventBus, dispatcher: Dispatcher) -> None:
    @bus.subscribe("fanout", FANOUT_PATTERNS, inbox=False)
    async def fan_out(event: Envelope, _conn: asyncpg.Connection | None) -> None:
        """Fan events out to the tenant's subscribed webhook endpoints."""
        await dispatcher.fan_out(event)

    # A queue of its own: the stream never waits behind webhook fan-out, nor slows it.
    # Consumed in batches: what arrived while the previous batch committed is appended in
    # one transaction and acked at once (one message at a time fell behind at 1,000/s).
    @bus.subscribe_batch("stream", FANOUT_PATTERNS, inbox=False, max_batch=STREAM_BATCH)
    async def append_to_stream(events: list[Envelope], _conn: asyncpg.Connection | None) -> None:
        """Append events to the tenant's event stream (GET /api/v1/events/stream)."""
        await store_events(dispatcher.pool, events)
