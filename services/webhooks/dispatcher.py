"""The delivery engine of one worker process: fan-out, attempts, per-endpoint isolation.

- Fan-out: an event becomes one delivery row per matching endpoint (idempotent per
  (endpoint, event)); deliveries with a free slot are claimed in the same insert and
  attempted at once.
- Isolation: each endpoint has at most `webhooks_endpoint_concurrency` attempts in flight in
  this process. A delivery that finds its endpoint full is not held anywhere in memory or in
  a broker slot: it stays due in Postgres and the endpoint is marked as having a backlog
  (new events of a backlogged endpoint queue behind it); once half the endpoint's slots are
  free, one claim takes its next due deliveries, oldest first. A hanging endpoint therefore
  ties up its own slots only, never the consumers or other endpoints.
- Retries: the outcome is committed, then a wake-up job goes to a broker delay queue
  (`attempt_queue.py`); nothing sleeps in the worker.
- Safety net: a sweeper releases leases of attempts whose worker died and re-dispatches due
  deliveries whose wake-up was lost; `NOTIFY webhooks_wake` (manual retry, recover,
  re-enable) makes workers pull an endpoint's due deliveries at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from datetime import UTC, datetime

import asyncpg
from prometheus_client import Counter, Gauge, Histogram

from libs.common.events import Envelope
from services.webhooks import repository as repo
from services.webhooks.attempt_queue import DUE_TOLERANCE_MS, AttemptJob, AttemptQueue
from services.webhooks.payloads import EventBodies
from services.webhooks.service import (
    WEBHOOK_EVENT_TYPES,
    AttemptContext,
    Claim,
    Outcome,
    decide,
    delivery_id_for,
    endpoint_matches,
    event_mode,
    make_attempt,
    persist_outcomes,
)
from services.webhooks.settings import WebhooksSettings

log = logging.getLogger(__name__)

ATTEMPTS = Counter("pm_webhook_attempts_total", "Webhook attempts", ["outcome"])
ATTEMPT_SECONDS = Histogram(
    "pm_webhook_attempt_seconds",
    "Duration of webhook attempts",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
EVENT_TO_DELIVERY = Histogram(
    "pm_webhook_event_to_delivery_seconds",
    "Time from an event's creation to its first successful delivery",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
IN_FLIGHT = Gauge("pm_webhook_attempts_in_flight", "Webhook attempts in flight")
BACKLOGGED = Gauge("pm_webhook_backlogged_endpoints", "Endpoints with due deliveries waiting")


class OutcomeWriter:
    """Commits attempt outcomes in batches: while one batch commits, the next accumulates,
    so a busy worker pays one transaction for many attempts and an idle one waits for none."""

    def __init__(self, pool: asyncpg.Pool, settings: WebhooksSettings, batch: int = 500) -> None:
        self.pool = pool
        self.settings = settings
        self.batch = batch
        self._pending: list[tuple[Outcome, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhooks-outcomes")

    async def submit(self, outcome: Outcome) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((outcome, future))
        self._wake.set()
        await future

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                items, self._pending = self._pending[: self.batch], self._pending[self.batch :]
                try:
                    await persist_outcomes(self.pool, self.settings, [o for o, _ in items])
                except Exception as exc:
                    log.warning("webhooks: outcomes not recorded (%s); leases will expire", exc)
                    for _, future in items:
                        if not future.done():
                            future.set_exception(exc)
                else:
                    for _, future in items:
                        if not future.done():
                            future.set_result(None)
            if self._closing:
                return


class EndpointLookup:
    """The subscribed endpoints of each arriving event's tenant, looked up for all the events
    that arrived meanwhile in one query (fan-out handles messages concurrently; one query per
    event was most of its database work, and most tenants have no endpoint). Looked up after
    the event arrived, as before: nothing cached, an endpoint change applies at once."""

    def __init__(self, pool: asyncpg.Pool, batch: int = 500) -> None:
        self.pool = pool
        self.batch = batch
        self._waiting: dict[tuple[str, str], list[asyncio.Future[list[asyncpg.Record]]]] = {}
        self._task: asyncio.Task[None] | None = None

    async def endpoints(self, tenant_id: str, mode: str) -> list[asyncpg.Record]:
        future: asyncio.Future[list[asyncpg.Record]] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault((tenant_id, mode), []).append(future)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="webhooks-endpoint-lookup")
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            owners = list(self._waiting)[: self.batch]
            futures = {owner: self._waiting.pop(owner) for owner in owners}
            try:
                found = await repo.subscribed_endpoints_of(self.pool, owners)
            except Exception as exc:
                for waiting in futures.values():
                    for future in waiting:
                        if not future.done():
                            future.set_exception(exc)
                continue
            for owner, waiting in futures.items():
                for future in waiting:
                    if not future.done():
                        future.set_result(found[owner])


class Dispatcher:
    def __init__(
        self,
        settings: WebhooksSettings,
        pool: asyncpg.Pool,
        ctx: AttemptContext,
        queue: AttemptQueue,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.ctx = ctx
        self.queue = queue
        self.per_endpoint = settings.webhooks_endpoint_concurrency
        # A backlogged endpoint claims due deliveries once this few attempts are left in flight.
        self._low_water = self.per_endpoint // 2
        self.max_in_flight = settings.webhooks_max_in_flight
        self.lease = settings.webhooks_lease_seconds
        self.writer = OutcomeWriter(pool, settings)
        self.lookup = EndpointLookup(pool)
        self._in_flight: dict[str, int] = defaultdict(int)
        self._total = 0
        self._backlog: set[str] = set()
        self._pulling: set[str] = set()
        self._pull_again: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._background: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._trimmed_at = 0.0

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        self.writer.start()
        await self.queue.consume(self.on_job)
        self._background = [
            asyncio.create_task(self._sweep_loop(), name="webhooks-sweeper"),
            asyncio.create_task(self._listen_loop(), name="webhooks-wake"),
        ]

    async def stop(self, drain_seconds: float | None = None) -> None:
        """Stop taking work, let attempts in flight finish and their outcomes commit."""
        self._stop.set()
        await self.queue.stop_consuming()
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tasks:
            await asyncio.wait(
                set(self._tasks),
                timeout=drain_seconds or self.settings.webhooks_attempt_timeout_seconds + 5,
            )
        await self.writer.close()

    # ----------------------------------------------------------------- capacity

    def _reserve(self, endpoint_id: str) -> bool:
        if self._in_flight[endpoint_id] >= self.per_endpoint or self._total >= self.max_in_flight:
            return False
        self._in_flight[endpoint_id] += 1
        self._total += 1
        IN_FLIGHT.set(self._total)
        return True

    def _release(self, endpoint_id: str) -> None:
        self._in_flight[endpoint_id] -= 1
        if self._in_flight[endpoint_id] <= 0:
            del self._in_flight[endpoint_id]
        self._total -= 1
        IN_FLIGHT.set(self._total)

    def _mark_backlog(self, endpoint_id: str) -> None:
        self._backlog.add(endpoint_id)
        BACKLOGGED.set(len(self._backlog))

    def _kick(self, endpoint_id: str) -> None:
        if self._stop.is_set():
            return
        if endpoint_id in self._pulling:
            self._pull_again.add(endpoint_id)
            return
        self._pulling.add(endpoint_id)
        task = asyncio.create_task(self._pull(endpoint_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _kick_backlog(self) -> None:
        for endpoint_id in list(self._backlog):
            if self._total >= self.max_in_flight:
                return
            if self._in_flight.get(endpoint_id, 0) < self.per_endpoint:
                self._kick(endpoint_id)

    async def _pull(self, endpoint_id: str) -> None:
        """Claim due deliveries of one endpoint into its free slots."""
        try:
            while True:
                self._pull_again.discard(endpoint_id)
                free = min(
                    self.per_endpoint - self._in_flight.get(endpoint_id, 0),
                    self.max_in_flight - self._total,
                )
                if free <= 0:
                    return
                for _ in range(free):
                    self._reserve(endpoint_id)
                try:
                    rows = await repo.claim_due(
                        self.pool, endpoint_id, free, self.lease, DUE_TOLERANCE_MS
                    )
                except Exception:
                    for _ in range(free):
                        self._release(endpoint_id)
                    raise
                for _ in range(free - len(rows)):
                    self._release(endpoint_id)
                if len(rows) < free:
                    self._backlog.discard(endpoint_id)
                    BACKLOGGED.set(len(self._backlog))
                for row in rows:
                    self._start(Claim.of(row))
                if endpoint_id not in self._pull_again:
                    return
        except Exception as exc:
            log.warning("webhooks: claiming due deliveries failed (%s); the sweeper retries", exc)
        finally:
            self._pulling.discard(endpoint_id)

    # ----------------------------------------------------------------- work arrives

    async def fan_out(self, event: Envelope) -> int:
        """Create the event's deliveries and start those with a free slot; returns how many
        deliveries the event has."""
        if event.type not in WEBHOOK_EVENT_TYPES:
            return 0
        endpoints = await self.lookup.endpoints(event.tenant_id, event_mode(event))
        targets = [e for e in endpoints if endpoint_matches(e, event.type, event.data)]
        if not targets:
            return 0
        rows = []
        claims: dict[str, Claim] = {}
        bodies = EventBodies(event.type, event.time, event.data)
        for ep in targets:
            msg_id = delivery_id_for(ep["id"], event.id)
            body = bodies.body(msg_id, ep["payload_version"])
            # Behind an endpoint's backlog, not ahead of it: its older deliveries go first.
            backlogged = ep["id"] in self._backlog
            status = "sending" if not backlogged and self._reserve(ep["id"]) else "pending"
            if status == "sending":
                claims[msg_id] = Claim(
                    delivery_id=msg_id,
                    endpoint_id=ep["id"],
                    tenant_id=event.tenant_id,
                    event_type=event.type,
                    payload=body,
                    seq=0,
                    attempts=0,
                    cycle_attempts=0,
                    trigger="event",
                    url=ep["url"],
                    retry_schedule_ms=ep["retry_schedule_ms"],
                    secret_version=ep["secret_version"],
                )
            rows.append(
                (msg_id, ep["id"], event.tenant_id, event.id, event.type, body, status, self.lease)
            )
        try:
            inserted = await repo.insert_deliveries(self.pool, rows)
        except BaseException:
            for claim in claims.values():
                self._release(claim.endpoint_id)
            raise
        for msg_id, claim in claims.items():
            if msg_id in inserted:
                self._start(claim, event_time=event.time)
            else:
                self._release(claim.endpoint_id)
        # Full endpoints, and (on a redelivered event) rows that already existed: marked after
        # the insert committed, so the next pull of the endpoint is sure to see them.
        for row in rows:
            if row[0] not in claims or row[0] not in inserted:
                self._mark_backlog(row[1])
                if self._in_flight.get(row[1], 0) <= self._low_water:
                    self._kick(row[1])
        return len(rows)

    async def on_job(self, job: AttemptJob) -> None:
        """A retry's wake-up came out of its delay queue."""
        # Delay tiers hand a job over up to DUE_TOLERANCE_MS before it is due; wait out that
        # remainder here so a retry never comes earlier than its schedule says.
        early = job.due_ms / 1000 - time.time()
        if early > 0:
            await asyncio.sleep(min(early, DUE_TOLERANCE_MS / 1000))
        if not self._reserve(job.endpoint_id):
            self._mark_backlog(job.endpoint_id)
            return
        try:
            row = await repo.claim_job(
                self.pool, job.delivery_id, job.seq, self.lease, DUE_TOLERANCE_MS
            )
        except BaseException:
            self._release(job.endpoint_id)
            raise
        if row is None:
            self._release(job.endpoint_id)
            # Stale job (already done, superseded, or deleted), or the endpoint is disabled.
            await repo.pause_if_disabled(self.pool, job.delivery_id)
            return
        self._start(Claim.of(row))

    # ----------------------------------------------------------------- attempts

    def _start(self, claim: Claim, event_time: datetime | None = None) -> None:
        task = asyncio.create_task(self._run(claim, event_time))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, claim: Claim, event_time: datetime | None) -> None:
        try:
            attempted_at = datetime.now(UTC)
            result = await make_attempt(self.ctx, claim)
            ATTEMPT_SECONDS.observe(result.response_ms / 1000)
            outcome = decide(self.settings, claim, result, attempted_at)
            ATTEMPTS.labels(outcome.row.new_status).inc()
            await self.writer.submit(outcome)
            if result.succeeded and event_time is not None:
                EVENT_TO_DELIVERY.observe(max(0.0, time.time() - event_time.timestamp()))
            if outcome.retry_delay is not None and outcome.row.next_attempt_at is not None:
                due_ms = int(outcome.row.next_attempt_at.timestamp() * 1000)
                await self.queue.schedule(
                    AttemptJob(claim.delivery_id, claim.endpoint_id, claim.seq + 1, due_ms)
                )
        except Exception as exc:
            # The lease runs out and the sweeper makes the delivery due again.
            log.warning(
                "webhooks: attempt not completed",
                extra={"delivery_id": claim.delivery_id, "error": f"{type(exc).__name__}: {exc}"},
            )
        finally:
            capped = self._total >= self.max_in_flight
            self._release(claim.endpoint_id)
            # A backlogged endpoint pulls when half its slots are free, not after every attempt:
            # one claim for several deliveries, while the other half keeps it busy.
            if (
                claim.endpoint_id in self._backlog
                and self._in_flight.get(claim.endpoint_id, 0) <= self._low_water
            ):
                self._kick(claim.endpoint_id)
            # The process-wide cap was what held the others back: this free slot is theirs too.
            if capped and self._backlog:
                self._kick_backlog()

    # ----------------------------------------------------------------- safety nets

    async def sweep(self, grace_seconds: float | None = None) -> None:
        """Release dead leases, pause deliveries of disabled endpoints, re-dispatch overdue ones."""
        grace = grace_seconds
        if grace is None:
            grace = self.settings.webhooks_sweep_grace_seconds
        released = await repo.release_expired_leases(self.pool)
        if released:
            log.warning("webhooks: %d attempt(s) lost with their worker are due again", released)
        await repo.pause_disabled_overdue(self.pool)
        if time.monotonic() - self._trimmed_at >= self.settings.events_stream_trim_interval_seconds:
            self._trimmed_at = time.monotonic()
            await repo.trim_stream(
                self.pool,
                self.settings.events_stream_retention_hours,
                self.settings.events_stream_tenant_cap,
            )
        for endpoint_id in await repo.endpoints_with_overdue(self.pool, grace):
            self._mark_backlog(endpoint_id)
            self._kick(endpoint_id)
        # Released leases are due now, not overdue: pull them without the grace.
        if released:
            for endpoint_id in await repo.endpoints_with_overdue(self.pool, 0):
                self._mark_backlog(endpoint_id)
                self._kick(endpoint_id)

    async def _sweep_loop(self) -> None:
        interval = self.settings.webhooks_sweep_interval_seconds
        while not self._stop.is_set():
            try:
                await self.sweep()
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("webhooks: sweep failed (%s)", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    async def _listen_loop(self) -> None:
        def on_notify(_conn: object, _pid: int, _channel: str, endpoint_id: str) -> None:
            self._mark_backlog(endpoint_id)
            self._kick(endpoint_id)

        while not self._stop.is_set():
            try:
                async with self.pool.acquire() as conn:
                    await conn.add_listener(repo.WAKE_CHANNEL, on_notify)
                    try:
                        while not self._stop.is_set() and not conn.is_closed():
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(self._stop.wait(), 5.0)
                    finally:
                        with contextlib.suppress(Exception):
                            await conn.remove_listener(repo.WAKE_CHANNEL, on_notify)
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("webhooks: LISTEN lost (%s); the sweeper covers meanwhile", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)
