"""Process entry points: `python -m services.<name> <process>` and graceful shutdown.

Every process serves HTTP (the API, or just /healthz, /readyz and /metrics for workers and
relays) and may run a background body (a consumer, a relay). On SIGTERM or SIGINT the body
is told to stop and awaited first (consumers stop fetching and settle in-flight messages;
relays finish their batch), then the HTTP server stops accepting and drains in-flight
requests. `terminationGracePeriodSeconds` in deploy/k8s leaves room for both.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Generator, Mapping, Sequence
from typing import Any, TypeVar

import uvicorn
import uvloop
from fastapi import FastAPI

from libs.common.app import create_app
from libs.common.bus import EventBus
from libs.common.db import migrate
from libs.common.outbox import OutboxRelay
from libs.common.resources import Resources
from libs.common.settings import ServiceSettings
from libs.common.telemetry import configure_logging

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)
Body = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
Process = Callable[[Any], Coroutine[Any, Any, None]]
Command = Callable[[Any, list[str]], int]

HTTP_DRAIN_SECONDS = 20


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def _serve(server: uvicorn.Server) -> None:
    """uvicorn exits the interpreter (`sys.exit`) when it cannot bind its port or its
    lifespan startup fails. Raised inside a task, that SystemExit left the loop at once and
    the runner's teardown then waited forever on the body it had never told to stop: the
    process hung, port taken, instead of failing. Here it is an error like any other:
    `run_process` stops the body and exits non-zero."""
    try:
        await server.serve()
    except SystemExit as exc:
        raise RuntimeError(
            f"the HTTP server did not start on {server.config.host}:{server.config.port}"
            f" (uvicorn exit {exc.code}; its error is logged above)"
        ) from None


async def run_process(
    settings: ServiceSettings, process: str, app: FastAPI, body: Body | None = None
) -> None:
    """Serve `app` (and run `body`) until SIGTERM/SIGINT, then shut down in order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.port_for(process),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=HTTP_DRAIN_SECONDS,
        lifespan="on",
    )
    server = _Server(config)
    server_task = asyncio.create_task(_serve(server), name="http")
    body_task = asyncio.create_task(body(stop), name="body") if body else None
    waiters: list[asyncio.Task[Any]] = [server_task, asyncio.create_task(stop.wait())]
    if body_task:
        waiters.append(body_task)
    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    log.info("shutting down", extra={"process_kind": process})  # `process` is a LogRecord field
    if body_task:
        # The body watches `stop`; it finishes its in-flight work before we stop serving probes.
        with contextlib.suppress(asyncio.CancelledError):
            await body_task
    server.should_exit = True
    await server_task
    for task in done:
        if task.exception() is not None and task is not server_task:
            raise task.exception()  # type: ignore[misc]


def relay_process(schema: str) -> Process:
    """The outbox relay of one service's schema, as a process."""

    async def run(settings: ServiceSettings) -> None:
        resources = Resources(settings, schema=schema, amqp=False)
        await resources.open()
        relay = OutboxRelay(
            resources.pool,
            schema,
            settings.amqp_url,
            exchange=settings.events_exchange,
            listen_dsn=settings.database_direct_url,
        )

        async def rabbitmq() -> bool:
            return relay.is_ready()

        app = create_app(
            settings, process="relay", readiness={**resources.readiness(), "rabbitmq": rabbitmq}
        )
        try:
            await run_process(settings, "relay", app, relay.run)
        finally:
            await resources.close()

    return run


def bus_for(settings: ServiceSettings, resources: Resources) -> EventBus:
    """A consumer process's bus: its service's settings, its schema's pool for the inbox."""
    return EventBus(
        service=settings.service_name,
        amqp_url=settings.amqp_url,
        pool=resources.pool if resources.schema else None,
        exchange=settings.events_exchange,
        retry_delays_ms=settings.retry_delays_ms,
        prefetch=settings.consumer_prefetch,
    )


async def serve_bus(
    settings: ServiceSettings,
    resources: Resources,
    register: Callable[[EventBus], None],
    *,
    process: str = "worker",
    background: Sequence[Body] = (),
) -> None:
    """Run a consumer process: `register` adds the handlers, `background` bodies run beside.

    On SIGTERM the broker stops fetching, in-flight handlers finish (FastStream's graceful
    timeout) and only completed messages are acknowledged (the rest are redelivered); the
    background bodies see `stop` and finish their round.
    """
    bus = bus_for(settings, resources)
    register(bus)

    async def body(stop: asyncio.Event) -> None:
        await bus.start()
        tasks = [asyncio.create_task(b(stop)) for b in background]
        try:
            await stop.wait()
        finally:
            await bus.stop()
            await asyncio.gather(*tasks)

    app = create_app(
        settings, process=process, readiness={**resources.readiness(), "rabbitmq": bus.is_ready}
    )
    await run_process(settings, process, app, body)


def periodic(
    name: str, round_: Callable[[], Coroutine[Any, Any, object]], interval: Callable[[], float]
) -> Body:
    """A background body running `round_` every `interval()` seconds until stop; a failed
    round is logged and the next one runs as planned."""

    async def body(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await round_()
            except Exception:
                log.exception("%s failed; the next round continues", name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval())

    return body


def worker_process(
    setup: Callable[[EventBus, Resources], None],
    *,
    schema: str | None,
    redis: bool = False,
    vault: bool = False,
    process: str = "worker",
) -> Process:
    """A consumer process whose handlers `setup(bus, resources)` registers."""

    async def run(settings: ServiceSettings) -> None:
        resources = Resources(settings, schema=schema, redis=redis, vault=vault, amqp=False)
        await resources.open()
        try:
            await serve_bus(settings, resources, lambda bus: setup(bus, resources), process=process)
        finally:
            await resources.close()

    return run


def migrate_command(schema: str) -> Command:
    def run(settings: ServiceSettings, _args: list[str]) -> int:
        # A session connection: the advisory lock must outlive dbmate's transactions.
        print(migrate(schema, settings.direct_database_url()) or f"{schema}: up to date")
        return 0

    return run


def freeze_startup_heap() -> None:
    """Move what the process holds so far (modules, classes, functions: ~140,000 objects in a
    service process) out of the cyclic collector's reach, for good: it lives as long as the
    process. Otherwise every full collection walks all of it again (~90 ms of CPU each, the
    event loop stopped meanwhile): a bulk send of 20,000 emails set off five of them in the
    delivery worker, on the pipeline's path (bench/delivery.py). Reference counting and later
    collections still free everything the process makes from here on."""
    gc.collect()
    gc.freeze()


def run_cli(
    service: str,
    settings_cls: type[S],
    processes: Mapping[str, Process],
    commands: Mapping[str, Command] | None = None,
    argv: list[str] | None = None,
) -> int:
    """`python -m services.<service> <process|command> [args]`."""
    commands = dict(commands or {})
    parser = argparse.ArgumentParser(prog=f"python -m services.{service}")
    parser.add_argument("what", choices=sorted([*processes, *commands]))
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    settings = settings_cls()
    configure_logging(f"{service}-{ns.what}", settings.log_level)
    if ns.what in commands:
        return commands[ns.what](settings, ns.args)
    settings.process_kind = ns.what  # its row of the connection budget (db.POOL_BUDGET)
    if nice := settings.nice_for(ns.what):
        os.nice(nice)  # background work yields the CPU to processes answering callers
    freeze_startup_heap()
    # uvloop (uvicorn[standard] brings it): what uvicorn would pick if it made the loop
    # itself; here the runner makes it, so it must ask. Lower per-request latency and CPU
    # for every process (gateway hop, relays, consumers).
    uvloop.run(processes[ns.what](settings))
    return 0
