"""A customer's webhook receiver: a real HTTP/1.1 server on a local port, in its own thread.

It records every request (headers, body, arrival time) and answers as its script says:
a status (with headers, e.g. Retry-After), a delay, or a hang (no answer until the server
stops). Written on asyncio streams rather than a framework so that it stays cheap under the
benchmark's load; it speaks plain HTTP/1.1 with keep-alive and Content-Length bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() on arrival
    index: int  # 0-based order of arrival


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b"ok"
    delay: float = 0.0
    hang: bool = False


Script = Callable[[Received], Reply]


def always(status: int = 200, **kwargs: object) -> Script:
    reply = Reply(status=status, **kwargs)  # type: ignore[arg-type]
    return lambda _r: reply


def fail_then_succeed(failures: int, status: int = 500) -> Script:
    return lambda r: Reply(status=status if r.index < failures else 200)


class WebhookReceiver:
    def __init__(self, script: Script | None = None, *, record: bool = True) -> None:
        self.script = script or always(200)
        self.record = record
        self.requests: list[Received] = []
        self.count = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._stopping: asyncio.Event | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> WebhookReceiver:
        self._thread = threading.Thread(target=self._serve, name="webhook-receiver", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def wait_for(self, n: int, timeout: float = 30.0) -> list[Received]:
        """Block until `n` requests arrived (or fail after `timeout`, a safety net only)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self.count >= n:
                    return list(self.requests)
            time.sleep(0.01)
        raise AssertionError(f"receiver got {self.count} request(s), expected {n}")

    async def until(self, n: int, timeout: float = 30.0) -> list[Received]:
        return await asyncio.to_thread(self.wait_for, n, timeout)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.run_until_complete(self._main())
        loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stopping.wait()
        self._server.close()
        # Close the connections rather than cancel their handlers: a handler cancelled by
        # asyncio.start_server's callback logs "Exception in callback ... CancelledError" on
        # Python 3.11 (task.exception() of a cancelled task). Closed, a handler reading sees
        # EOF and returns; a hanging one returns on `_stopping`.
        for writer in list(self._writers):
            writer.close()
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:
            _, stragglers = await asyncio.wait(others, timeout=1)
            for task in stragglers:
                task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                with self._lock:
                    received = Received(method, path, headers, body, time.time(), self.count)
                    self.count += 1
                    if self.record:
                        self.requests.append(received)
                reply = self.script(received)
                if reply.hang:
                    assert self._stopping is not None
                    await self._stopping.wait()
                    return
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                reason = (
                    HTTPStatus(reply.status).phrase
                    if reply.status in HTTPStatus._value2member_map_
                    else "X"
                )
                out = [f"HTTP/1.1 {reply.status} {reason}", f"Content-Length: {len(reply.body)}"]
                out += [f"{k}: {v}" for k, v in reply.headers.items()]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + reply.body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()
