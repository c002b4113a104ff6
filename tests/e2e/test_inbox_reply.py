"""A reply, end to end through the processes `make up` starts (issue #20's first "must show").

A two-step campaign sends step 1 to two contacts; one of them answers over SMTP to the inbox's
inbound listener with In-Reply-To = the RFC 5322 Message-ID delivery gave step 1. Then: the
inbox thread holds the sent message and the reply; a webhook endpoint subscribed to
`email.replied` receives it, signed; and step 2 goes to the contact who did not reply and never
to the one who did.

Step 2 is due a minute after step 1; the campaign is paused once step 1 is out and resumed only
when the campaign counts the reply, so the outcome does not hang on how fast the machine is.
Which stack: `tests/e2e/dev_stack.py` (the running `make up` stack, else a separate instance).
"""

from __future__ import annotations

import json
import smtplib
import time
import uuid
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, TypeVar

import httpx
import pytest
from standardwebhooks import Webhook

from tests.e2e.dev_stack import DevStack
from tests.e2e.dev_stack import dev_stack as dev_stack
from tests.fakes.webhook_receiver import Received, WebhookReceiver

T = TypeVar("T")
SCOPES = [
    "manage_contacts",
    "manage_campaigns",
    "send_email",
    "read_analytics",
    "read_inbox",
    "manage_webhooks",
]


def until(
    check: Callable[[], T | None],
    what: str,
    timeout: float = 300,
    explain: Callable[[], Any] | None = None,
) -> T:
    """Poll `check` until it returns something truthy, within an overall deadline; `explain`
    says what there was instead."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}: {explain() if explain else ''}")
        time.sleep(1)


class PatientClient(httpx.Client):
    """Polling stays within the plan's rate limit: a 429 waits its Retry-After and retries."""

    def request(self, *args: Any, **kwargs: Any) -> httpx.Response:
        while True:
            resp = super().request(*args, **kwargs)
            if resp.status_code != 429:
                return resp
            time.sleep(float(resp.headers.get("Retry-After") or 1))


def ok(resp: httpx.Response, status: int = 200) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()["data"]


def email_entity(payload: dict[str, Any]) -> dict[str, Any]:
    """The email of an `email.*` payload: nested as `data.email` (2026-12-01, its id as `id`)
    or flat in `data` (2026-11-21, its id as `message_id`)."""
    data: dict[str, Any] = payload["data"]
    if isinstance(data.get("email"), dict):
        entity = dict(data["email"])
        entity.setdefault("message_id", entity.get("id"))
        return entity
    return data


def reply_mail(contact: str, sent: dict[str, Any]) -> bytes:
    msg = EmailMessage()
    msg["From"] = contact
    msg["To"] = sent["from"]
    msg["Subject"] = f"Re: {sent['subject']}"
    msg["Message-ID"] = make_msgid(domain="prospect.example.org")
    msg["In-Reply-To"] = sent["message_id_header"]
    msg["References"] = sent["message_id_header"]
    msg.set_content("Sounds good, let's talk next week.\n\nOn Monday you wrote:\n> Hello")
    return msg.as_bytes()


# Starting a separate instance (~20 processes) can take minutes on a loaded machine.
@pytest.mark.timeout(1200)
def test_a_reply_threads_notifies_and_stops_the_sequence(dev_stack: DevStack) -> None:
    from scripts.dev.stack import DEV_REPLY_DOMAIN

    gw, tag = dev_stack.gateway, uuid.uuid4().hex[:8]
    replier, silent = f"replier-{tag}@example.org", f"silent-{tag}@example.org"
    subject = f"Quick question {tag}"
    with PatientClient(base_url=gw, timeout=30) as client, WebhookReceiver() as receiver:
        signup = client.post(
            "/api/v1/auth/signup",
            json={
                "email": f"inbox-e2e-{tag}@example.com",
                "password": "correct horse battery",
                "company": "Acme",
            },
        )
        token = ok(signup, 201)["access_token"]
        key = ok(
            client.post(
                "/api/v1/platform/api-keys",
                json={"name": "inbox e2e", "mode": "test", "scopes": SCOPES},
                headers={"Authorization": f"Bearer {token}"},
            ),
            201,
        )["key"]
        client.headers["Authorization"] = f"Bearer {key}"

        endpoint = ok(
            client.post(
                "/api/v1/webhooks", json={"url": receiver.url, "events": ["email.replied"]}
            ),
            201,
        )
        verifier = Webhook(endpoint["secret"])

        campaign = ok(
            client.post(
                "/api/v1/campaigns",
                json={
                    "name": f"inbox e2e {tag}",
                    "subject": subject,
                    "content": {"text": "Hello, do you have a minute?"},
                    "recipients": [{"email": replier}, {"email": silent}],
                    "settings": {"track_opens": False, "track_clicks": False},
                    "follow_ups": [
                        {"delay_days": 60 / 86400, "content": {"text": "Following up."}}
                    ],
                },
            ),
            201,
        )
        cid = campaign["id"]
        ok(client.post(f"/api/v1/campaigns/{cid}/start"))

        def emails() -> list[dict[str, Any]]:
            page = client.get("/api/v1/emails", params={"campaign_id": cid, "limit": 100})
            return list(ok(page))

        def step_one_sent() -> dict[str, dict[str, Any]] | None:
            sent = {e["to"]: e for e in emails() if e["status"] in ("sent", "delivered")}
            return sent if set(sent) == {replier, silent} else None

        def progress() -> Any:
            state = client.get(f"/api/v1/analytics/campaigns/{cid}").json()
            return {"emails": emails(), "campaign": state}

        first = until(step_one_sent, "step 1 sent to both contacts", explain=progress)
        ok(client.post(f"/api/v1/campaigns/{cid}/pause"))
        analytics = ok(client.get(f"/api/v1/analytics/campaigns/{cid}"))
        # Step 2 is due a minute after step 1; it must still be ahead of us here.
        assert analytics["requested"] == 2, analytics

        sent = ok(client.get(f"/api/v1/emails/{first[replier]['id']}"))
        assert sent["message_id_header"].startswith("<") and sent["subject"] == subject
        host, port = dev_stack.inbound_smtp
        assert port, "the stack names no inbound SMTP listener (.dev/stack.env)"
        with smtplib.SMTP(host, port, timeout=60) as smtp:
            refused = smtp.sendmail(
                replier, [f"reply@{DEV_REPLY_DOMAIN}"], reply_mail(replier, sent)
            )
        assert refused == {}

        # The webhook: email.replied for that message, signed.
        def replied_hook() -> Received | None:
            for req in receiver.snapshot():
                payload = json.loads(req.body)
                if (
                    payload["type"] == "email.replied"
                    and email_entity(payload)["message_id"] == sent["id"]
                ):
                    return req
            return None

        hook = until(replied_hook, "email.replied at the webhook receiver")
        verifier.verify(hook.body, hook.headers)
        replied = email_entity(json.loads(hook.body))
        assert replied["to"] == replier
        assert replied["campaign_id"] == cid and replied["step"] == 1
        thread_id = replied["thread_id"]

        # The thread: the sent message and the reply, oldest first.
        thread = ok(client.get(f"/api/v1/inbox/threads/{thread_id}"))
        assert thread["folder"] == "inbox" and thread["message_id"] == sent["id"]
        assert thread["campaign_id"] == cid and thread["contact_email"] == replier
        messages = thread["messages"]
        assert [m["direction"] for m in messages] == ["outbound", "inbound"], messages
        assert messages[0]["email_id"] == sent["id"]
        assert messages[0]["message_id_header"] == sent["message_id_header"]
        assert messages[1]["in_reply_to"] == sent["message_id_header"]
        assert messages[1]["classification"] == "human_reply"
        assert messages[1]["from_email"] == replier
        assert replied["inbox_message_id"] == messages[1]["id"]

        # The sequence: the campaign counts the reply, then, resumed, sends step 2 to the
        # contact who did not reply, and never to the one who did.
        def counted() -> bool:
            states = ok(client.get(f"/api/v1/analytics/campaigns/{cid}"))["recipients"]
            return bool(states["replied"] == 1)

        until(counted, "the campaign to count the reply")
        ok(client.post(f"/api/v1/campaigns/{cid}/resume"))

        def finished() -> dict[str, Any] | None:
            state = ok(client.get(f"/api/v1/analytics/campaigns/{cid}"))
            recipients = state["recipients"]
            return state if recipients["pending"] == 0 and recipients["done"] == 1 else None

        final = until(finished, "the campaign to finish its recipients")
        assert final["recipients"]["replied"] == 1, final
        assert final["requested"] == 3, final

        def all_three() -> list[dict[str, Any]] | None:
            listed = emails()
            return listed if len(listed) == 3 else None

        by_contact: dict[str, list[str]] = {}
        for e in until(all_three, "the three emails in the list"):
            by_contact.setdefault(e["to"], []).append(e["subject"])
        assert sorted(by_contact[silent]) == sorted([subject, f"Re: {subject}"]), by_contact
        assert by_contact[replier] == [subject], by_contact
