"""What the SDK test suites need beside the real stack, in one local HTTP server (its own thread):

* a proxy in front of the gateway that can lose answers: armed with
  `POST /__sdk_test/drop {"method", "path", "count"}`, it forwards the next matching request
  to the gateway, waits for the gateway's answer, then closes the connection without
  passing it on (the client sees a connection error, the server did the work) — how a
  retried POST is shown to create one object. A 429 or 503 answer (nothing was done: rate
  limited, or a dependency down) is passed on and the drop stays armed for the client's
  retry: losing it would lose no work, and the retry would be a first execution, not a
  replay;
* `GET /__sdk_test/log`: what went through the proxy (method, path, Idempotency-Key,
  status, whether the gateway replayed a stored answer);
* `GET /__sdk_test/webhooks?path=/hooks/node`: the deliveries a real WebhookReceiver
  (tests/fakes/webhook_receiver.py) got, raw bodies included, so that Node and Ruby test
  suites can verify real signatures too.

Written on asyncio streams, like the receiver: plain HTTP/1.1 with Content-Length bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.fakes.webhook_receiver import WebhookReceiver

HOP_BY_HOP = {"host", "content-length", "connection", "keep-alive", "transfer-encoding"}
# Answers after which the server did nothing and the client retries on its own: never lost.
NOTHING_DONE = {429, 503}


@dataclass
class Drop:
    method: str
    path: str
    count: int


@dataclass
class SdkTestServer:
    upstream: str
    receiver: WebhookReceiver
    drops: list[Drop] = field(default_factory=list)
    log: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _loop: asyncio.AbstractEventLoop | None = None
    _stopping: asyncio.Event | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SdkTestServer:
        self._thread = threading.Thread(target=self._serve, name="sdk-test-server", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(10)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.run_until_complete(self._main())
        loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        self._http = httpx.AsyncClient(timeout=60)
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stopping.wait()
        server.close()
        await self._http.aclose()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if target.startswith("/__sdk_test/"):
                    status, out = self._control(method, target, body)
                    payload = json.dumps(out).encode()
                    await _write(writer, status, {"Content-Type": "application/json"}, payload)
                    continue
                if not await self._forward(method, target, headers, body, writer):
                    return  # the answer was dropped: the connection closes unanswered
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _control(self, method: str, target: str, body: bytes) -> tuple[int, Any]:
        parts = urlsplit(target)
        if method == "POST" and parts.path == "/__sdk_test/drop":
            spec = json.loads(body or b"{}")
            with self._lock:
                self.drops.append(Drop(spec["method"], spec["path"], int(spec.get("count", 1))))
            return 200, {"armed": True}
        if parts.path == "/__sdk_test/log":
            with self._lock:
                return 200, list(self.log)
        if parts.path == "/__sdk_test/webhooks":
            wanted = parse_qs(parts.query).get("path", [None])[0]
            return 200, [
                {"path": r.path, "headers": r.headers, "body": r.body.decode()}
                for r in self.receiver.snapshot()
                if wanted is None or r.path == wanted
            ]
        return 404, {"error": "unknown control path"}

    def _take_drop(self, method: str, path: str) -> bool:
        with self._lock:
            for drop in self.drops:
                if drop.method == method and drop.path == path and drop.count > 0:
                    drop.count -= 1
                    return True
        return False

    async def _forward(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        writer: asyncio.StreamWriter,
    ) -> bool:
        path = urlsplit(target).path
        forwarded = {k: v for k, v in headers.items() if k not in HOP_BY_HOP}
        response = await self._http.request(
            method, self.upstream + target, headers=forwarded, content=body
        )
        drop = response.status_code not in NOTHING_DONE and self._take_drop(method, path)
        with self._lock:
            self.log.append(
                {
                    "method": method,
                    "path": path,
                    "idempotency_key": headers.get("idempotency-key"),
                    "status": response.status_code,
                    "replayed": response.headers.get("idempotent-replayed") == "true",
                    "dropped": drop,
                }
            )
        if drop:
            return False
        out_headers = {
            k: v
            for k, v in response.headers.items()
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-encoding"
        }
        await _write(writer, response.status_code, out_headers, response.content)
        return True


async def _write(
    writer: asyncio.StreamWriter, status: int, headers: dict[str, str], body: bytes
) -> None:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
