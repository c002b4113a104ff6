"""What one service's own FastAPI app says about itself: its OpenAPI document, its real routes
(path, methods, success status, handler name) and the error codes registered once it is
imported. Run as `python -m scripts.docs.collect <service>` in a subprocess per service, so no
process ever imports two services (the rule import-linter enforces for the services)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
UPSTREAM_SERVICES = ("keys", "campaigns", "delivery", "webhooks", "billing", "inbox")
ALL_SERVICES = ("gateway", *UPSTREAM_SERVICES)


def describe(service: str) -> dict[str, Any]:
    """Import `services.<service>.api` here and describe its app (no server, no I/O)."""
    from fastapi.routing import APIRoute, iter_route_contexts

    from libs.common.http import ERROR_CODES

    module = importlib.import_module(f"services.{service}.api")
    app = module.create_api()
    routes = []
    # Routers included into the app are flattened lazily (FastAPI >= 0.16x): walk the
    # effective routes, the same view FastAPI builds its own schema from.
    for route in iter_route_contexts(app.routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        for method in sorted(set(route.methods or ()) - {"HEAD", "OPTIONS"}):
            routes.append(
                {
                    "path": route.path,
                    "method": method.lower(),
                    "name": route.name,
                    "status_code": route.status_code or 200,
                }
            )
    return {
        "service": service,
        "subscriptions": _subscriptions(service),
        "openapi": app.openapi(),
        "routes": routes,
        "error_codes": {c: [s, m] for c, (s, m) in sorted(ERROR_CODES.items())},
    }


class _RecordingBus:
    """Stands in for `EventBus` while a consumers module's `setup` runs: it only records
    which queue binds which patterns (nothing is connected, no handler is called)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.queues: list[dict[str, Any]] = []

    def subscribe(self, purpose: str, patterns: list[str], **options: Any) -> Any:
        self.queues.append({"queue": f"{self.service}.{purpose}", "patterns": list(patterns)})
        return lambda handler: handler

    def subscribe_batch(self, purpose: str, patterns: list[str], **options: Any) -> Any:
        return self.subscribe(purpose, patterns)

    def on(self, purpose: str, *types: Any, **options: Any) -> Any:
        return self.subscribe(purpose, [t.event_type for t in types])

    def handle_command(self, command: Any, **options: Any) -> Any:
        # A command queue is private to its service: not part of the AsyncAPI document.
        return lambda handler: handler


def _subscriptions(service: str) -> list[dict[str, Any]]:
    try:
        consumers = importlib.import_module(f"services.{service}.consumers")
    except ModuleNotFoundError:
        return []
    bus = _RecordingBus(service)
    # `setup`, and the `setup_<name>` of consumers that run in a process of their own
    # (webhooks' `setup_stream`).
    for name in sorted(n for n in vars(consumers) if n == "setup" or n.startswith("setup_")):
        getattr(consumers, name)(bus, None)
    return bus.queues


def _clean_env() -> dict[str, str]:
    # The documented schema must not depend on whoever runs the generator (PM_* settings).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    env.update(PYTHONPATH=str(REPO), PYTHONHASHSEED="0", PM_LOG_LEVEL="WARNING")
    return env


def collect(service: str) -> dict[str, Any]:
    """`describe(service)` in a fresh interpreter."""
    done = subprocess.run(  # noqa: S603 (this interpreter, our own module)
        [sys.executable, "-m", "scripts.docs.collect", service],
        cwd=REPO,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"describing {service} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def collect_all(services: tuple[str, ...] = ALL_SERVICES) -> dict[str, dict[str, Any]]:
    # Two at a time: the machine (and CI runners) rarely have more than two cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(services, pool.map(collect, services), strict=True))


if __name__ == "__main__":
    import logging

    logging.disable(logging.CRITICAL)
    out = sys.stdout
    sys.stdout = sys.stderr  # anything a module prints on import must not corrupt the JSON
    payload = describe(sys.argv[1])
    out.write(json.dumps(payload, sort_keys=True))
