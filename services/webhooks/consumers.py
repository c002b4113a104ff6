"""What the webhooks service does when a fact arrives: append it to the tenant's event stream
and fan it out to customer endpoints.

Queue `webhooks.fanout`, bound to every deliverable catalog type (public, with a read scope:
`email.*`, `campaign.*`, `contact.*`, ...). No inbox: the unique (endpoint, event) delivery
row and the unique stream row are the idempotency marks, so a redelivered event finds its
deliveries and only re-dispatches those still due (an inbox row would make a redelivery
skip deliveries whose first attempt never started).
"""

from __future__ import annotations

import asyncpg

from libs.common.bus import EventBus
from libs.common.events import Envelope
from services.webhooks.dispatcher import Dispatcher
from services.webhooks.payloads import deliverable_types
from services.webhooks.stream import store_event

FANOUT_PATTERNS = sorted(deliverable_types())


def setup(bus: EventBus, dispatcher: Dispatcher) -> None:
    @bus.subscribe("fanout", FANOUT_PATTERNS, inbox=False)
    async def fan_out(event: Envelope, _conn: asyncpg.Connection | None) -> None:
        """Fan events out to the tenant's webhook endpoints, append them to its stream (in
        this order: a stored event has had its deliveries created)."""
        await dispatcher.fan_out(event)
        await store_event(dispatcher.pool, event)
