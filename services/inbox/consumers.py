"""Event handlers of the inbox worker.

- `inbox.sent` (`email.queued`, `email.sent`, `email.failed`, inbox): the read model of the
  messages delivery sends, which replies thread against and are answered from; links our
  own replies (asked for by `email.requested`) to delivery's message.
"""

from __future__ import annotations

import asyncpg

from libs.common.bus import EventBus
from libs.common.events import Envelope
from services.inbox.service import InboxService


def setup(bus: EventBus, service: InboxService) -> None:
    @bus.subscribe("sent", ["email.queued", "email.sent", "email.failed"])
    async def on_sent(event: Envelope, conn: asyncpg.Connection | None) -> None:
        """Learn a sent message (Message-ID, sender, subject) for threading and replies."""
        assert conn is not None
        await service.learn_sent(conn, event, event.payload().model_dump(mode="json"))
