"""What every fake ESP shares: a real HTTP server (uvicorn in a thread) with a request log
and a failure script the tests drive (answer 429/503 next, be down, hold responses).

Run a fake on its own with `python -m tests.fakes.<provider> --port N` (e.g. for `make up`).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class LoggedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    recipients: list[str] = field(default_factory=list)
    json: Any = None
    at: float = field(default_factory=time.time)  # when the request arrived (epoch seconds)


class FakeEsp:
    """Base of a fake provider: subclasses add routes and answer like the provider."""

    def __init__(self) -> None:
        self.log: list[LoggedRequest] = []
        self._lock = threading.Lock()
        self._script: list[int] = []
        self.down = False
        self.hold = threading.Event()
        self.hold.set()  # set = answer immediately
        self.held = 0
        self._hold_after: int | None = None
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- what tests use
    def fail_next(self, *statuses: int) -> None:
        with self._lock:
            self._script.extend(statuses)

    def hold_after(self, n: int | None) -> None:
        """Answer the next `n` requests, then hold every later one until `hold` is set."""
        with self._lock:
            self._hold_after = None if n is None else len(self.log) + n

    def requests(self, path_prefix: str = "") -> list[LoggedRequest]:
        with self._lock:
            return [r for r in self.log if r.path.startswith(path_prefix)]

    def recipients(self, accepted_only: bool = False) -> list[str]:
        with self._lock:
            out: list[str] = []
            for r in self.log:
                if not accepted_only or r.status < 300:
                    out += r.recipients
            return out

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- what subclasses use
    def routes(self) -> list[Route]:
        raise NotImplementedError

    async def gate(
        self,
        request: Request,
        recipients: list[str],
        parsed: Any = None,
        arrived: float | None = None,
    ) -> int | None:
        """Log the request (as arrived at `arrived`, by default now); the scripted failure
        status to answer, if any."""
        body = await request.body()
        with self._lock:
            status = self._script.pop(0) if self._script else (503 if self.down else None)
            self.log.append(
                LoggedRequest(
                    request.method,
                    request.url.path,
                    dict(request.headers),
                    body,
                    status or 200,
                    recipients,
                    parsed,
                    arrived or time.time(),
                )
            )
            if self._hold_after is not None and len(self.log) > self._hold_after:
                self._hold_after = None
                self.hold.clear()
        if not self.hold.is_set():
            with self._lock:
                self.held += 1
            while not self.hold.is_set():
                await asyncio.sleep(0.02)
        return status

    def set_status(self, index: int, status: int) -> None:
        with self._lock:
            self.log[index].status = status

    @staticmethod
    def failure(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        hdrs = dict(headers or {})
        if status == 429:
            hdrs.setdefault("Retry-After", "0")
        return JSONResponse(body, status_code=status, headers=hdrs)

    # -- lifecycle
    def start(self, port: int = 0) -> FakeEsp:
        if not port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        app = Starlette(routes=self.routes())
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,  # leave the process's logging alone
            lifespan="off",
            timeout_keep_alive=30,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake ESP did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.hold.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)


def run_standalone(factory: Callable[[], FakeEsp], name: str) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m tests.fakes.{name}")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    fake = factory().start(args.port)
    print(f"fake {name} on {fake.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()
