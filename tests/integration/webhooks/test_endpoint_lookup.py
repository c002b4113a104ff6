"""Fan-out's endpoint look-ups, coalesced for concurrent events, against the real Postgres."""

from __future__ import annotations

import asyncio
from typing import Any

from services.webhooks import repository as repo
from services.webhooks.dispatcher import EndpointLookup


async def test_endpoint_lookups_of_concurrent_events_are_answered_per_tenant_and_mode(
    wh_pool, unique
) -> None:
    def endpoint(ep_id: str, tenant: str, mode: str, enabled: bool = True) -> dict[str, Any]:
        return {"id": ep_id, "tenant_id": tenant, "mode": mode, "url": "https://example.com/h",
                "description": None, "event_types": ["email.*"], "filter_campaign_ids": [],
                "filter_contact_tags": [], "enabled": enabled, "retry_schedule_ms": None,
                "payload_version": "2026-12-01"}  # fmt: skip

    a, b, c = (f"{unique}_{x}" for x in "abc")
    async with wh_pool.acquire() as conn:
        for row in (
            endpoint(f"ep_{a}_1", a, "live"),
            endpoint(f"ep_{a}_2", a, "live"),
            endpoint(f"ep_{a}_t", a, "test"),
            endpoint(f"ep_{b}_off", b, "live", enabled=False),
        ):
            await repo.insert_endpoint(conn, row)
    lookup = EndpointLookup(wh_pool, batch=2)
    asked = [(a, "live"), (b, "live"), (a, "test"), (c, "live"), (a, "live")]
    got = await asyncio.gather(*(lookup.endpoints(t, m) for t, m in asked))
    ids = [sorted(r["id"] for r in rows) for rows in got]
    assert ids == [[f"ep_{a}_1", f"ep_{a}_2"], [], [f"ep_{a}_t"], [], [f"ep_{a}_1", f"ep_{a}_2"]]
    # Created after a lookup: the next event sees it (nothing is cached).
    async with wh_pool.acquire() as conn:
        await repo.insert_endpoint(conn, endpoint(f"ep_{c}_1", c, "live"))
    assert [r["id"] for r in await lookup.endpoints(c, "live")] == [f"ep_{c}_1"]
