"""The event stream (`GET /api/v1/events/stream`, Server-Sent Events): its store, its live
feed and one reader per open connection.

- Store: the stream consumer (queue `webhooks.stream`) appends every deliverable event to
  `stream_events`, numbered per (tenant, mode) under the head's row lock, so numbers commit
  in order, one transaction per batch of the messages that arrived meanwhile (the bus's
  batch consumer, `store_events`); only a redelivered event skips a number. The payload
  is the newest version's, with the event id as its `id`. Kept 25 h by default (bounded per
  tenant too), so a reconnect with `Last-Event-ID` from the last 24 h resumes without gaps.
- Live feed: the append's NOTIFY (committed with the row) carries the frame; each API process
  LISTENs once (`StreamHub`) and hands it to the open readers of that tenant and mode through
  bounded queues. The hub never waits for a reader: a full queue disconnects that reader.
- Reader: subscribes first, then replays from the store after its cursor, then follows the
  feed; a number it did not expect (a missed or too-large notification) makes it read the
  store again, so the feed is an accelerator and the store the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

import asyncpg
import orjson
from prometheus_client import Counter, Gauge

from libs.common.events import Envelope, read_scope_of
from libs.common.statistics import analyze_grown
from services.webhooks import repository as repo
from services.webhooks.payloads import LATEST_VERSION, deliverable_types, webhook_body
from services.webhooks.service import event_mode

log = logging.getLogger(__name__)

STREAM_READERS = Gauge("pm_event_stream_readers", "Open event stream connections")
STREAM_SENT = Counter("pm_event_stream_events_total", "Events written to event streams")
STREAM_DROPPED = Counter(
    "pm_event_stream_disconnects_total", "Event stream readers disconnected", ["reason"]
)
# pg_notify refuses payloads of 8000 bytes or more; larger frames are read from the store.
_NOTIFY_LIMIT = 7000
_REPLAY_PAGE = 500


# ------------------------------------------------------------------ the store (consumer side)


def _stream_item(event: Envelope) -> tuple[repo.StreamRow, str | None, list[str]] | None:
    """The stored row of a deliverable event, its NOTIFY frame (None when too large) and the
    tags the notification carries; None when the type is not streamable."""
    if read_scope_of(event.type) is None:
        return None
    payload = webhook_body(str(event.id), event.type, event.time, event.data, LATEST_VERSION)
    tags = [str(t) for t in event.data.get("contact_tags") or ()]
    campaign = event.data.get("campaign_id")
    row = repo.StreamRow(
        tenant_id=event.tenant_id,
        mode=event_mode(event),
        event_id=event.id,
        event_type=event.type,
        campaign_id=str(campaign) if campaign is not None else None,
        contact_tags=tags,
        payload=payload,
    )
    # The frame rides on the NOTIFY unless the notification would not fit (pg_notify takes
    # < 8000 bytes): then readers read the store, where the tags are too.
    size = len(payload.encode()) + sum(len(t.encode()) + 3 for t in tags) + 400
    if size <= _NOTIFY_LIMIT:
        return row, payload, tags
    return row, None, []


async def store_event(pool: asyncpg.Pool, event: Envelope) -> int | None:
    """Append a deliverable event to its tenant's stream; None when not streamable or already
    stored."""
    item = _stream_item(event)
    if item is None:
        return None
    return await repo.append_stream_event(pool, *item)


# The table a burst of events grows (ANALYZEd when it outgrew its statistics).
STREAM_TABLES = ("stream_events",)


async def store_events(pool: asyncpg.Pool, events: list[Envelope]) -> None:
    """Append a batch of events (the stream consumer's, `EventBus.subscribe_batch`) in one
    transaction: one commit for the lot, rows in arrival order, so a tenant's events are
    numbered in the order they came, each id once. Raises when any of them cannot be stored:
    the bus then stores them one by one, so a bad event fails alone."""
    seen: set[uuid.UUID] = set()
    items = []
    for event in events:
        item = _stream_item(event) if event.id not in seen else None
        seen.add(event.id)
        if item is not None:
            items.append(item)
    if items:
        await repo.append_stream_events(pool, items)
        # A burst grows the stream by thousands of rows a second: keep its statistics (and
        # so the batch statement's plan) in step with its size (libs.common.statistics).
        await analyze_grown(pool, STREAM_TABLES)


# ------------------------------------------------------------------ what a reader wants


@dataclass(frozen=True)
class StreamFilter:
    types: frozenset[str]
    campaign_ids: frozenset[str] = frozenset()
    contact_tags: frozenset[str] = frozenset()

    def matches(self, event_type: str, campaign_id: str | None, tags: Sequence[str]) -> bool:
        if event_type not in self.types:
            return False
        if self.campaign_ids and campaign_id not in self.campaign_ids:
            return False
        return not self.contact_tags or bool(self.contact_tags.intersection(tags))


def readable_types(scopes: Collection[str], patterns: Sequence[str] | None) -> frozenset[str]:
    """The deliverable types the caller's scopes may read, narrowed by `types=` patterns."""
    allowed = {t for t in deliverable_types() if read_scope_of(t) in scopes}
    if patterns:
        allowed = {t for t in allowed if any(fnmatchcase(t, p) for p in patterns)}
    return frozenset(allowed)


def unknown_patterns(patterns: Sequence[str]) -> list[str]:
    return [p for p in patterns if not any(fnmatchcase(t, p) for t in deliverable_types())]


# ------------------------------------------------------------------ the live feed


@dataclass
class _Item:
    seq: int
    event_id: str
    event_type: str
    campaign_id: str | None
    tags: list[str]
    frame: str | None  # the payload; None: read it from the store


@dataclass(eq=False)
class Subscription:
    tenant_id: str
    mode: str
    queue: asyncio.Queue[_Item]
    overflowed: asyncio.Event = field(default_factory=asyncio.Event)


class StreamHub:
    """One LISTEN connection per API process, fanning notifications out to its readers."""

    def __init__(self, dsn: str, queue_max: int) -> None:
        self._dsn = dsn
        self._queue_max = queue_max
        self._subs: dict[tuple[str, str], set[Subscription]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="event-stream-hub")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), 10)

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def subscribe(self, tenant_id: str, mode: str) -> Subscription:
        sub = Subscription(tenant_id, mode, asyncio.Queue(self._queue_max))
        self._subs[(tenant_id, mode)].add(sub)
        STREAM_READERS.inc()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get((sub.tenant_id, sub.mode))
        if subs is not None and sub in subs:
            subs.discard(sub)
            STREAM_READERS.dec()
            if not subs:
                del self._subs[(sub.tenant_id, sub.mode)]

    def dispatch(self, text: str) -> None:
        try:
            note = orjson.loads(text)
        except orjson.JSONDecodeError:
            return
        subs = self._subs.get((note["t"], note["m"]))
        if not subs:
            return
        item = _Item(note["s"], note["i"], note["y"], note["c"], note["g"], note["f"])
        for sub in list(subs):
            if sub.overflowed.is_set():
                continue
            try:
                sub.queue.put_nowait(item)
            except asyncio.QueueFull:
                # Never wait for a slow reader: it is cut off and resumes by Last-Event-ID.
                sub.overflowed.set()

    def _wake_all(self) -> None:
        """After the LISTEN connection was lost: every reader re-reads the store."""
        for subs in self._subs.values():
            for sub in subs:
                with contextlib.suppress(asyncio.QueueFull):
                    sub.queue.put_nowait(_Item(-1, "", "", None, [], None))

    async def _listen(self) -> None:
        def on_notify(_c: object, _pid: int, _channel: str, payload: str) -> None:
            self.dispatch(payload)

        while not self._stop.is_set():
            try:
                conn = await asyncpg.connect(self._dsn)
                try:
                    await conn.add_listener(repo.STREAM_CHANNEL, on_notify)
                    self._ready.set()
                    self._wake_all()
                    while not self._stop.is_set() and not conn.is_closed():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._stop.wait(), 5.0)
                finally:
                    with contextlib.suppress(Exception):
                        await conn.close()
            except (asyncpg.PostgresError, OSError) as exc:
                log.warning("event stream: LISTEN lost (%s); readers poll the store", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)


# ------------------------------------------------------------------ one reader


@dataclass(frozen=True)
class ReaderLimits:
    heartbeat_seconds: float
    max_seconds: float
    retry_ms: int = 2000


def _frame(event_id: str, event_type: str, payload: str) -> bytes:
    return f"id: {event_id}\nevent: {event_type}\ndata: {payload}\n\n".encode()


def _goodbye(why: str, last_id: str | None) -> bytes:
    return f": {why}; reconnect with Last-Event-ID: {last_id or ''}\n\n".encode()


async def read_stream(
    pool: asyncpg.Pool,
    hub: StreamHub,
    sub: Subscription,
    cursor: int,
    wanted: StreamFilter,
    limits: ReaderLimits,
    last_id: str | None = None,
) -> AsyncIterator[bytes]:
    """The SSE body of one connection, from after `cursor` on. The caller subscribed `sub`
    before reading `cursor`, so nothing committed in between is missed."""
    tenant_id, mode = sub.tenant_id, sub.mode
    deadline = time.monotonic() + limits.max_seconds
    reason = "closed"

    async def replay() -> AsyncIterator[bytes]:
        nonlocal cursor, last_id
        while True:
            rows = await repo.stream_events_after(pool, tenant_id, mode, cursor, _REPLAY_PAGE)
            for r in rows:
                cursor = r["seq"]
                if wanted.matches(r["event_type"], r["campaign_id"], r["contact_tags"]):
                    last_id = str(r["event_id"])
                    STREAM_SENT.inc()
                    yield _frame(last_id, r["event_type"], r["payload"])
            if len(rows) < _REPLAY_PAGE:
                return

    try:
        # `id:` without data sets the client's Last-Event-ID (EventSource too) without an event.
        opening = f"retry: {limits.retry_ms}\n" + (f"id: {last_id}\n" if last_id else "")
        yield (opening + ": connected\n\n").encode()
        async for chunk in replay():
            yield chunk
        while True:
            if sub.overflowed.is_set():
                reason = "behind"
                yield _goodbye("reader fell behind", last_id)
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = "max_duration"
                yield _goodbye("stream time limit", last_id)
                return
            try:
                item = await asyncio.wait_for(
                    sub.queue.get(), min(limits.heartbeat_seconds, remaining)
                )
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            if 0 <= item.seq <= cursor:
                continue
            if item.seq == cursor + 1 and item.frame is not None:
                cursor = item.seq
                if wanted.matches(item.event_type, item.campaign_id, item.tags):
                    last_id = item.event_id
                    STREAM_SENT.inc()
                    yield _frame(item.event_id, item.event_type, item.frame)
                continue
            # A gap (missed notification), a frame too large to notify, or a re-listen.
            async for chunk in replay():
                yield chunk
    finally:
        STREAM_DROPPED.labels(reason).inc()
        hub.unsubscribe(sub)


def filter_from(
    types: frozenset[str], campaign_ids: Sequence[str], contact_tags: Sequence[str]
) -> StreamFilter:
    return StreamFilter(types, frozenset(campaign_ids), frozenset(contact_tags))
