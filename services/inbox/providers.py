"""Inbound mail as each provider delivers it, verified as that provider documents, turned
into raw MIME (the one form the inbox stores and parses):

- Postmark inbound webhook: JSON, basic auth on the webhook URL; `RawEmail` when the
  server includes it, else the message rebuilt from the JSON fields.
- Mailgun routes (`forward()`): form fields signed with HMAC-SHA256 over timestamp + token
  (webhook signing key), `body-mime` for routes ending in `mime`, else the parsed fields.
- SendGrid Inbound Parse: multipart form, basic auth on the URL; `email` is the raw MIME
  ("POST the raw, full MIME message"), else the parsed fields.
- Amazon SES receipt rule with an SNS action: a verified SNS notification (topic
  allow-list) whose `content` is the raw MIME (BASE64 or UTF8 encoding).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qsl

import orjson

from libs.common.sns import SnsRejected, SnsVerifier, parse_sns

PROVIDERS = ("postmark", "mailgun", "sendgrid", "ses")
MAILGUN_MAX_AGE_SECONDS = 15 * 60


class InboundRejected(Exception):
    """Forged, unverifiable or malformed delivery: answered 401, nothing stored."""


@dataclass(frozen=True)
class InboundMail:
    raw: bytes
    dedup_key: str
    source: str
    # Envelope recipients when the provider tells them (else the To/Cc headers count).
    recipients: tuple[str, ...] = ()


@dataclass
class HookRequest:
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    # (token, body hash) that must be new: providers whose signature does not cover the body.
    replay_token: tuple[str, str] | None = field(default=None)


def form_fields(request: HookRequest) -> tuple[dict[str, str], dict[str, bytes]]:
    """Fields and files of a `multipart/form-data` or urlencoded body (stdlib only)."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/x-www-form-urlencoded"):
        pairs = parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True)
        return dict(pairs), {}
    if not ctype.startswith("multipart/form-data"):
        raise InboundRejected("expected a form body")
    head = f"Content-Type: {ctype}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = BytesParser(policy=policy.HTTP).parsebytes(head + request.body)
    if not msg.is_multipart():
        raise InboundRejected("malformed multipart body")
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        decoded = part.get_payload(decode=True)
        payload = decoded if isinstance(decoded, bytes) else b""
        if part.get_filename():
            files[str(name)] = payload
        else:
            charset = part.get_content_charset() or "utf-8"
            fields[str(name)] = payload.decode(charset, "replace")
    return fields, files


def _basic_auth(request: HookRequest, creds: Mapping[str, Any], provider: str) -> None:
    user = str(creds.get("webhook_username") or "")
    password = str(creds.get("webhook_password") or "")
    if not user or not password:
        raise InboundRejected(f"{provider} inbound credentials are not configured")
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        raise InboundRejected(f"{provider} inbound without basic auth")
    try:
        given = base64.b64decode(value, validate=True).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise InboundRejected(f"{provider} inbound: malformed basic auth") from exc
    if not hmac.compare_digest(given.encode(), f"{user}:{password}".encode()):
        raise InboundRejected(f"{provider} inbound: wrong credentials")


def _rebuild(
    *,
    from_: str,
    to: str,
    subject: str,
    text: str | None,
    html: str | None,
    headers: list[tuple[str, str]],
    cc: str | None = None,
) -> bytes:
    """A MIME message from a provider's parsed fields (when it sent no raw MIME)."""
    msg = EmailMessage(policy=policy.default)
    skip = {"from", "to", "cc", "subject", "content-type", "content-transfer-encoding",
            "mime-version"}  # fmt: skip
    for name, value in headers:
        if name.lower() not in skip:
            try:
                msg[name] = value
            except (ValueError, TypeError):
                continue  # a header the policy refuses is dropped, the message is kept
    msg["From"] = from_
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = subject
    msg.set_content(text or "")
    if html:
        msg.add_alternative(html, subtype="html")
    return msg.as_bytes()


# ------------------------------------------------------------------ per provider


def postmark(request: HookRequest, creds: Mapping[str, Any]) -> list[InboundMail]:
    _basic_auth(request, creds, "postmark")
    try:
        e = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise InboundRejected("postmark inbound: body is not JSON") from exc
    if not isinstance(e, dict):
        raise InboundRejected("postmark inbound: body is not an object")
    key = f"postmark:{e.get('MessageID') or hashlib.sha256(request.body).hexdigest()}"
    recipients = tuple(
        str(r.get("Email")) for r in e.get("ToFull") or [] if isinstance(r, dict) and r.get("Email")
    )
    if e.get("OriginalRecipient"):
        recipients = (str(e["OriginalRecipient"]), *recipients)
    if e.get("RawEmail"):
        return [InboundMail(str(e["RawEmail"]).encode(), key, "postmark", recipients)]
    headers = [(str(h.get("Name", "")), str(h.get("Value", "")))
               for h in e.get("Headers") or [] if isinstance(h, dict)]  # fmt: skip
    if e.get("MessageID") and not any(n.lower() == "message-id" for n, _ in headers):
        headers.append(("Message-ID", f"<{e['MessageID']}@inbound.postmarkapp.com>"))
    raw = _rebuild(
        from_=str(e.get("From") or ""),
        to=str(e.get("To") or ""),
        cc=e.get("Cc") or None,
        subject=str(e.get("Subject") or ""),
        text=e.get("TextBody"),
        html=e.get("HtmlBody"),
        headers=headers,
    )
    return [InboundMail(raw, key, "postmark", recipients)]


def mailgun(request: HookRequest, creds: Mapping[str, Any]) -> list[InboundMail]:
    fields, files = form_fields(request)
    signing_key = str(creds.get("webhook_signing_key") or "")
    if not signing_key:
        raise InboundRejected("mailgun webhook signing key is not configured")
    timestamp, token = fields.get("timestamp", ""), fields.get("token", "")
    expected = hmac.new(signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256)
    if not hmac.compare_digest(expected.hexdigest(), fields.get("signature", "")):
        raise InboundRejected("mailgun inbound: bad signature")
    try:
        age = abs(time.time() - float(timestamp))
    except ValueError as exc:
        raise InboundRejected("mailgun inbound: bad timestamp") from exc
    if age > MAILGUN_MAX_AGE_SECONDS:
        raise InboundRejected("mailgun inbound: signature too old")
    request.replay_token = (token, hashlib.sha256(request.body).hexdigest())
    recipients = tuple(r.strip() for r in fields.get("recipient", "").split(",") if r.strip())
    key = f"mailgun:{fields.get('Message-Id') or token}"
    if fields.get("body-mime") or files.get("body-mime"):
        raw = fields["body-mime"].encode() if "body-mime" in fields else files["body-mime"]
        return [InboundMail(raw, key, "mailgun", recipients)]
    try:
        headers = [(str(n), str(v)) for n, v in orjson.loads(fields.get("message-headers") or "[]")]
    except (orjson.JSONDecodeError, ValueError, TypeError):
        headers = []
    for name in ("Message-Id", "In-Reply-To", "References"):
        if fields.get(name) and not any(n.lower() == name.lower() for n, _ in headers):
            headers.append((name, fields[name]))
    raw = _rebuild(
        from_=fields.get("from") or fields.get("sender", ""),
        to=fields.get("To") or fields.get("recipient", ""),
        subject=fields.get("subject", ""),
        text=fields.get("body-plain"),
        html=fields.get("body-html"),
        headers=headers,
    )
    return [InboundMail(raw, key, "mailgun", recipients)]


def sendgrid(request: HookRequest, creds: Mapping[str, Any]) -> list[InboundMail]:
    _basic_auth(request, creds, "sendgrid")
    fields, files = form_fields(request)
    recipients: tuple[str, ...] = ()
    try:
        envelope = orjson.loads(fields.get("envelope") or "{}")
        recipients = tuple(str(r) for r in envelope.get("to") or [])
    except (orjson.JSONDecodeError, AttributeError):
        pass
    raw_text = fields.get("email")
    if raw_text is not None or "email" in files:
        raw = raw_text.encode() if raw_text is not None else files["email"]
    else:
        headers = BytesParser(policy=policy.default).parsebytes(
            (fields.get("headers") or "").encode() + b"\r\n\r\n"
        )
        raw = _rebuild(
            from_=fields.get("from", ""),
            to=fields.get("to", ""),
            cc=fields.get("cc"),
            subject=fields.get("subject", ""),
            text=fields.get("text"),
            html=fields.get("html"),
            headers=[(k, str(v)) for k, v in headers.items()],
        )
    key = f"sendgrid:{hashlib.sha256(raw).hexdigest()}"
    return [InboundMail(raw, key, "sendgrid", recipients)]


async def ses(request: HookRequest, verifier: SnsVerifier) -> list[InboundMail]:
    try:
        msg = parse_sns(request.body)
        await verifier.verify(msg)
    except SnsRejected as exc:
        raise InboundRejected(str(exc)) from exc
    if msg["Type"] == "SubscriptionConfirmation":
        await verifier.confirm(msg)
        return []
    if msg["Type"] != "Notification":
        return []
    try:
        e = orjson.loads(msg["Message"])
    except (orjson.JSONDecodeError, TypeError) as exc:
        raise InboundRejected("sns: SES notification is not JSON") from exc
    if not isinstance(e, dict) or e.get("notificationType") != "Received":
        return []
    receipt = e.get("receipt") or {}
    content = e.get("content")
    if not isinstance(content, str):
        raise InboundRejected("ses: the receipt rule's SNS action carries no content")
    encoding = str((receipt.get("action") or {}).get("encoding") or "UTF8").upper()
    try:
        raw = base64.b64decode(content) if encoding == "BASE64" else content.encode()
    except (binascii.Error, ValueError) as exc:
        raise InboundRejected("ses: content is not base64") from exc
    recipients = tuple(str(r) for r in receipt.get("recipients") or [])
    key = f"ses:{(e.get('mail') or {}).get('messageId') or msg.get('MessageId')}"
    return [InboundMail(raw, key, "ses", recipients)]
