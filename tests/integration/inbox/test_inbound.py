"""Inbound mail through every entry (SMTP listener, Postmark, Mailgun, SendGrid Inbound
Parse, SES via SNS), verified, parsed, classified, threaded, stored and published."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import smtplib
import time
from typing import Any

import orjson

from services.inbox.smtp import serve_smtp
from tests.integration.inbox.conftest import (
    MAILGUN_KEY,
    POSTMARK_AUTH,
    REPLY_DOMAIN,
    SENDGRID_AUTH,
    TOPIC,
    Harness,
    inbox_settings,
)
from tests.ports import free_port
from tests.unit.inbox import mail


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def _types(h: Harness, subject: str) -> list[str]:
    return [e["type"] for e in await h.outbox(subject)]


# ------------------------------------------------------------------ SMTP listener


async def test_a_reply_by_smtp_threads_and_emits_email_replied(harness: Harness) -> None:
    h = harness
    mid, header = await h.sent()
    settings = inbox_settings(h.service.settings.inbound_credentials_path)
    settings.inbound_smtp_port = free_port()
    server = await serve_smtp(settings, h.service)
    raw = mail.reply(to=f"Alice <{h.sender}>", in_reply_to=header, references=header)
    huge = mail.reply(text="x" * (settings.inbound_max_bytes + 10))

    def deliver() -> tuple[Any, Any, Any]:
        with smtplib.SMTP("127.0.0.1", settings.inbound_smtp_port, timeout=10) as smtp:
            accepted = smtp.sendmail("prospect@example.org", [f"anyone@{REPLY_DOMAIN}"], raw)
            try:
                smtp.sendmail("prospect@example.org", [f"anyone@{REPLY_DOMAIN}"], huge)
                too_big: Any = None
            except smtplib.SMTPException as exc:
                too_big = exc
        with smtplib.SMTP("127.0.0.1", settings.inbound_smtp_port, timeout=10) as smtp:
            try:
                smtp.sendmail("spammer@example.net", ["victim@elsewhere.example"], raw)
                relayed: Any = None
            except smtplib.SMTPRecipientsRefused as exc:
                relayed = exc
        return accepted, too_big, relayed

    try:
        accepted, too_big, relayed = await asyncio.to_thread(deliver)
    finally:
        server.close()
        await server.wait_closed()
    assert accepted == {}
    # Oversized: refused at SMTP time with 552 (SIZE / DATA limit), nothing stored.
    assert too_big is not None and getattr(too_big, "smtp_code", None) == 552, too_big
    # Not a reply domain: refused at RCPT (never an open relay).
    assert relayed is not None
    assert next(iter(relayed.recipients.values()))[0] == 550

    threads = await h.client.get("/api/v1/inbox/threads", headers=h.headers())
    assert threads.status_code == 200, threads.text
    [thread] = threads.json()["data"]
    assert thread["message_id"] == mid and thread["classification"] == "human_reply"
    assert thread["read"] is False and thread["message_count"] == 2
    detail = (await h.thread(thread["id"])).json()["data"]
    assert [m["direction"] for m in detail["messages"]] == ["outbound", "inbound"]
    theirs = detail["messages"][1]
    assert theirs["in_reply_to"] == header and theirs["source"] == "smtp"
    assert "Tuesday" in theirs["text"]
    types = await _types(h, theirs["id"])
    assert types == ["inbox_message.received"]
    replied = [e for e in await h.outbox(mid) if e["type"] == "email.replied"]
    assert len(replied) == 1
    data = replied[0]["data"]
    assert data["thread_id"] == thread["id"] and data["inbox_message_id"] == theirs["id"]
    assert data["campaign_id"] == "cmp_1" and data["contact_id"] == "ct_1"
    assert "Tuesday" in data["reply_snippet"]


# ------------------------------------------------------------------ ESP inbound formats


async def test_postmark_inbound_json_threads_and_forgeries_are_refused(harness: Harness) -> None:
    h = harness
    _mid, header = await h.sent()
    body = {
        "From": "prospect@example.org",
        "FromFull": {"Email": "prospect@example.org", "Name": "Pat"},
        "To": h.sender,
        "ToFull": [{"Email": h.sender, "Name": "", "MailboxHash": ""}],
        "Subject": "Re: Quick question",
        "MessageID": f"pm-{h.unique}",
        "TextBody": "Yes please, send the deck.",
        "HtmlBody": "<p>Yes please<script>x()</script></p>",
        "StrippedTextReply": "Yes please, send the deck.",
        "Headers": [
            {"Name": "In-Reply-To", "Value": header},
            {"Name": "Message-ID", "Value": f"<pm-{h.unique}@example.org>"},
        ],
        "Attachments": [],
    }
    path = "/hooks/esp/postmark/inbound"
    forged = await h.client.post(path, json=body, headers=_basic("pm-inbound", "guess"))
    assert forged.status_code == 401
    assert forged.json()["error"]["code"] == "webhook_signature_invalid"
    missing = await h.client.post(path, json=body)
    assert missing.status_code == 401
    r = await h.client.post(path, json=body, headers=_basic(*POSTMARK_AUTH))
    assert r.status_code == 200, r.text
    [result] = r.json()["data"]["results"]
    assert result["folder"] == "inbox" and result["classification"] == "human_reply"
    # Postmark retries a delivery it did not see answered: stored once.
    again = await h.client.post(path, json=body, headers=_basic(*POSTMARK_AUTH))
    assert again.json()["data"]["results"][0]["folder"] == "duplicate"
    message = (
        await h.client.get(
            f"/api/v1/inbox/messages/{result['inbox_message_id']}", headers=h.headers()
        )
    ).json()["data"]
    assert message["thread_id"] == result["thread_id"]
    assert "script" not in (message["html"] or "")
    raw = await h.client.get(
        f"/api/v1/inbox/messages/{result['inbox_message_id']}/raw", headers=h.headers()
    )
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/octet-stream"
    assert header.encode() in raw.content


def _mailgun_signature(timestamp: str, token: str) -> str:
    mac = hmac.new(MAILGUN_KEY.encode(), f"{timestamp}{token}".encode(), hashlib.sha256)
    return mac.hexdigest()


async def test_mailgun_route_mime_and_parsed_forms(harness: Harness) -> None:
    h = harness
    _, header = await h.sent()
    ts, token = str(int(time.time())), f"tok-{h.unique}"
    raw = mail.reply(to=h.sender, in_reply_to=header)
    form = {
        "recipient": h.sender,
        "sender": "prospect@example.org",
        "timestamp": ts,
        "token": token,
        "signature": _mailgun_signature(ts, token),
        "Message-Id": f"<mg-{h.unique}@example.org>",
    }
    path = "/hooks/esp/mailgun/inbound"
    # A route ending in `mime` posts the raw message as body-mime (multipart/form-data).
    r = await h.client.post(path, data=form, files={"body-mime": (None, raw)})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["results"][0]["folder"] == "inbox"
    # The same signed token with another body is a replay with altered data.
    replay = await h.client.post(path, data={**form, "subject": "changed"})
    assert replay.status_code == 401
    # A bad signature.
    ts2, token2 = str(int(time.time())), f"tok2-{h.unique}"
    bad = {**form, "timestamp": ts2, "token": token2, "signature": "0" * 64}
    assert (await h.client.post(path, data=bad)).status_code == 401
    # The parsed form (no body-mime), urlencoded, with headers stripped but a reply address.
    mid2, _ = await h.sent()
    parsed = {
        **form,
        "timestamp": ts2,
        "token": token2,
        "signature": _mailgun_signature(ts2, token2),
        "recipient": h.reply_address(mid2),
        "from": "Pat <prospect@example.org>",
        "subject": "Re: Quick question",
        "body-plain": "Interested, call me.",
        "message-headers": orjson.dumps([["Subject", "Re: Quick question"]]).decode(),
        "Message-Id": f"<mg2-{h.unique}@example.org>",
    }
    r = await h.client.post(path, data=parsed)
    assert r.status_code == 200, r.text
    result = r.json()["data"]["results"][0]
    thread = (await h.thread(result["thread_id"])).json()["data"]
    assert thread["message_id"] == mid2


async def test_sendgrid_inbound_parse_raw_mime(harness: Harness) -> None:
    h = harness
    mid, _ = await h.sent()
    # The client dropped In-Reply-To/References: the reply address threads it.
    raw = mail.reply(to=h.reply_address(mid))
    envelope = orjson.dumps({"to": [h.reply_address(mid)], "from": "prospect@example.org"})
    files = {
        "email": (None, raw),
        "envelope": (None, envelope),
        "to": (None, h.reply_address(mid).encode()),
        "from": (None, b"prospect@example.org"),
        "subject": (None, b"Re: Quick question"),
    }
    path = "/hooks/esp/sendgrid/inbound"
    assert (await h.client.post(path, files=files)).status_code == 401
    r = await h.client.post(path, files=files, headers=_basic(*SENDGRID_AUTH))
    assert r.status_code == 200, r.text
    result = r.json()["data"]["results"][0]
    assert (await h.thread(result["thread_id"])).json()["data"]["message_id"] == mid


async def test_ses_receipt_through_sns_with_the_topic_allow_list(
    harness: Harness, fake_ses: Any
) -> None:
    h = harness
    mid, header = await h.sent()
    raw = mail.reply(to=h.sender, in_reply_to=header)
    notification = {
        "notificationType": "Received",
        "mail": {"messageId": f"ses-{h.unique}", "destination": [h.sender]},
        "receipt": {
            "recipients": [h.sender],
            "action": {"type": "SNS", "topicArn": TOPIC, "encoding": "BASE64"},
        },
        "content": base64.b64encode(raw).decode(),
    }
    path = "/hooks/esp/ses/inbound"
    stranger = fake_ses.sns_message(notification, topic="arn:aws:sns:us-east-1:999:other")
    assert (await h.client.post(path, json=stranger)).status_code == 401
    signed = fake_ses.sns_message(notification, topic=TOPIC)
    tampered = {**signed, "Message": signed["Message"].replace("Received", "Received ")}
    assert (await h.client.post(path, json=tampered)).status_code == 401
    r = await h.client.post(path, json=signed)
    assert r.status_code == 200, r.text
    result = r.json()["data"]["results"][0]
    assert (await h.thread(result["thread_id"])).json()["data"]["message_id"] == mid


async def test_unknown_provider_is_404(harness: Harness) -> None:
    r = await harness.client.post("/hooks/esp/nope/inbound", content=b"{}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_provider"


# ------------------------------------------------------------------ classification


async def test_out_of_office_does_not_count_as_a_reply(harness: Harness) -> None:
    h = harness
    mid, header = await h.sent()
    raw = mail.reply(
        to=h.sender,
        in_reply_to=header,
        subject="Automatic reply: Quick question",
        headers={"Auto-Submitted": "auto-replied"},
        text="I am out of the office until Monday.",
    )
    result = await h.service.ingest(_smtp(raw, h))
    assert result.classification == "auto_reply"
    types = await _types(h, mid)
    assert "email.auto_replied" in types and "email.replied" not in types


async def test_a_dsn_becomes_a_bounce_for_delivery(harness: Harness) -> None:
    h = harness
    mid, header = await h.sent()
    result = await h.service.ingest(_smtp(mail.dsn(header, "prospect@example.org"), h))
    assert result.classification == "bounce"
    [feedback] = [e for e in await h.outbox(mid) if e["type"] == "inbox_feedback.received"]
    assert feedback["data"]["kind"] == "bounce" and feedback["data"]["bounce_type"] == "hard"
    assert feedback["data"]["message_id"] == mid
    assert "email.replied" not in await _types(h, mid)


async def test_an_unsubscribe_request_is_handed_to_delivery(harness: Harness) -> None:
    h = harness
    mid, header = await h.sent()
    raw = mail.reply(to=h.sender, in_reply_to=header, text="Unsubscribe me please")
    result = await h.service.ingest(_smtp(raw, h))
    assert result.classification == "unsubscribe_request"
    kinds = [e["data"].get("kind") for e in await h.outbox(mid) if e["type"].startswith("inbox_")]
    assert kinds == ["unsubscribe"]


# ------------------------------------------------------------------ unmatched, never lost


async def test_unmatched_mail_goes_to_the_senders_unmatched_folder_or_quarantine(
    harness: Harness,
) -> None:
    h = harness
    await h.sent()  # the tenant sends from h.sender: mail to that address is the tenant's
    stray = await h.service.ingest(_smtp(mail.reply(to=h.sender, subject="New inquiry"), h))
    assert stray.folder == "unmatched"
    listed = await h.client.get(
        "/api/v1/inbox/threads", params={"folder": "unmatched"}, headers=h.headers()
    )
    assert [t["id"] for t in listed.json()["data"]] == [stray.thread_id]
    # A malformed message for the tenant is kept, with its parse error.
    broken = await h.service.ingest(_smtp(b"\x00\x01 garbage", h, recipients=(h.sender,)))
    assert broken.folder == "unmatched"
    msg = (
        await h.client.get(f"/api/v1/inbox/messages/{broken.inbox_message_id}", headers=h.headers())
    ).json()["data"]
    assert msg["parse_error"] and msg["has_raw"] is True
    # Nobody's mail: the operator quarantine.
    orphan = await h.service.ingest(
        _smtp(mail.reply(to=f"nobody-{h.unique}@nowhere.example"), h, recipients=())
    )
    assert orphan.folder == "quarantine"


# ------------------------------------------------------------------ tenant isolation


async def test_tenant_b_never_sees_tenant_a_mail_not_even_with_a_forged_token(
    harness: Harness,
) -> None:
    h = harness
    other = f"t_other_{h.unique}"
    _mid, header = await h.sent()
    result = await h.service.ingest(_smtp(mail.reply(to=h.sender, in_reply_to=header), h))
    assert (await h.thread(result.thread_id or "")).status_code == 200
    foreign = await h.thread(result.thread_id or "", tenant=other)
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "thread_not_found"
    assert (
        await h.client.get(
            f"/api/v1/inbox/messages/{result.inbox_message_id}", headers=h.headers(tenant=other)
        )
    ).status_code == 404
    listed = await h.client.get("/api/v1/inbox/threads", headers=h.headers(tenant=other))
    assert listed.json()["data"] == []
    # Tenant B's message; a reply token for it altered by one character must not thread
    # (into B's thread or anyone's).
    b_mid, _ = await h.sent(tenant=other, to="someone@example.org")
    token_address = h.reply_address(b_mid)
    local, _, domain = token_address.partition("@")
    forged = local[:-1] + ("a" if local[-1] != "a" else "b") + "@" + domain
    r = await h.service.ingest(_smtp(mail.reply(to=forged), h, recipients=(forged,)))
    assert r.folder == "quarantine"
    b_threads = await h.client.get("/api/v1/inbox/threads", headers=h.headers(tenant=other))
    assert b_threads.json()["data"] == []


def _smtp(raw: bytes, h: Harness, recipients: tuple[str, ...] | None = None) -> Any:
    from services.inbox.providers import InboundMail

    key = f"test:{hashlib.sha256(raw + h.unique.encode()).hexdigest()}:{time.monotonic_ns()}"
    return InboundMail(raw, key, "smtp", (h.sender,) if recipients is None else recipients)


async def test_starttls_is_offered_when_a_certificate_is_configured(
    harness: Harness, tmp_path: Any
) -> None:
    import datetime as dt
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, REPLY_DOMAIN)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    h = harness
    _, header = await h.sent()
    settings = inbox_settings(
        h.service.settings.inbound_credentials_path,
        inbound_smtp_port=free_port(),
        inbound_smtp_tls_cert=str(tmp_path / "cert.pem"),
        inbound_smtp_tls_key=str(tmp_path / "key.pem"),
    )
    server = await serve_smtp(settings, h.service)
    raw = mail.reply(to=h.sender, in_reply_to=header)

    def deliver() -> tuple[bool, Any]:
        context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        context.check_hostname = False
        with smtplib.SMTP("127.0.0.1", settings.inbound_smtp_port, timeout=10) as smtp:
            smtp.ehlo()
            offered = smtp.has_extn("starttls")
            smtp.starttls(context=context)
            smtp.ehlo()
            return offered, smtp.sendmail("p@example.org", [f"x@{REPLY_DOMAIN}"], raw)

    try:
        offered, refused = await asyncio.to_thread(deliver)
    finally:
        server.close()
        await server.wait_closed()
    assert offered is True and refused == {}
    threads = await h.client.get("/api/v1/inbox/threads", headers=h.headers())
    assert len(threads.json()["data"]) == 1
