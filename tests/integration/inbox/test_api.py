"""The inbox API: lists with filters and both paginations, a thread with its messages,
PATCH (read, archived, labels), replies sent through delivery, scopes."""

from __future__ import annotations

import hashlib
import time
import uuid
from datetime import UTC, datetime

from libs.common.events import EmailSent, make_event
from services.inbox.providers import InboundMail
from tests.integration.inbox.conftest import Harness
from tests.unit.inbox import mail


async def _reply_in(h: Harness, header: str, text: str = "Tell me more") -> tuple[str, str]:
    raw = mail.reply(to=h.sender, in_reply_to=header, references=header, text=text)
    key = f"test:{hashlib.sha256(raw).hexdigest()}:{time.monotonic_ns()}"
    result = await h.service.ingest(InboundMail(raw, key, "smtp", (h.sender,)))
    assert result.thread_id and result.inbox_message_id
    return result.thread_id, result.inbox_message_id


async def test_lists_filter_and_paginate(harness: Harness) -> None:
    h = harness
    thread_ids = []
    for i in range(3):
        _, header = await h.sent(to=f"p{i}@example.org", campaign_id=f"cmp_{i % 2}")
        thread_ids.append((await _reply_in(h, header))[0])
    r = await h.client.get("/api/v1/inbox/threads", params={"limit": 2}, headers=h.headers())
    assert r.status_code == 200
    page1 = r.json()
    assert page1["meta"]["pagination"]["has_more"] is True
    cursor = page1["meta"]["pagination"]["next_cursor"]
    page2 = await h.client.get(
        "/api/v1/inbox/threads", params={"limit": 2, "cursor": cursor}, headers=h.headers()
    )
    seen = [t["id"] for t in page1["data"]] + [t["id"] for t in page2.json()["data"]]
    assert sorted(seen) == sorted(thread_ids)  # newest activity first, no duplicates
    by_offset = await h.client.get(
        "/api/v1/inbox/threads", params={"limit": 2, "offset": 2}, headers=h.headers()
    )
    assert [t["id"] for t in by_offset.json()["data"]] == [t["id"] for t in page2.json()["data"]]
    cmp0 = await h.client.get(
        "/api/v1/inbox/threads", params={"campaign_id": "cmp_0"}, headers=h.headers()
    )
    assert len(cmp0.json()["data"]) == 2
    human = await h.client.get(
        "/api/v1/inbox/threads",
        params={"classification": "human_reply", "unread": "true"},
        headers=h.headers(),
    )
    assert len(human.json()["data"]) == 3
    typo = await h.client.get("/api/v1/inbox/threads", params={"campain": "x"}, headers=h.headers())
    assert typo.status_code == 422
    messages = await h.client.get(
        "/api/v1/inbox/messages",
        params={"direction": "inbound", "thread_id": thread_ids[0]},
        headers=h.headers(),
    )
    assert [m["thread_id"] for m in messages.json()["data"]] == [thread_ids[0]]


async def test_patch_marks_read_archives_and_labels(harness: Harness) -> None:
    h = harness
    _, header = await h.sent()
    thread_id, _ = await _reply_in(h, header)
    path = f"/api/v1/inbox/threads/{thread_id}"
    r = await h.client.patch(
        path, json={"read": True, "archived": True, "labels": ["hot"]}, headers=h.headers()
    )
    assert r.status_code == 200, r.text
    assert (r.json()["data"]["read"], r.json()["data"]["archived"]) == (True, True)
    assert r.json()["data"]["labels"] == ["hot"]
    default = await h.client.get("/api/v1/inbox/threads", headers=h.headers())
    assert default.json()["data"] == []  # archived threads are left out by default
    archived = await h.client.get(
        "/api/v1/inbox/threads", params={"archived": "true", "label": "hot"}, headers=h.headers()
    )
    assert [t["id"] for t in archived.json()["data"]] == [thread_id]
    assert (await h.client.patch(path, json={}, headers=h.headers())).status_code == 422
    assert (await h.client.patch(path, json={"read": None}, headers=h.headers())).status_code == 422
    assert (await h.client.patch(path, json={"bogus": 1}, headers=h.headers())).status_code == 422
    # A new reply brings the thread back: unread and out of the archive.
    await _reply_in(h, header, "One more thing")
    again = (await h.thread(thread_id)).json()["data"]
    assert (again["read"], again["archived"]) == (False, False)


async def test_reply_goes_through_delivery_with_threading_headers(harness: Harness) -> None:
    h = harness
    mid, header = await h.sent()
    thread_id, theirs = await _reply_in(h, header)
    their_header = (
        await h.client.get(f"/api/v1/inbox/messages/{theirs}", headers=h.headers())
    ).json()["data"]["message_id_header"]
    path = f"/api/v1/inbox/threads/{thread_id}/reply"
    body = {"text": "Great, here is the deck."}
    no_send = await h.client.post(path, json=body, headers=h.headers(("read_inbox",)))
    assert no_send.status_code == 403
    assert no_send.json()["error"]["code"] == "insufficient_scope"
    no_read = await h.client.post(path, json=body, headers=h.headers(("send_email",)))
    assert no_read.status_code == 403
    both = h.headers(("read_inbox", "send_email"))
    assert (await h.client.post(path, json={}, headers=both)).status_code == 422
    r = await h.client.post(path, json=body, headers=both)
    assert r.status_code == 202, r.text
    ours = r.json()["data"]
    assert ours["direction"] == "outbound" and ours["status"] == "requested"
    assert ours["in_reply_to"] == their_header
    assert ours["subject"] == "Re: Quick question" and ours["to"] == "prospect@example.org"
    [requested] = [e for e in await h.outbox(ours["id"]) if e["type"] == "email.requested"]
    data = requested["data"]
    assert data["request_id"] == ours["id"] and data["from"] == h.sender
    assert data["metadata"]["pm_in_reply_to"] == their_header
    assert header in data["metadata"]["pm_references"]
    assert their_header in data["metadata"]["pm_references"]
    # Delivery sends it (email.sent names the request): the reply is linked and threads.
    sent_id = f"msg_{uuid.uuid4().hex}"
    sent_header = f"<{sent_id}@acme.example.com>"
    event = make_event(
        EmailSent(
            message_id=sent_id,
            to="prospect@example.org",
            provider="postmark",
            occurred_at=datetime.now(UTC),
            message_id_header=sent_header,
            from_email=h.sender,
            subject=ours["subject"],
            request_id=ours["id"],
        ),
        tenant_id=h.tenant,
        source="/services/delivery",
    )
    async with h.service.pool.acquire() as conn, conn.transaction():
        await h.service.learn_sent(conn, event, event.data)
    thread = (await h.thread(thread_id)).json()["data"]
    last = thread["messages"][-1]
    assert (last["id"], last["status"], last["email_id"]) == (ours["id"], "sent", sent_id)
    assert last["message_id_header"] == sent_header
    # Their answer to our reply lands in the same thread.
    again, _ = await _reply_in(h, sent_header, "Got it, thanks")
    assert again == thread_id
    assert mid == thread["message_id"]


async def test_unmatched_threads_cannot_be_answered(harness: Harness) -> None:
    h = harness
    await h.sent()
    raw = mail.reply(to=h.sender, subject="Cold inbound")
    result = await h.service.ingest(
        InboundMail(raw, f"test:{uuid.uuid4().hex}", "smtp", (h.sender,))
    )
    r = await h.client.post(
        f"/api/v1/inbox/threads/{result.thread_id}/reply",
        json={"text": "hi"},
        headers=h.headers(("read_inbox", "send_email")),
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "thread_not_answerable"
    missing = await h.client.post(
        "/api/v1/inbox/threads/thr_nope/reply",
        json={"text": "hi"},
        headers=h.headers(("read_inbox", "send_email")),
    )
    assert missing.status_code == 404


async def test_every_route_needs_read_inbox(harness: Harness) -> None:
    h = harness
    wrong = h.headers(("send_email", "read_analytics"))
    for path in ("/api/v1/inbox/threads", "/api/v1/inbox/messages"):
        r = await h.client.get(path, headers=wrong)
        assert r.status_code == 403, path
    assert (await h.client.get("/api/v1/inbox/threads")).status_code == 401
