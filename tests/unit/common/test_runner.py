"""run_cli: the loop every service process runs on."""

from __future__ import annotations

import asyncio
from typing import Any

import uvloop

from libs.common.runner import run_cli
from libs.common.settings import ServiceSettings


def test_processes_run_on_uvloop() -> None:
    seen: list[type[asyncio.AbstractEventLoop]] = []

    async def probe(_settings: Any) -> None:
        seen.append(type(asyncio.get_running_loop()))

    assert run_cli("probe", ServiceSettings, {"probe": probe}, argv=["probe"]) == 0
    assert seen == [uvloop.Loop]
