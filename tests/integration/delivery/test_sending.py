"""The send pipeline against fake ESPs: documented requests, error mapping, retries with
backoff, circuit breaker and failover, suppression, test-mode sandbox."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import pytest

from tests.integration.delivery.conftest import Harness


async def _email(h: Harness, message_id: str) -> dict[str, Any]:
    r = await h.client.get(f"/api/v1/emails/{message_id}", headers=h.headers())
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


async def test_postmark_single_send_is_the_documented_request(harness: Harness) -> None:
    mid = await harness.send(
        to="ada@example.com", category="transactional", variables={"name": "Ada & co"}
    )
    await harness.drain()
    email = await _email(harness, mid)
    assert email["status"] == "sent" and email["provider"] == "postmark"
    assert [t["status"] for t in email["timeline"]] == ["queued", "sent"]


async def test_a_sent_message_is_recorded_on_its_row(
    harness: Harness, delivery_pool: asyncpg.Pool
) -> None:
    """The `sent` record is the message row (`sent_at`, provider, provider message id), at the
    `email.sent` fact's time: no `message_events` row (and foreign-key check) per message."""
    mid = await harness.send(to="grace@example.com", variables={"name": "Grace"})
    await harness.drain()
    row = await delivery_pool.fetchrow(
        "SELECT sent_at, provider, provider_message_id FROM messages WHERE id = $1", mid
    )
    rows = await delivery_pool.fetchval(
        "SELECT count(*) FROM message_events WHERE message_id = $1", mid
    )
    fact = orjson.loads(
        await delivery_pool.fetchval(
            "SELECT payload::text FROM outbox WHERE event_type = 'email.sent'"
            " AND payload->'data'->>'message_id' = $1",
            mid,
        )
    )["data"]
    assert row["sent_at"] is not None and rows == 0
    email = await _email(harness, mid)
    assert [t["status"] for t in email["timeline"]] == ["queued", "sent"]
    sent = email["timeline"][1]
    assert sent["provider"] == row["provider"] == fact["provider"] is not None
    assert sent["provider_message_id"] == row["provider_message_id"]
    assert sent["provider_message_id"] == fact["provider_message_id"]
    at = datetime.fromisoformat(sent["occurred_at"].replace("Z", "+00:00"))
    assert at == row["sent_at"] == datetime.fromisoformat(fact["occurred_at"])


async def test_each_provider_gets_its_wire_format(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    for provider in ("postmark", "mailgun", "sendgrid", "ses"):
        r = await harness.client.post(
            "/api/v1/emails/routing-rules",
            json={"primary_provider": provider, "sending_domain": f"{provider}.acme.example.com"},
            headers=harness.headers(),
        )
        assert r.status_code == 201, r.text
    ids = {}
    for provider in ("postmark", "mailgun", "sendgrid", "ses"):
        ids[provider] = await harness.send(
            to=f"bob+{provider}@example.com",
            **{"from": f"news@{provider}.acme.example.com"},
            variables={"name": "Bob"},
        )
    await harness.drain()
    for provider, mid in ids.items():
        email = await _email(harness, mid)
        assert email["status"] == "sent", (provider, email)
        assert email["provider"] == provider

    pm = reset_fakes["postmark"].requests("/email")[0].json
    assert pm["To"] == "bob+postmark@example.com" and pm["Subject"] == "Hello Bob"
    assert pm["Metadata"]["pm_message_id"] == ids["postmark"]
    headers = {h["Name"]: h["Value"] for h in pm["Headers"]}
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Unsubscribe"].startswith("<http://track.test/unsubscribe/u.")
    assert headers["Message-ID"] == f"<{ids['postmark']}@postmark.acme.example.com>"
    assert "http://track.test/t/c/c." in pm["HtmlBody"] and "/t/o/o." in pm["HtmlBody"]

    [mg_request] = reset_fakes["mailgun"].requests("/v3/mailgun.acme.example.com/messages")
    assert mg_request.headers["content-type"].startswith("multipart/form-data; boundary=")
    mg = mg_request.json
    assert mg["to"] == ["bob+mailgun@example.com"]
    assert mg["subject"] == ["Hello %recipient.name%"]
    variables = orjson.loads(mg["recipient-variables"][0])
    assert variables["bob+mailgun@example.com"]["pm_message_id"] == ids["mailgun"]
    assert variables["bob+mailgun@example.com"]["name"] == "Bob"

    sg = reset_fakes["sendgrid"].requests("/v3/mail/send")[0].json
    p = sg["personalizations"][0]
    assert p["to"] == [{"email": "bob+sendgrid@example.com"}]
    assert p["custom_args"]["pm_message_id"] == ids["sendgrid"]
    assert p["substitutions"]["-name-"] == "Bob" and sg["subject"] == "Hello -name-"

    ses = reset_fakes["ses"].requests("/v2/email/outbound-emails")[0]
    assert ses.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDFAKE/")
    assert ses.json["EmailTags"] == [{"Name": "pm_message_id", "Value": ids["ses"]}]


async def test_permanent_errors_fail_with_the_providers_reason(harness: Harness) -> None:
    await harness.client.post(
        "/api/v1/emails/routing-rules",
        headers=harness.headers(),
        json={"primary_provider": "ses", "sending_domain": "ses.acme.example.com"},
    )
    pm = await harness.send(to="x@rejected.example.com", category="transactional")
    ses = await harness.send(to="y@rejected.example.com", **{"from": "a@ses.acme.example.com"})
    await harness.drain()
    a, b = await _email(harness, pm), await _email(harness, ses)
    assert a["status"] == "failed" and "postmark HTTP 422 300" in a["last_error"]
    assert b["status"] == "failed" and "MessageRejected" in b["last_error"]
    assert a["attempts"] == 1 and b["attempts"] == 1


@pytest.mark.parametrize("harness", [{"circuit_failure_threshold": 5}], indirect=True)
async def test_429_then_503_then_200_is_sent_once_after_backoff(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    fake = reset_fakes["postmark"]
    fake.fail_next(429, 503)
    mid = await harness.send(to="retry@example.com", category="transactional")
    for _ in range(200):
        await harness.drain()
        if (await _email(harness, mid))["status"] == "sent":
            break
        await asyncio.sleep(0.05)
    email = await _email(harness, mid)
    assert email["status"] == "sent" and email["attempts"] == 3
    statuses = [r.status for r in fake.requests("/email")]
    assert statuses == [429, 503, 200]  # exactly one accepted request
    assert fake.recipients(accepted_only=True) == ["retry@example.com"]


async def test_circuit_opens_fails_over_and_closes_again(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    postmark, mailgun = reset_fakes["postmark"], reset_fakes["mailgun"]
    postmark.down = True
    mid = await harness.send(to="fo@example.com", category="transactional")
    for _ in range(200):
        await harness.drain()
        if (await _email(harness, mid))["status"] == "sent":
            break
        await asyncio.sleep(0.05)
    email = await _email(harness, mid)
    assert email["provider"] == "mailgun" and email["status"] == "sent"
    assert len(postmark.requests("/email")) == 2  # threshold: then the circuit is open
    assert mailgun.recipients(accepted_only=True) == ["fo@example.com"]

    postmark.down = False
    await asyncio.sleep(0.6)  # circuit_open_seconds: the next send is the half-open probe
    mid2 = await harness.send(to="back@example.com", category="transactional")
    await harness.drain()
    assert (await _email(harness, mid2))["provider"] == "postmark"
    mid3 = await harness.send(to="again@example.com", category="transactional")
    await harness.drain()
    assert (await _email(harness, mid3))["provider"] == "postmark"  # closed again


async def test_suppressed_addresses_are_never_sent_to(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    r = await harness.client.post(
        "/api/v1/emails/suppressions", json={"email": "No@Example.com"}, headers=harness.headers()
    )
    assert r.status_code == 201
    mid = await harness.send(to="no@example.com", category="transactional")
    await harness.drain()
    email = await _email(harness, mid)
    assert email["status"] == "failed" and email["last_error"] == "suppressed: manual"
    assert "no@example.com" not in reset_fakes["postmark"].recipients()


async def test_test_mode_only_reaches_the_sandbox(
    harness: Harness, reset_fakes: dict[str, Any], tmp_path: Any
) -> None:
    harness.service.settings.sandbox_dir = str(tmp_path)
    body = {
        "to": "t@example.com",
        "from": "a@acme.example.com",
        "subject": "s",
        "text": "hi",
        "category": "transactional",
    }
    r = await harness.client.post(
        "/api/v1/emails/send", json=body, headers=harness.headers(mode="test")
    )
    mid = r.json()["data"]["message_id"]
    await harness.drain()
    r = await harness.client.get(f"/api/v1/emails/{mid}", headers=harness.headers(mode="test"))
    email = r.json()["data"]
    assert email["provider"] == "sandbox" and email["status"] == "delivered"
    # The sandbox's `delivered` is written in the transaction that records the send: after it.
    assert [t["status"] for t in email["timeline"]] == ["queued", "sent", "delivered"]
    assert (tmp_path / harness.tenant / f"{mid}.eml").exists()
    assert reset_fakes["postmark"].recipients() == []
    # Live credentials do not see test-mode mail.
    r = await harness.client.get(f"/api/v1/emails/{mid}", headers=harness.headers())
    assert r.status_code == 404


@pytest.mark.parametrize("harness", [{"retry_base_seconds": 0.01}], indirect=True)
async def test_bulk_uses_batch_apis(harness: Harness, reset_fakes: dict[str, Any]) -> None:
    emails = [f"u{i}@example.com" for i in range(1200)]
    recipients = [{"email": e, "personalization": {"name": f"U{i}"}} for i, e in enumerate(emails)]
    r = await harness.client.post(
        "/api/v1/emails/send-bulk",
        headers=harness.headers(),
        json={
            "from": "news@acme.example.com",
            "subject": "Hi {{ name }}",
            "html": "<p>{{ name }}</p>",
            "recipients": recipients,
            "batch_size": 600,
        },
    )
    assert r.status_code == 202, r.text
    assert r.json()["data"]["accepted"] == 1200 and r.json()["data"]["batches"] == 2
    await harness.drain()
    mg = reset_fakes["mailgun"]
    calls = mg.requests("/v3/")
    assert (
        sorted(len(c.recipients) for c in calls) == [500, 500, 100, 100][: len(calls)]
        or sum(len(c.recipients) for c in calls) == 1200
    )
    assert sorted(mg.recipients()) == sorted(emails)
    assert max(len(c.recipients) for c in calls) <= 500  # Mailgun burst caps a call
