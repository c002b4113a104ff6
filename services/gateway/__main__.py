"""Processes of the gateway service: `python -m services.gateway api`.

The api process listens twice: the public port (the API) and, for Prometheus only, the
metrics port (`PM_METRICS_PORT`; `/metrics`, `/healthz`), so the public port never exposes
operational metrics.
"""

import asyncio
import contextlib
import sys
from collections.abc import Generator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from libs.common.runner import Command, Process, run_cli, run_process
from libs.common.telemetry import metrics_response
from services.gateway.api import create_api
from services.gateway.settings import GatewaySettings


class _MetricsServer(uvicorn.Server):
    """uvicorn without its own signal handling: the runner owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def metrics_app() -> Starlette:
    async def metrics(_: Request) -> Response:
        return metrics_response()

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/metrics", metrics), Route("/healthz", healthz)])


async def api(settings: GatewaySettings) -> None:
    async def metrics_listener(stop: asyncio.Event) -> None:
        config = uvicorn.Config(
            metrics_app(),
            host=settings.metrics_host,
            port=settings.metrics_listen_port(),
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        server = _MetricsServer(config)
        serving = asyncio.create_task(server.serve(), name="metrics-http")
        await stop.wait()
        server.should_exit = True
        await serving

    await run_process(settings, "api", create_api(settings), body=metrics_listener)


PROCESSES: dict[str, Process] = {"api": api}
COMMANDS: dict[str, Command] = {}

if __name__ == "__main__":
    sys.exit(run_cli("gateway", GatewaySettings, PROCESSES, COMMANDS))
