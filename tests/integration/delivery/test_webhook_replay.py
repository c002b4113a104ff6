"""Mailgun signs only (timestamp, token): a captured signature replayed with altered event
data is refused; the provider's identical retry is not (issue 13)."""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from tests.integration.delivery.conftest import Harness


def _signed(token: str, event: dict[str, Any]) -> dict[str, Any]:
    ts = str(int(time.time()))
    sig = hmac.new(b"mg-signing", f"{ts}{token}".encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": ts, "token": token, "signature": sig}, "event-data": event}


async def test_a_token_is_good_for_one_payload(harness: Harness) -> None:
    mid = await harness.send(to="rp@example.com", category="transactional")
    await harness.drain()
    token = f"replay{time.time_ns()}"
    delivered = {
        "event": "delivered",
        "id": f"ev-{token}",
        "user-variables": {"pm_message_id": mid},
    }
    first = _signed(token, delivered)
    r = await harness.client.post("/hooks/esp/mailgun", json=first)
    assert r.status_code == 200 and r.json()["data"]["applied"] == 1
    # The provider retrying the very same delivery is fine (and applies nothing twice).
    r = await harness.client.post("/hooks/esp/mailgun", json=first)
    assert r.status_code == 200 and r.json()["data"]["applied"] == 0
    # The same signature with other data (a forged complaint) is a replay.
    forged = {**first, "event-data": {**delivered, "event": "complained", "id": "ev-forged"}}
    r = await harness.client.post("/hooks/esp/mailgun", json=forged)
    assert r.status_code == 401 and r.json()["error"]["code"] == "webhook_signature_invalid"
    r = await harness.client.get(f"/api/v1/emails/{mid}", headers=harness.headers())
    assert r.json()["data"]["status"] == "delivered"
