"""Inbound facts: tracking links that cannot be forged, verified ESP webhooks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import orjson

from tests.integration.delivery.conftest import Harness


async def _sent(h: Harness, **body: Any) -> str:
    mid = await h.send(**body)
    await h.drain()
    return mid


async def _email(h: Harness, mid: str) -> dict[str, Any]:
    r = await h.client.get(f"/api/v1/emails/{mid}", headers=h.headers())
    return dict(r.json()["data"])


async def test_open_click_unsubscribe_links_cannot_be_forged(harness: Harness) -> None:
    a = await _sent(harness, to="a@example.com", category="transactional")
    b = await _sent(harness, to="b@example.com", category="transactional")
    signer = harness.service.signer
    from services.delivery.tracking import TrackingToken

    open_a = signer.sign(TrackingToken("o", a))
    assert (await harness.client.get(f"/t/o/{open_a}")).status_code == 200
    assert (await harness.client.get(f"/t/o/{open_a}")).status_code == 200
    forged = open_a.replace(a, b)  # someone else's message under a's MAC
    assert (await harness.client.get(f"/t/o/{forged}")).json()["error"]["code"] == (
        "invalid_tracking_token"
    )
    click = signer.sign(TrackingToken("c", a, "https://acme.example.com/x"))
    r = await harness.client.get(f"/t/c/{click}", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "https://acme.example.com/x"
    evil = click.split(".")
    evil[2] = base64.urlsafe_b64encode(b"https://evil.example.com").decode().rstrip("=")
    assert (await harness.client.get(f"/t/c/{'.'.join(evil)}")).status_code == 404
    # An open token is not an unsubscribe token.
    assert (await harness.client.post(f"/unsubscribe/{open_a}")).status_code == 404

    email = await _email(harness, a)
    # The second open within the coalescing window is not a second event.
    assert email["opens"] == {"total": 1, "unique": 1} and email["clicks"]["total"] == 1
    # The email.opened fact counts the message's opens so far (webhooks' `open_count`).
    opens = await harness.service.pool.fetch(
        "SELECT payload->'data' AS data FROM outbox WHERE event_type = 'email.opened'"
        " AND payload->>'subject' = $1 ORDER BY created_at",
        a,
    )
    counts = [(r["data"]["open_count"], r["data"]["unique"]) for r in opens]
    assert counts == [(1, True)]
    assert (await _email(harness, b))["opens"]["total"] == 0

    unsub = signer.sign(TrackingToken("u", b))
    page = await harness.client.get(f"/unsubscribe/{unsub}")
    assert page.status_code == 200 and "b@example.com" in page.text
    assert (await _email(harness, b))["status"] == "sent"  # GET never unsubscribes
    r = await harness.client.post(
        f"/unsubscribe/{unsub}",
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200
    assert (await _email(harness, b))["status"] == "unsubscribed"
    again = await _sent(harness, to="b@example.com", category="transactional")
    assert (await _email(harness, again))["last_error"] == "suppressed: unsubscribe"


async def test_forged_esp_webhooks_are_rejected(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    body = orjson.dumps({"RecordType": "Delivery", "MessageID": "x"})
    r = await harness.client.post(
        "/hooks/esp/postmark",
        content=body,
        headers={"Authorization": "Basic " + base64.b64encode(b"pmhook:wrong").decode()},
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "webhook_signature_invalid"
    mg = {
        "signature": {"timestamp": str(int(time.time())), "token": "t", "signature": "0" * 64},
        "event-data": {"event": "delivered"},
    }
    assert (await harness.client.post("/hooks/esp/mailgun", json=mg)).status_code == 401
    sg_body = orjson.dumps([{"event": "delivered", "sg_event_id": "e1"}])
    sig = reset_fakes["sendgrid"].sign_webhook(sg_body)
    tampered = sg_body.replace(b"delivered", b"bounce")
    r = await harness.client.post("/hooks/esp/sendgrid", content=tampered, headers=sig)
    assert r.status_code == 401
    sns = reset_fakes["ses"].sns_message({"eventType": "Delivery", "mail": {}})
    sns["Message"] = sns["Message"].replace("Delivery", "Bounce")
    assert (await harness.client.post("/hooks/esp/ses", json=sns)).status_code == 401
    assert (await harness.client.post("/hooks/esp/nope", json={})).status_code == 404


async def test_verified_webhooks_update_status_and_suppress(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    mid = await _sent(harness, to="hb@example.com", category="transactional")
    key = "mg-signing"
    # Tokens are remembered (Redis, shared by test runs) for the replay check: a fresh one.
    ts, token = str(int(time.time())), f"tok{time.time_ns()}"
    sig = hmac.new(key.encode(), f"{ts}{token}".encode(), hashlib.sha256).hexdigest()
    payload = {
        "signature": {"timestamp": ts, "token": token, "signature": sig},
        "event-data": {
            "event": "failed",
            "severity": "permanent",
            "id": "ev1",
            "recipient": "hb@example.com",
            "user-variables": {"pm_message_id": mid},
            "delivery-status": {"description": "No such mailbox"},
        },
    }
    r = await harness.client.post("/hooks/esp/mailgun", json=payload)
    assert r.status_code == 200 and r.json()["data"]["applied"] == 1
    r = await harness.client.post("/hooks/esp/mailgun", json=payload)  # provider retry
    assert r.json()["data"]["applied"] == 0
    assert (await _email(harness, mid))["status"] == "bounced"
    again = await _sent(harness, to="hb@example.com", category="transactional")
    assert (await _email(harness, again))["last_error"] == "suppressed: hard_bounce"

    mid2 = await _sent(harness, to="d@example.com", category="transactional")
    sg_body = orjson.dumps(
        [
            {
                "event": "delivered",
                "sg_event_id": f"d-{mid2}",
                "email": "d@example.com",
                "pm_message_id": mid2,
                "timestamp": int(time.time()),
            }
        ]
    )
    r = await harness.client.post(
        "/hooks/esp/sendgrid",
        content=sg_body,
        headers=reset_fakes["sendgrid"].sign_webhook(sg_body),
    )
    assert r.status_code == 200 and (await _email(harness, mid2))["status"] == "delivered"
    sns = reset_fakes["ses"].sns_message(
        {
            "eventType": "Complaint",
            "mail": {"messageId": "x", "tags": {"pm_message_id": [mid2]}},
            "complaint": {"complaintFeedbackType": "abuse"},
        },
        version="2",
    )
    r = await harness.client.post("/hooks/esp/ses", json=sns)
    assert r.status_code == 200 and (await _email(harness, mid2))["status"] == "complained"

    # Inbound replies are the inbox's (tests/integration/inbox); delivery applies the
    # inbox's facts (test_inbox_facts.py).
