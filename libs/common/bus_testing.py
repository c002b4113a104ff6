"""An in-process `EventBus` for handler tests (FastStream's `TestRabbitBroker` pattern).

`InProcessBus` has the registration API of `EventBus` (`subscribe`, `subscribe_batch`, `on`,
`handle_command`), so a service's `consumers.setup(bus, ...)` runs unchanged, but nothing
connects to a broker:
`publish(model, tenant_id=...)` stamps an envelope, sends it through JSON and `parse_event`
as the broker path does, and runs every subscription whose patterns match its type through
the bus's own `_handle` (inbox transaction and dedup mark on the real database included).
`deliver_batch(envelopes)` hands batch subscriptions one batch. A handler's exception reaches
the test instead of a retry queue.
"""

from __future__ import annotations

from typing import Literal

import asyncpg

from libs.common.bus import EventBus, Subscription
from libs.common.commands import Command, make_command
from libs.common.events import Envelope, EventData, make_event, parse_event


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` zero or more."""
    want, words = pattern.split("."), routing_key.split(".")

    def match(i: int, j: int) -> bool:
        if i == len(want):
            return j == len(words)
        if want[i] == "#":
            return any(match(i + 1, k) for k in range(j, len(words) + 1))
        return j < len(words) and want[i] in ("*", words[j]) and match(i + 1, j + 1)

    return match(0, 0)


class InProcessBus(EventBus):
    def __init__(self, service: str, pool: asyncpg.Pool | None = None) -> None:
        super().__init__(service=service, amqp_url="amqp://in-process/", pool=pool)

    async def publish(
        self,
        data: EventData,
        *,
        tenant_id: str,
        source: str = "/tests",
        mode: Literal["live", "test"] = "live",
        subject: str | None = None,
    ) -> Envelope:
        """Deliver one event to the matching handlers; returns the envelope sent."""
        event = make_event(data, tenant_id=tenant_id, source=source, mode=mode, subject=subject)
        await self.deliver(event)
        return event

    async def deliver(self, event: Envelope) -> int:
        """Deliver an envelope (again: a redelivery); returns how many subscriptions matched."""
        parsed = parse_event(event.to_json())
        subs = [s for s in self.subscriptions if self._matches(s, parsed.type)]
        for sub in subs:
            await self._handle(sub, parsed)
        return len(subs)

    async def deliver_batch(self, events: list[Envelope]) -> None:
        """Deliver envelopes as one batch to the matching batch subscriptions (the bus's
        inbox claim and transaction included), as the broker path hands them over."""
        parsed = [parse_event(e.to_json()) for e in events]
        for sub in self.subscriptions:
            if sub.batch_handler is None:
                continue
            mine = [e for e in parsed if self._matches(sub, e.type)]
            if mine:
                await self._handle_batch(sub, mine)

    async def send(self, command: Command, *, tenant_id: str = "t_test") -> None:
        """Deliver a command to its one handler."""
        envelope = make_command(command, tenant_id=tenant_id, source="/tests")
        [sub] = [s for s in self.subscriptions if s.queue == command.queue]
        await self._handle(sub, Envelope.model_validate_json(envelope.to_json()))

    @staticmethod
    def _matches(sub: Subscription, routing_key: str) -> bool:
        return sub.command is None and any(topic_matches(p, routing_key) for p in sub.patterns)
