"""The sandbox ESP: used for `pm_test_` keys and by default in `make up`. It writes each
message as an `.eml` file under `sandbox_dir/<tenant>/` and simulates what a provider would
report: delivered, or a hard bounce / complaint for recipients whose local part starts with
`bounce` / `complaint` (e.g. `bounce+1@example.com`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from services.delivery.connectors.base import (
    Connector,
    NormalizedEvent,
    OutgoingEmail,
    SendResult,
)
from services.delivery.connectors.mime import build_mime


class SandboxConnector(Connector):
    id = "sandbox"
    name = "Sandbox (local capture)"
    batch_limit = 1000

    def __init__(self, credentials: dict[str, Any], client: httpx.AsyncClient, directory: str):
        super().__init__(credentials, client)
        self.directory = Path(directory)

    async def send(self, messages: list[OutgoingEmail]) -> list[SendResult]:
        await asyncio.to_thread(self._write, messages)
        return [SendResult(m.message_id, "accepted", f"sandbox-{m.message_id}") for m in messages]

    def _write(self, messages: list[OutgoingEmail]) -> None:
        for m in messages:
            folder = self.directory / m.tenant_id
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{m.message_id}.eml").write_bytes(build_mime(m).as_bytes())

    @staticmethod
    def simulate(m: OutgoingEmail) -> NormalizedEvent:
        local = m.to.partition("@")[0].lower()
        key = f"sandbox:{m.message_id}"
        if local.startswith("bounce"):
            return NormalizedEvent(
                "bounced",
                key,
                m.message_id,
                recipient=m.to,
                bounce_type="hard",
                reason="sandbox: simulated hard bounce",
            )
        if local.startswith("complaint"):
            return NormalizedEvent("complained", key, m.message_id, recipient=m.to)
        return NormalizedEvent("delivered", key, m.message_id, recipient=m.to)
