"""Tracking endpoints are throttled per link and client address, and repeated opens of a
message within the window are one event (issue 13). Every hit still gets its pixel or
redirect: only the recording is limited."""

from __future__ import annotations

from typing import Any

import pytest

from services.delivery.tracking import TrackingToken
from tests.integration.delivery.conftest import Harness


async def _events(h: Harness, message_id: str, event_type: str) -> int:
    n = await h.service.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE event_type = $1 AND payload->'data'->>'message_id' = $2",
        event_type,
        message_id,
    )
    return int(n)


async def _sent(h: Harness, **body: Any) -> str:
    mid = await h.send(**body)
    await h.drain()
    return mid


async def test_repeated_opens_are_one_event(harness: Harness) -> None:
    mid = await _sent(harness, to="op@example.com", category="transactional")
    token = harness.service.signer.sign(TrackingToken("o", mid))
    for _ in range(5):
        r = await harness.client.get(f"/t/o/{token}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/gif"
    assert await _events(harness, mid, "email.opened") == 1


@pytest.mark.parametrize(
    "harness", [{"tracking_rate_per_token": 3, "tracking_rate_per_address": 1000}], indirect=True
)
async def test_clicks_beyond_the_rate_are_redirected_but_not_recorded(harness: Harness) -> None:
    mid = await _sent(harness, to="cl@example.com", category="transactional")
    token = harness.service.signer.sign(TrackingToken("c", mid, "https://acme.example.com/x"))
    for _ in range(10):
        r = await harness.client.get(f"/t/c/{token}", follow_redirects=False)
        assert r.status_code == 302 and r.headers["location"] == "https://acme.example.com/x"
    assert await _events(harness, mid, "email.clicked") == 3
