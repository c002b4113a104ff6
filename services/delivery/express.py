"""The express lane: `python -m services.delivery express`.

A small send (a single `POST /emails/send`, a campaign step, a bulk call of a few
recipients) from a tenant with a small backlog is accepted into the `express` lane
(`DeliveryService._lane`). Its accept transaction NOTIFYs `delivery_express`; this process
LISTENs, claims due express messages (`repository.claim_express`, fairly across tenants,
from an index no bulk backlog is in) and sends them. Its event loop never renders or sends
a bulk batch, so a small tenant's email waits for nothing but itself while another tenant's
100,000-recipient bulk drains in the workers (issue 13, bench/fairness.py).

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
from collections.abc import AsyncIterator

import asyncpg

from services.delivery.repository import EXPRESS_CHANNEL
from services.delivery.service import DeliveryService

log = logging.getLogger(__name__)


class ExpressLane:
    """Claims and sends express messages: `concurrency` claim loops, woken by NOTIFY, polling
    every `poll_seconds` for what no NOTIFY announces (retries due, requeued claims)."""

    def __init__(self, service: DeliveryService, *, listen_dsn: str | None = None) -> None:
        self.service = service
        settings = service.settings
        self.concurrency = max(1, settings.express_concurrency)
        self.poll_seconds = settings.express_poll_seconds
        # LISTEN needs a session: behind a transaction-mode pooler it gets its own direct
        # connection (PM_DATABASE_DIRECT_URL); else it holds one of the pool's.
        self.listen_dsn = listen_dsn
        self.listening = False
        self._wake = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        listener = asyncio.create_task(self._listen(stop), name="express-listen")
        try:
            await asyncio.gather(*(self._drain(stop) for _ in range(self.concurrency)))
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _drain(self, stop: asyncio.Event) -> None:
        """Claim and send until nothing is due, then wait for a NOTIFY or the poll."""
        while not stop.is_set():
            # Cleared before the claim: a NOTIFY arriving during it wakes the wait below,
            # and a claim started after a NOTIFY sees the committed message.
            self._wake.clear()
            try:
                if await self.service.send_express():
                    continue
            except Exception:
                log.exception("express lane: claim failed, trying again shortly")
            await _wait_any(stop, self._wake, self.poll_seconds)

    async def _listen(self, stop: asyncio.Event) -> None:
        """Hold a LISTEN connection; reconnect on loss (polling covers the gap)."""

        def on_notify(*_: object) -> None:
            self._wake.set()

        while not stop.is_set():
            try:
                async with self._listen_connection() as conn:
                    await conn.add_listener(EXPRESS_CHANNEL, on_notify)
                    self.listening = True
                    # What committed before LISTEN took effect has no NOTIFY of its own.
                    self._wake.set()
                    try:
                        while not stop.is_set() and not conn.is_closed():
                            await _wait_any(stop, asyncio.Event(), 5.0)
                    finally:
                        self.listening = False
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
