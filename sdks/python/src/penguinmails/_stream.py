"""The live event stream (`GET /api/v1/events/stream`, Server-Sent Events), hand-written:
the generator skips operations that do not answer JSON.

`EventStream` reconnects by itself with `Last-Event-ID` (the id of the last event it handed
out, or the stream head's id the server names on connect), so a dropped connection, a
server-side time limit or a reader cut off for falling behind costs neither an event nor a
duplicate. SSE framing is parsed by `httpx-sse`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from httpx_sse import EventSource, ServerSentEvent

from ._core import MAX_RETRY_AFTER, _retryable, backoff, parse_retry_after
from ._errors import APIConnectionError, PenguinMailsError, error_for

if TYPE_CHECKING:
    from ._core import AsyncTransport, SyncTransport

STREAM_PATH = "/api/v1/events/stream"
# Heartbeats come every 15 s; a connection silent for this long is dead: reconnect.
DEFAULT_READ_TIMEOUT = 60.0


@dataclass(frozen=True)
class StreamEvent:
    """One event: `data` is the webhook payload (version 2026-12-01) exactly as sent, JSON."""

    id: str
    type: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


def _csv(values: Sequence[str] | str | None) -> str | None:
    if values is None:
        return None
    items = [values] if isinstance(values, str) else list(values)
    joined = ",".join(v for v in items if v)
    return joined or None


class _StreamState:
    """What the sync and async streams share: the request, the cursor, the retry decisions."""

    def __init__(
        self,
        core: SyncTransport | AsyncTransport,
        *,
        types: Sequence[str] | str | None = None,
        campaign_ids: Sequence[str] | str | None = None,
        contact_tags: Sequence[str] | str | None = None,
        last_event_id: str | None = None,
        reconnect: bool = True,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        on_connect: Callable[[], None] | None = None,
        on_reconnect: Callable[[str, float], None] | None = None,
    ) -> None:
        self._core = core
        self._query = {
            "types": _csv(types),
            "campaign_ids": _csv(campaign_ids),
            "contact_tags": _csv(contact_tags),
        }
        self.last_event_id = last_event_id
        self.reconnect = reconnect
        self.read_timeout = read_timeout
        self.on_connect = on_connect
        self.on_reconnect = on_reconnect
        self.connections = 0
        self._failures = 0
        self._open_retries = 0

    def _request(self) -> dict[str, Any]:
        call = self._core._prepare(
            "GET",
            STREAM_PATH,
            body=None,
            query=self._query,
            auth="key",
            idempotent=False,
            options=None,
        )
        headers = {**call.headers, "Accept": "text/event-stream", "Cache-Control": "no-store"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        return {
            "method": "GET",
            "url": call.url,
            "headers": headers,
            "params": tuple(call.params),
            "timeout": httpx.Timeout(self._core.config.timeout, read=self.read_timeout),
        }

    def _refused(self, response: httpx.Response) -> PenguinMailsError:
        try:
            body = response.json()
        except ValueError:
            body = response.text
        retry_after = parse_retry_after(response.headers)
        return error_for(response.status_code, body, response.headers, retry_after)

    def _connected(self) -> None:
        self.connections += 1
        if self.on_connect is not None:
            self.on_connect()

    def _event(self, sse: ServerSentEvent) -> StreamEvent | None:
        if sse.event and sse.data:
            return StreamEvent(id=sse.id, type=sse.event, data=sse.data)
        if sse.id and not self.last_event_id:
            # The opening frame names the stream head: a cursor before any event.
            self.last_event_id = sse.id
        return None

    def _done_with(self, event: StreamEvent) -> None:
        # Asked for the next one: the loop is done with this event, the resume point moves
        # past it (an interrupted loop resumes at this event).
        self.last_event_id = event.id or self.last_event_id
        self._failures = 0

    def _may_retry(self, retry_after: float | None = None) -> bool:
        """Whether a failure may be followed by another attempt: always when reconnecting;
        else only while opening the one connection, as any call is retried (`max_retries`
        times, and not for a Retry-After beyond a minute)."""
        if self.reconnect:
            return True
        if self.connections or self._open_retries >= self._core.config.max_retries:
            return False
        if retry_after is not None and retry_after > MAX_RETRY_AFTER:
            return False
        self._open_retries += 1
        return True

    def _after(self, started: float, exc: Exception | None) -> float | None:
        """How long to wait before reconnecting (None: stop; raises what must surface)."""
        if isinstance(exc, PenguinMailsError):
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is None and exc.headers is not None:
                retry_after = parse_retry_after(exc.headers)  # a 503's
            retryable = exc.status is not None and _retryable(exc.status)
            if not (retryable and self._may_retry(retry_after)):
                raise exc
            wait = retry_after if retry_after is not None else backoff(self._failures)
            reason = str(exc)
        elif isinstance(exc, httpx.TransportError):
            if not self._may_retry():
                raise APIConnectionError(f"Event stream: {exc}", code="connection_error") from exc
            wait = backoff(self._failures)
            reason = f"connection lost ({type(exc).__name__})"
        else:
            if not self.reconnect:
                return None
            reason = "the server ended the stream"
            # Ended at once, again and again: back off rather than spin.
            wait = backoff(self._failures) if time.monotonic() - started < 1.0 else 0.0
        if wait:
            self._failures += 1
        if self.on_reconnect is not None:
            self.on_reconnect(reason, wait)
        return wait


class EventStream(_StreamState):
    """Iterate to receive events, live, for as long as you iterate.

    `types` are catalog types or patterns (`email.*`); `campaign_ids` / `contact_tags` narrow
    as webhook endpoint filters do; `last_event_id` resumes after that event (a 409
    `event_stream_cursor_expired` ConflictError when it is older than the stream keeps).
    `reconnect=False` makes one connection (opened with the retries of any call: `max_retries`,
    a Retry-After of at most a minute) and ends the iteration when the server ends it.
    `last_event_id` is
    the resume point: the last event your loop finished with (it asked for the next one).
    `on_connect()` is called on every (re)connection, `on_reconnect(reason, delay)` before
    each reconnection.
    """

    _core: SyncTransport

    def _connect_once(self) -> Iterator[StreamEvent]:
        """One connection: its events until the server ends it (return) or it breaks."""
        with self._core.http.stream(**self._request()) as response:
            if response.status_code != 200:
                response.read()
                raise self._refused(response)
            self._connected()
            for sse in EventSource(response).iter_sse():
                event = self._event(sse)
                if event is not None:
                    yield event
                    self._done_with(event)

    def __iter__(self) -> Iterator[StreamEvent]:
        while True:
            started = time.monotonic()
            error: Exception | None = None
            try:
                yield from self._connect_once()
            except (PenguinMailsError, httpx.TransportError) as exc:
                error = exc
            wait = self._after(started, error)
            if wait is None:
                return
            if wait:
                time.sleep(wait)


class AsyncEventStream(_StreamState):
    """`async for` it: the same stream and reconnection as `EventStream`, on asyncio."""

    _core: AsyncTransport

    async def _connect_once(self) -> AsyncIterator[StreamEvent]:
        async with self._core.http.stream(**self._request()) as response:
            if response.status_code != 200:
                await response.aread()
                raise self._refused(response)
            self._connected()
            async for sse in EventSource(response).aiter_sse():
                event = self._event(sse)
                if event is not None:
                    yield event
                    self._done_with(event)

    async def __aiter__(self) -> AsyncIterator[StreamEvent]:
        while True:
            started = time.monotonic()
            error: Exception | None = None
            try:
                async for event in self._connect_once():
                    yield event
            except (PenguinMailsError, httpx.TransportError) as exc:
                error = exc
            wait = self._after(started, error)
            if wait is None:
                return
            if wait:
                await asyncio.sleep(wait)


__all__ = ["AsyncEventStream", "EventStream", "StreamEvent"]
