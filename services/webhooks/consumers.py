"""What the webhooks service does when a fact arrives: fan it out to customer endpoints (the
`worker` process), and append it to the tenant's event stream (the `stream` process).

Queues `webhooks.fanout` and `webhooks.stream`, each bound to every deliverable catalog type
(public, with a read scope: `email.*`, `campaign.*`, `contact.*`, ...). No inbox: the unique
(endpoint, event) delivery row and the unique stream row are the idempotency marks, so a
redelivered event finds its deliveries and only re-dispatches those still due (an inbox row
would make a redelivery skip deliveries whose first attempt never started).
"""

from __future__ import annotations

import asyncio

import asyncpg

from libs.common.bus import EventBus
from libs.common.events import Envelope
from libs.common.resources import Resources
from services.webhooks.dispatcher import Dispatcher
from services.webhooks.payloads import deliverable_types
from services.webhooks.stream import store_events

FANOUT_PATTERNS = sorted(deliverable_types())
STREAM_BATCH = 500
FANOUT_BATCH = 100


def setup(bus: EventBus, dispatcher: Dispatcher) -> None:
    # Consumed in batches too: most events have no endpoint to go to, and handing them over
    # one message at a time was most of the worker's CPU at 1,000 events/s
    # (bench/events_stream.py). A batch's events fan out concurrently, as the prefetched
    # messages of a plain consumer did; a failed batch is retried message by message, which
    # the unique (endpoint, event) delivery rows make harmless.
    @bus.subscribe_batch("fanout", FANOUT_PATTERNS, inbox=False, max_batch=FANOUT_BATCH)
    async def fan_out(events: list[Envelope], _conn: asyncpg.Connection | None) -> None:
        """Fan events out to the tenant's subscribed webhook endpoints."""
        # Every fan-out finishes before a failure is raised: the batch's messages are then
        # retried one by one, never beside a fan-out of the same event still running.
        outcomes = await asyncio.gather(
            *(dispatcher.fan_out(event) for event in events), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome


def setup_stream(bus: EventBus, resources: Resources) -> None:
    """The `stream` process's consumer (`libs.common.runner.worker_process`)."""

    # A queue of its own, consumed by a process of its own: the stream never waits behind
    # webhook fan-out, nor slows it. In the worker's event loop, beside the fan-out of 1,000
    # events/s, an event waited 27 ms (p50) to 97 ms (p99) from published to stored
    # (bench/events_stream.py; docs/webhooks.md "Event stream").
    # Consumed in batches: what arrived while the previous batch committed is appended in
    # one transaction and acked at once (one message at a time fell behind at 1,000/s).
    @bus.subscribe_batch("stream", FANOUT_PATTERNS, inbox=False, max_batch=STREAM_BATCH)
    async def append_to_stream(events: list[Envelope], _conn: asyncpg.Connection | None) -> None:
        """Append events to the tenant's event stream (GET /api/v1/events/stream)."""
        await store_events(resources.pool, events)
