"""The express lane: `python -m services.delivery express`.

A small send (a single `POST /emails/send`, a campaign step, a bulk call of a few
recipients) from a tenant with a small backlog is accepted into the `express` lane
(`DeliveryService._lane`). Its accept transaction NOTIFYs `delivery_express` with the
messages' ids; this process LISTENs, claims them by primary key (`repository.claim_listed`)
and sends them; every `express_poll_seconds` it also claims any due express message
(`repository.claim_express`, fairly across tenants: retries, requeued claims). Its event
loop never renders or sends a bulk batch, so a small tenant's email waits for nothing but
itself while another tenant's 100,000-recipient bulk drains in the workers (issue 13,
bench/fairness.py).

Nothing is sent twice: both lanes claim by moving a message from `queued` to `sending` under
`FOR UPDATE SKIP LOCKED`, so exactly one claim gets it. Nothing is stranded: each express
message also has a SendBatch scheduled for `express_takeover_seconds` later, and the
workers' fair claim takes express messages that waited that long (this process down or
behind); the sweeper's backstop and lease expiry cover both lanes alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator

import asyncpg

from services.delivery.repository import EXPRESS_CHANNEL
from services.delivery.service import DeliveryService

log = logging.getLogger(__name__)


class ExpressLane:
    """Claims and sends express messages: `concurrency` claim loops taking the ids each
    NOTIFY names (claimed by primary key), and every `poll_seconds` any due express message
    no NOTIFY announces (retries due, requeued claims, a NOTIFY missed while LISTEN was
    down)."""

    def __init__(self, service: DeliveryService, *, listen_dsn: str | None = None) -> None:
        self.service = service
        settings = service.settings
        self.concurrency = max(1, settings.express_concurrency)
        self.claim_limit = max(1, settings.express_claim_limit)
        self.poll_seconds = settings.express_poll_seconds
        # LISTEN needs a session: behind a transaction-mode pooler it gets its own direct
        # connection (PM_DATABASE_DIRECT_URL); else it holds one of the pool's.
        self.listen_dsn = listen_dsn
        self._wake = asyncio.Event()
        self._announced: deque[str] = deque()
        self._polled = -math.inf

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(self._listen(stop), name="express-listen")
        try:
            await asyncio.gather(*(self._drain(stop) for _ in range(self.concurrency)))
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _drain(self, stop: asyncio.Event) -> None:
        """Claim and send what NOTIFYs announced, poll when due, else wait for either."""
        while not stop.is_set():
            # Cleared before looking: a NOTIFY arriving meanwhile wakes the wait below.
            self._wake.clear()
            try:
                if self._announced:
                    # Ids taken off here and not claimed (an error) are the poll's to find.
                    count = min(self.claim_limit, len(self._announced))
                    await self.service.send_express(
                        [self._announced.popleft() for _ in range(count)]
                    )
                    continue
                if time.monotonic() - self._polled >= self.poll_seconds:
                    self._polled = time.monotonic()
                    if await self.service.send_express():
                        self._polled = -math.inf  # more may be due: look again at once
                    continue
            except Exception:
                log.exception("express lane: claim failed, trying again shortly")
            await _wait_any(stop, self._wake, self.poll_seconds)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Hold a LISTEN connection; reconnect on loss (polling covers the gap)."""

        def on_notify(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            self._announced.extend(i for i in payload.split(",") if i)
            self._wake.set()

        while not stop.is_set():
            try:
                async with self._listen_connection() as conn:
                    await conn.add_listener(EXPRESS_CHANNEL, on_notify)
                    # What committed before LISTEN took effect was announced to nobody.
                    self._polled = -math.inf
                    self._wake.set()
                    try:
                        while not stop.is_set() and not conn.is_closed():
                            await _wait_any(stop, asyncio.Event(), 5.0)
                    finally:
                        with contextlib.suppress(Exception):
                            await conn.remove_listener(EXPRESS_CHANNEL, on_notify)
            except (TimeoutError, asyncpg.PostgresError, OSError) as exc:
                log.warning("express lane: LISTEN lost (%s), polling meanwhile", exc)
                await _wait_any(stop, asyncio.Event(), 1.0)

    @contextlib.asynccontextmanager
    async def _listen_connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self.listen_dsn is None:
            async with self.service.pool.acquire() as conn:
                yield conn
            return
        conn = await asyncpg.connect(
            self.listen_dsn, server_settings={"application_name": "pm-delivery-express-listen"}
        )
        try:
            yield conn
        finally:
            await conn.close()


async def _wait_any(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Until `stop` or `wake` is set, or `seconds` have passed."""
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
