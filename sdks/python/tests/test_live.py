"""penguinmails (Python) against a real PenguinMails stack.

tests/sdks/test_sdk_suites.py starts the stack and runs this suite with PENGUINMAILS_BASE_URL,
PENGUINMAILS_API_KEY, PENGUINMAILS_ACCESS_TOKEN and the PM_SDK_TEST_* fixtures set.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from typing import Any

import httpx
import penguinmails
import pytest
from penguinmails import (
    APIConnectionError,
    AsyncPenguinMails,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    PenguinMails,
    PenguinMailsError,
    RateLimitError,
    ValidationError,
    WebhookVerificationError,
)

ENV = os.environ
if not ENV.get("PENGUINMAILS_BASE_URL") or not ENV.get("PM_SDK_TEST_PROXY_URL"):
    pytest.fail(
        "run through tests/sdks/test_sdk_suites.py (needs the stack's environment)",
        pytrace=False,
    )
PROXY = ENV["PM_SDK_TEST_PROXY_URL"]
SENDER = "hello@example.com"


def unique() -> str:
    return uuid.uuid4().hex[:8]


def control(path: str, body: dict[str, Any] | None = None) -> Any:
    if body is None:
        return httpx.get(PROXY + path, timeout=30).json()
    return httpx.post(PROXY + path, json=body, timeout=30).json()


def eventually(check: Any, what: str, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.fixture
def client() -> PenguinMails:
    return PenguinMails()


def test_environment_fallbacks_and_explicit_arguments() -> None:
    assert PenguinMails().base_url == ENV["PENGUINMAILS_BASE_URL"].rstrip("/")
    assert PenguinMails().core.config.api_key == ENV["PENGUINMAILS_API_KEY"]
    c = PenguinMails(api_key="pm_test_x", base_url="http://example.test/")
    assert c.base_url == "http://example.test"
    assert c.core.config.api_key == "pm_test_x"


def test_campaign_email_and_analytics(client: PenguinMails) -> None:
    campaign = client.campaigns.create(
        name="Welcome Series",
        subject="Welcome to PenguinMails!",
        from_email=SENDER,
        content={"html": "<h1>Welcome!</h1>", "text": "Welcome!"},
        recipients={"tags": [f"welcome-{unique()}"]},
    )
    assert campaign["status"] == "draft"
    assert client.campaigns.get(campaign["id"])["name"] == "Welcome Series"
    result = client.emails.send(
        {
            "from": SENDER,
            "to": "user@example.com",
            "subject": "Test Email",
            "content": {"html": "<p>Hello from PenguinMails!</p>"},
            "tracking": {"track_opens": True, "track_clicks": True},
        }
    )
    assert result["message_id"] and result["status"] == "queued"
    bulk = client.emails.send_bulk(
        from_=SENDER,
        subject="Hi {{name}}",
        text="Hi {{name}}",
        recipients=[{"email": "user1@example.com", "personalization": {"name": "John"}}],
    )
    assert bulk["accepted"] == 1
    assert isinstance(client.analytics.campaign(campaign["id"]), dict)


def test_errors_carry_code_message_and_request_id(client: PenguinMails) -> None:
    with pytest.raises(ValidationError) as invalid:
        client.campaigns.create(
            name="", from_email=SENDER, content={"text": "x"}, recipients={"tags": ["x"]}
        )
    err = invalid.value
    assert isinstance(err, PenguinMailsError)
    assert err.status == 422 and err.code and err.request_id
    assert any("name" in str(d.get("field")) for d in err.details), err.details
    with pytest.raises(NotFoundError) as missing:
        client.contacts.get(str(uuid.uuid4()))
    assert missing.value.status == 404 and missing.value.request_id
    with pytest.raises(AuthenticationError) as unauthenticated:
        PenguinMails(api_key="pm_test_nope").contacts.list()
    assert unauthenticated.value.status == 401 and unauthenticated.value.code


def test_rate_limit_surfaces_after_the_retries() -> None:
    calls: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: calls.append(str(r.url))]})
    c = PenguinMails(api_key=ENV["PM_SDK_TEST_LIMITED_KEY"], max_retries=2, http_client=http)
    with pytest.raises(RateLimitError) as limited:
        c.contacts.list(limit=1)
    assert len(calls) == 3  # the first try and two retries
    assert limited.value.status == 429
    assert limited.value.retry_after is not None and limited.value.retry_after > 0
    assert limited.value.request_id


def test_connection_errors_are_retried_then_raised() -> None:
    calls: list[str] = []
    http = httpx.Client(event_hooks={"request": [lambda r: calls.append(str(r.url))]})
    c = PenguinMails(base_url="http://127.0.0.1:9", max_retries=1, http_client=http)
    with pytest.raises(APIConnectionError):
        c.contacts.list()
    assert len(calls) == 2


def test_a_lost_post_answer_is_retried_with_the_same_key_creating_one_object() -> None:
    address = f"retried-{unique()}@example.com"
    control("/__sdk_test/drop", {"method": "POST", "path": "/api/v1/contacts", "count": 1})
    contact = PenguinMails(base_url=PROXY).contacts.create(email=address, first_name="Once")
    log = [r for r in control("/__sdk_test/log") if r["path"] == "/api/v1/contacts"]
    lost = [r for r in log if r["dropped"]][-1]
    assert lost["status"] == 201  # the lost answer: the contact was created then
    assert lost["idempotency_key"]
    # Every try carried the same key; a try answered 429 or 503 (nothing done: rate limited, or
    # a dependency down) may come before or after the lost one; the last is the replay.
    tries = [r for r in log if r["idempotency_key"] == lost["idempotency_key"]]
    assert [r for r in tries if r["dropped"]] == [lost]
    assert tries[-1]["replayed"]
    assert all(r["status"] in (429, 503) for r in tries[:-1] if r is not lost)
    page = PenguinMails().contacts.list(email=address)
    assert [c["id"] for c in page.data] == [contact["id"]]


def test_pagination_walks_three_pages(client: PenguinMails) -> None:
    tag = f"paged-{unique()}"
    ids = {
        client.contacts.create(email=f"p{i}-{tag}@example.com", tags=[tag])["id"] for i in range(3)
    }
    first = client.contacts.list(tag=[tag], limit=1)
    assert len(first.data) == 1 and first.has_more
    assert len(list(first.iter_pages())) == 3
    assert {c["id"] for c in client.contacts.list(tag=[tag], limit=1)} == ids


def test_async_client_and_async_pagination() -> None:
    async def main() -> None:
        tag = f"async-{unique()}"
        async with AsyncPenguinMails() as c:
            created = await asyncio.gather(
                *(c.contacts.create(email=f"a{i}-{tag}@example.com", tags=[tag]) for i in range(3))
            )
            page = await c.contacts.list(tag=[tag], limit=1)
            assert len(page.data) == 1 and page.has_more
            seen = [x["id"] async for x in c.contacts.list(tag=[tag], limit=1)]
            assert sorted(seen) == sorted(x["id"] for x in created)
            with pytest.raises(ValidationError):
                await c.contacts.create(email="not an address")

    asyncio.run(main())


def test_webhook_verification_of_a_real_delivery(client: PenguinMails) -> None:
    path = f"/hooks/python-{unique()}"
    receiver = httpx.URL(ENV["PM_SDK_TEST_RECEIVER_URL"])
    endpoint = client.webhooks.create(
        url=f"http://{receiver.host}:{receiver.port}{path}", events=["email.opened"]
    )
    client.webhooks.send_test(endpoint["id"], event_type="email.opened")
    delivery = eventually(
        lambda: control(f"/__sdk_test/webhooks?path={path}"), "the test delivery"
    )[0]
    payload = client.webhooks.verify(delivery["body"], delivery["headers"], endpoint["secret"])
    assert payload["type"] == "email.opened"
    tampered = delivery["body"].replace("email.opened", "email.clicked")
    with pytest.raises(WebhookVerificationError):
        client.webhooks.verify(tampered, delivery["headers"], endpoint["secret"])


def test_raw_and_whsec_secrets_sign_alike() -> None:
    raw = "my-own-secret-0123456789"
    body = json.dumps({"type": "email.sent"})
    now = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now)}
    headers["webhook-signature"] = penguinmails.sign_webhook("msg_1", now, body, raw)
    assert penguinmails.verify_webhook(body, headers, raw) == {"type": "email.sent"}
    whsec = "whsec_" + base64.b64encode(raw.encode()).decode()
    assert penguinmails.verify_webhook(body, headers, whsec) == {"type": "email.sent"}
    with pytest.raises(WebhookVerificationError):
        penguinmails.verify_webhook(body, headers, "short")
    stale = {**headers, "webhook-timestamp": str(now - 3600)}
    with pytest.raises(WebhookVerificationError):
        penguinmails.verify_webhook(body, stale, raw)


def test_api_keys_with_an_access_token() -> None:
    account = PenguinMails(access_token=ENV["PENGUINMAILS_ACCESS_TOKEN"])
    created = account.api_keys.create(name=f"py-{unique()}", scopes=["send_email"], mode="test")
    assert created["key"].startswith("pm_test_")
    assert created["id"] in {k["id"] for k in account.api_keys.list()}
    account.api_keys.revoke(created["id"])
    with pytest.raises(AuthenticationError):
        PenguinMails(api_key=created["key"]).emails.send(
            {"from": SENDER, "to": "b@example.com", "subject": "x", "text": "x"}
        )


def test_event_stream_delivers_a_triggered_event_and_moves_its_resume_point(
    client: PenguinMails,
) -> None:
    sent: list[str] = []

    def connected() -> None:
        if not sent:  # the stream is open: what is emitted now reaches it
            sent.append(client.events.trigger(type="email.opened")["id"])

    stream = client.events.stream(types="email.opened", on_connect=connected)
    events = iter(stream)
    event = next(events)
    assert (event.id, event.type) == (sent[0], "email.opened")
    assert event.json()["id"] == sent[0] and "email" in event.json()["data"]
    # Not finished with it until the loop asks for the next one: a resume would repeat it.
    assert stream.last_event_id != event.id
    with pytest.raises(ValidationError):
        next(iter(client.events.stream(types="email.teleported")))


def test_event_stream_refusals_raise_without_reconnecting(client: PenguinMails) -> None:
    def no_reconnect(reason: str, delay: float) -> None:
        # Waiting out a short 429 (the server asked for it) is no reconnection.
        assert "Rate limit" in reason, f"reconnected: {reason}"

    with pytest.raises(ConflictError) as expired:
        next(iter(client.events.stream(last_event_id=str(uuid.uuid4()), on_reconnect=no_reconnect)))
    assert (expired.value.status, expired.value.code) == (409, "event_stream_cursor_expired")

    # A 429: a reconnecting stream waits the server's Retry-After, however long (here about two
    # hours: a key whose bucket the stack left in debt); a reconnect=False one is opened as any
    # call, which does not wait more than a minute.
    class Waits(Exception):
        pass

    def waits(reason: str, delay: float) -> None:
        raise Waits(reason, delay)  # rather than wait that long

    limited = PenguinMails(api_key=ENV["PM_SDK_TEST_LIMITED_KEY"])
    with pytest.raises(Waits) as waited:
        next(iter(limited.events.stream(on_reconnect=waits)))
    reason, delay = waited.value.args
    assert "Rate limit" in reason and delay > 60, waited.value.args

    def retried(reason: str, delay: float) -> None:
        raise AssertionError(f"retried: {reason}")

    with pytest.raises(RateLimitError) as refused:
        next(iter(limited.events.stream(reconnect=False, on_reconnect=retried)))
    assert refused.value.retry_after is not None and refused.value.retry_after > 60


def test_async_event_stream_delivers_a_triggered_event() -> None:
    sync = PenguinMails()
    sent: list[str] = []

    def connected() -> None:
        if not sent:
            sent.append(sync.events.trigger(type="email.clicked")["id"])

    async def main() -> None:
        async with AsyncPenguinMails() as c:
            async for event in c.events.stream(types=["email.clicked"], on_connect=connected):
                assert (event.id, event.type) == (sent[0], "email.clicked")
                break

    asyncio.run(main())
