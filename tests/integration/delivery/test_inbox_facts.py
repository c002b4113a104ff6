"""Delivery's side of the inbox (issue 20): the Message-ID it assigns is exposed and carried
by `email.sent`; a message without its own Reply-To gets the signed reply address; a reply
the inbox asked for carries In-Reply-To/References; the inbox's replies, DSN bounces and
unsubscribe requests are applied; inbound mail is no longer delivery's."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from libs.common.events import EmailReplied, EmailRequested, InboxFeedbackReceived, make_event
from libs.common.reply_tokens import message_id_of_address
from tests.integration.delivery.conftest import Harness

REPLY_DOMAIN = "reply.delivery.test"
INBOX = {"reply_domain": REPLY_DOMAIN}


async def _email(h: Harness, mid: str) -> dict[str, Any]:
    r = await h.client.get(f"/api/v1/emails/{mid}", headers=h.headers())
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


async def _outbox(h: Harness, mid: str, event_type: str) -> list[dict[str, Any]]:
    rows = await h.service.pool.fetch(
        "SELECT payload FROM outbox WHERE payload->>'subject' = $1 AND event_type = $2",
        mid,
        event_type,
    )
    return [dict(r["payload"]) for r in rows]


@pytest.mark.parametrize("harness", [INBOX], indirect=True)
async def test_reply_address_message_id_and_sent_fields(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    h = harness
    mid = await h.send(to="ada@example.com", category="transactional")
    await h.drain()
    header = f"<{mid}@acme.example.com>"
    assert (await _email(h, mid))["message_id_header"] == header
    (req,) = reset_fakes["postmark"].requests("/email")
    key = h.service.settings.reply_token_key.get_secret_value()
    assert message_id_of_address(key, req.json["ReplyTo"], [REPLY_DOMAIN]) == mid
    headers = {x["Name"]: x["Value"] for x in req.json["Headers"]}
    assert headers["Message-ID"] == header
    [sent] = await _outbox(h, mid, "email.sent")
    assert sent["data"]["message_id_header"] == header
    assert sent["data"]["from_email"] == "team@acme.example.com"
    assert sent["data"]["subject"] == "Hello "
    # A send with its own reply_to keeps it (then headers alone thread).
    own = await h.send(
        to="bob@example.com", category="transactional", reply_to="me@acme.example.com"
    )
    await h.drain()
    req2 = [
        r for r in reset_fakes["postmark"].requests("/email") if r.json["To"] == "bob@example.com"
    ]
    assert req2[0].json["ReplyTo"] == "me@acme.example.com"
    assert own


async def test_a_reply_the_inbox_asks_for_threads(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    h = harness
    request_id = f"imsg_{uuid.uuid4().hex}"
    data = EmailRequested(
        request_id=request_id,
        to="ada@example.com",
        from_="team@acme.example.com",
        subject="Re: Quick question",
        text="Here is the deck.",
        category="transactional",
        track_opens=False,
        track_clicks=False,
        metadata={
            "pm_in_reply_to": "<their@example.org>",
            "pm_references": "<a@x> <their@example.org>",
        },
    )
    async with h.service.pool.acquire() as conn, conn.transaction():
        mid = await h.service.accept_requested(conn, h.tenant, data)
    assert mid is not None
    await h.drain()
    (req,) = reset_fakes["postmark"].requests("/email")
    headers = {x["Name"]: x["Value"] for x in req.json["Headers"]}
    assert headers["In-Reply-To"] == "<their@example.org>"
    assert headers["References"] == "<a@x> <their@example.org>"
    assert "pm_in_reply_to" not in req.json["Metadata"]
    [sent] = await _outbox(h, mid, "email.sent")
    assert sent["data"]["request_id"] == request_id


async def test_the_inbox_facts_are_applied_once_and_only_for_the_tenant(harness: Harness) -> None:
    h = harness
    mid = await h.send(to="ada@example.com", category="transactional")
    await h.drain()

    async def apply(tenant: str, data: Any) -> int:
        event = make_event(data, tenant_id=tenant, source="/services/inbox", subject=mid)
        async with h.service.pool.acquire() as conn, conn.transaction():
            return await h.service.apply_inbox_event(conn, event)

    replied = EmailReplied(message_id=mid, to="ada@example.com", thread_id="thr_1",
                           inbox_message_id="imsg_1")  # fmt: skip
    assert await apply("t_someone_else", replied) == 0
    assert await apply(h.tenant, replied) == 1
    assert await apply(h.tenant, replied) == 0  # redelivered
    email = await _email(h, mid)
    assert email["status"] == "replied" and email["timeline"][-1]["status"] == "replied"
    assert await _outbox(h, mid, "email.replied") == []  # the inbox published it

    bounce = InboxFeedbackReceived(kind="bounce", message_id=mid, inbox_message_id="imsg_2",
                                   bounce_type="hard", reason="550 5.1.1 no such user")  # fmt: skip
    assert await apply(h.tenant, bounce) == 1
    [bounced] = await _outbox(h, mid, "email.bounced")
    assert bounced["data"]["bounce_type"] == "hard"
    suppressed = await h.client.get("/api/v1/emails/suppressions", headers=h.headers())
    assert "ada@example.com" in [s["email"] for s in suppressed.json()["data"]]

    other = await h.send(to="bob@example.com", category="transactional")
    await h.drain()
    unsubscribe = InboxFeedbackReceived(kind="unsubscribe", message_id=other,
                                        inbox_message_id="imsg_3")  # fmt: skip
    event = make_event(unsubscribe, tenant_id=h.tenant, source="/services/inbox", subject=other)
    async with h.service.pool.acquire() as conn, conn.transaction():
        assert await h.service.apply_inbox_event(conn, event) == 1
    [unsub] = await _outbox(h, other, "email.unsubscribed")
    assert unsub["data"]["method"] == "reply"


async def test_inbound_mail_is_no_longer_delivery_s(harness: Harness) -> None:
    r = await harness.client.post("/hooks/esp/postmark/inbound", json={"From": "x@example.com"})
    assert r.status_code in (404, 405)
