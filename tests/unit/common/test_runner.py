"""run_cli: the loop every service process runs on."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import uvloop

from libs.common.runner import run_cli
from libs.common.settings import BACKGROUND_NICE, ServiceSettings

REPO = Path(__file__).resolve().parents[3]


def test_processes_run_on_uvloop() -> None:
    seen: list[type[asyncio.AbstractEventLoop]] = []

    async def probe(_settings: Any) -> None:
        seen.append(type(asyncio.get_running_loop()))

    assert run_cli("probe", ServiceSettings, {"probe": probe}, argv=["probe"]) == 0
    assert seen == [uvloop.Loop]


def _added_nice(kind: str, **env: str) -> int:
    """The niceness a `kind` process adds to itself at start (run in a child: os.nice cannot
    be undone in this one)."""
    code = (
        "import os\n"
        "from libs.common.runner import run_cli\n"
        "from libs.common.settings import ServiceSettings\n"
        "async def probe(_settings):\n"
        "    print(os.getpriority(os.PRIO_PROCESS, 0))\n"
        f"run_cli('probe', ServiceSettings, {{{kind!r}: probe}}, argv=[{kind!r}])\n"
    )
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**child_env, "PYTHONPATH": str(REPO), **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout.split()[-1]) - os.getpriority(os.PRIO_PROCESS, 0)


def test_background_processes_yield_the_cpu_to_those_answering_callers() -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    background = min(BACKGROUND_NICE, 19 - base)  # the kernel caps niceness at 19
    for kind in ("worker", "relay", "runner", "reconciler"):
        assert _added_nice(kind) == background, kind
    for kind in ("api", "express", "smtp"):
        assert _added_nice(kind) == 0, kind


def test_process_nice_overrides_the_kinds_default() -> None:
    assert _added_nice("worker", PM_PROCESS_NICE="0") == 0
    assert _added_nice("api", PM_PROCESS_NICE="3") == min(
        3, 19 - os.getpriority(os.PRIO_PROCESS, 0)
    )


def test_a_process_starts_with_its_startup_heap_frozen() -> None:
    """What the process imported is out of the cyclic collector's reach before it serves:
    full collections walk only what it made since (run in a child: gc.freeze is for good)."""
    code = (
        "import gc\n"
        "from libs.common.runner import run_cli\n"
        "from libs.common.settings import ServiceSettings\n"
        "async def probe(_settings):\n"
        "    print(gc.get_freeze_count(), len(gc.get_objects()))\n"
        "run_cli('probe', ServiceSettings, {'probe': probe}, argv=['probe'])\n"
    )
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**child_env, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    frozen, tracked = map(int, done.stdout.split()[-2:])
    assert frozen > 10 * tracked  # the imports frozen; what the collector still walks is new


def test_a_process_whose_port_is_taken_stops_its_body_and_exits() -> None:
    """uvicorn's sys.exit on a failed bind used to leave the process hung (its body never
    told to stop); it must fail, so that a supervisor or a test sees it and starts another."""
    code = (
        "from fastapi import FastAPI\n"
        "from libs.common.runner import run_cli, run_process\n"
        "from libs.common.settings import ServiceSettings\n"
        "async def body(stop):\n"
        "    await stop.wait()\n"
        "    print('body stopped', flush=True)\n"
        "async def probe(settings):\n"
        "    await run_process(settings, 'probe', FastAPI(), body)\n"
        "run_cli('probe', ServiceSettings, {'probe': probe}, argv=['probe'])\n"
    )
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-c", code],
            env={**child_env, "PYTHONPATH": str(REPO), "PM_HTTP_PORT": str(port)},
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,  # the old behaviour: no exit at all
        )
    assert done.returncode != 0
    assert "body stopped" in done.stdout
    assert f"did not start on 127.0.0.1:{port}" in done.stderr
