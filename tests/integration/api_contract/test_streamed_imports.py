"""Issue 15 §3: contact import jobs through the real gateway. 50,000 CSV rows (a body over
the gateway's general 5 MiB cap, streamed through the import route's own cap) with some bad
rows: 202 with an id, progress moves, the totals and per-row errors are right, and
contact_import.completed is published. Other routes refuse a chunked body past 5 MiB with
413 while it streams.

Last in its module on purpose: the 50,000 contact.created events keep delivery's contacts
consumer busy for minutes, and a test that waits for delivery to learn a contact's tags
(test_contact_tag_filters.py) waited behind them (271 s, past the 300 s test timeout in a
rehearsal on a slow machine)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx

from tests.integration.api_contract.conftest import Account, connect
from tests.integration.common.amqp_tools import eventually

ROWS = 50_000
BAD = {7, 4_999, 5_000, 12_345, 49_999}  # 0-based data rows with an invalid address
PAD = "x" * 80  # makes the CSV larger than 5 MiB


def _csv(unique: str) -> bytes:
    lines = ["email,first_name,note"]
    for i in range(ROWS):
        email = f"not-an-address-{i}" if i in BAD else f"imp{i}-{unique}@example.com"
        lines.append(f"{email},Name{i},{PAD}")
    return ("\n".join(lines) + "\n").encode()


async def test_import_job_of_50000_rows(account: Account, unique: str) -> None:
    h = {**account.headers("test"), "Content-Type": "text/csv"}
    body = _csv(unique)
    assert len(body) > 5 * 1024 * 1024
    # One address already exists: it is updated, not created.
    async with httpx.AsyncClient(base_url=account.gw, timeout=120) as c:
        r = await c.post(
            "/api/v1/contacts",
            json={"email": f"imp1-{unique}@example.com"},
            headers=account.headers("test"),
        )
        assert r.status_code == 201, r.text

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), 256 * 1024):
                yield body[start : start + 256 * 1024]

        r = await c.post("/api/v1/contacts/imports", content=chunks(), headers=h)
        assert r.status_code == 202, r.text
        job = r.json()["data"]
        assert job["status"] in ("pending", "running") and job["total"] == ROWS

        seen: list[int] = []

        async def finished() -> dict[str, Any] | None:
            r = await c.get(f"/api/v1/contacts/imports/{job['id']}", headers=h)
            if r.status_code == 429:  # the starter plan's 60 requests a minute
                return None
            assert r.status_code == 200, r.text
            data: dict[str, Any] = r.json()["data"]
            seen.append(data["processed"])
            return data if data["status"] == "completed" else None

        done = await eventually(finished, timeout=600, interval=0.5)
    assert seen == sorted(seen) and any(0 < n < ROWS for n in seen), seen
    assert done["processed"] == ROWS
    assert done["created"] == ROWS - len(BAD) - 1
    assert done["updated"] == 1
    assert done["failed"] == len(BAD)
    assert sorted(e["row"] for e in done["errors"]) == sorted(i + 1 for i in BAD)
    assert all(e["field"] == "email" for e in done["errors"])
    conn = await connect("campaigns")
    try:
        completed = await conn.fetchval(
            "SELECT payload->'data' FROM campaigns.outbox"
            " WHERE event_type = 'contact_import.completed' AND payload->'data'->>'import_id' = $1",
            job["id"],
        )
    finally:
        await conn.close()
    assert completed is not None
    completed = json.loads(completed)
    assert (completed["created"], completed["updated"], completed["failed"]) == (
        ROWS - len(BAD) - 1,
        1,
        len(BAD),
    )


async def test_chunked_bodies_are_capped_while_streaming(account: Account) -> None:
    """aiohttp as the client: it reads the answer while it is still uploading, as a browser
    or curl does (httpx would only report the closed connection)."""
    h = {**account.headers("test"), "Content-Type": "application/json"}

    async def endless() -> AsyncIterator[bytes]:
        yield b'{"email": "big@example.com", "custom_fields": {"x": "'
        for _ in range(10_000):  # 640 MiB if anyone read it all
            yield b"y" * 65536

    async with aiohttp.ClientSession(account.gw) as s:
        for path in ("/api/v1/contacts", "/api/v1/contacts/imports"):
            # The general 5 MiB cap, and the import route's own 64 MiB cap, both hold while
            # the body streams (chunked: no Content-Length to refuse up front).
            async with s.post(path, data=endless(), headers=h) as r:
                assert r.status == 413, await r.text()
                assert (await r.json())["error"]["code"] == "payload_too_large"
