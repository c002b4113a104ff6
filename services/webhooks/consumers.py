"""What the webhooks service does when a fact arrives: fan it out to customer endpoints.

Queue `webhooks.fanout`, bound to every public `email.*`, `campaign.*`, `contact.*` and
`domain.*` type.
No inbox: the unique (endpoint, event) delivery row is the idempotency mark, so a
redelivered event finds its deliveries and only re-dispatches those still due (an inbox
row would make a redelivery skip deliveries whose first attempt never started).
"""

from __future__ import annotations

import asyncpg

from libs.common.bus import EventBus
from libs.common.events import Envelope
from services.webhooks.dispatcher import Dispatcher

FANOUT_PATTERNS = ["email.*", "campaign.*", "contact.*", "domain.*"]


def setup(bus: EventBus, dispatcher: Dispatcher) -> None:
    @bus.subscribe("fanout", FANOUT_PATTERNS, inbox=False)
    async def fan_out(event: Envelope, _conn: asyncpg.Connection | None) -> None:
        """Fan events out to the tenant's subscribed webhook endpoints."""
        await dispatcher.fan_out(event)
