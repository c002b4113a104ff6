"""Parsing raw inbound mail (RFC 5322 / MIME) with the standard library's `email` package
(`policy=default`): headers, addresses, threading headers, the text and sanitized HTML
bodies, attachment metadata, and the parts a delivery status notification carries."""

from __future__ import annotations

import email
import email.utils
import re
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message
from typing import Any

import nh3

_MSG_ID = re.compile(r"<[^<>\s]+>")
# A parse that yields this little is treated as malformed (no header block at all).
_MAX_HEADERS = 500


class MalformedMail(ValueError):
    """The bytes are not a parseable message (kept as unmatched with this error)."""


@dataclass(frozen=True)
class Attachment:
    filename: str | None
    content_type: str
    size: int
    content_id: str | None = None


@dataclass
class ParsedMail:
    headers: list[tuple[str, str]]
    from_email: str | None
    from_name: str | None
    to: list[str]
    subject: str
    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    text: str | None
    html: str | None
    attachments: list[Attachment] = field(default_factory=list)
    # multipart/report; report-type=delivery-status: (status, action, recipient) per field.
    dsn: list[dict[str, str]] = field(default_factory=list)
    # The Message-ID of the message a DSN reports on (its attached original headers).
    dsn_original_ids: list[str] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None

    @property
    def thread_ids(self) -> list[str]:
        """Message-IDs this mail answers, most specific (In-Reply-To) first."""
        seen: list[str] = []
        for mid in [*self.in_reply_to, *reversed(self.references), *self.dsn_original_ids]:
            if mid not in seen:
                seen.append(mid)
        return seen


def message_ids(value: str | None) -> list[str]:
    return _MSG_ID.findall(value or "")


def _text(part: Message) -> str | None:
    try:
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, ValueError, AssertionError):
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None
    return content if isinstance(content, str) else None


def sanitize_html(html: str) -> str:
    """Inbound HTML as stored and served: no scripts, handlers, forms or remote-loading
    tricks beyond what nh3's (ammonia's) safe defaults allow; links get rel=noopener."""
    return nh3.clean(html, link_rel="noopener noreferrer nofollow")


def parse_mail(raw: bytes) -> ParsedMail:
    if not raw or not raw.strip():
        raise MalformedMail("empty message")
    try:
        msg = email.message_from_bytes(raw, policy=policy.default)
    except Exception as exc:  # the parser is lenient; anything raised is a malformed input
        raise MalformedMail(f"unparseable message: {type(exc).__name__}") from exc
    assert isinstance(msg, EmailMessage)
    headers: list[tuple[str, str]] = []
    try:
        for k, v in msg.items()[:_MAX_HEADERS]:
            headers.append((k, str(v)))
    except Exception as exc:
        raise MalformedMail(f"malformed header: {type(exc).__name__}") from exc
    if not headers or (msg.defects and not any(k.lower() in ("from", "to") for k, _ in headers)):
        raise MalformedMail("no header block (From/To missing)")
    from_name, from_email = email.utils.parseaddr(_header(msg, "from"))
    to = [a for _, a in email.utils.getaddresses([_header(msg, "to"), _header(msg, "cc")]) if a]
    text = html = None
    attachments: list[Attachment] = []
    dsn: list[dict[str, str]] = []
    dsn_ids: list[str] = []
    is_report = msg.get_content_type() == "multipart/report"
    for part in msg.walk():
        ctype = part.get_content_type()
        # message/delivery-status parses as a container of header blocks: read it first.
        if is_report and ctype == "message/delivery-status":
            dsn.extend(_dsn_fields(part))
            continue
        if part.is_multipart():
            continue
        disposition = part.get_content_disposition()
        if is_report and ctype in ("message/rfc822", "text/rfc822-headers"):
            dsn_ids.extend(_original_ids(part))
            continue
        if disposition == "attachment" or (disposition == "inline" and part.get_filename()):
            payload = part.get_payload(decode=True)
            attachments.append(
                Attachment(
                    part.get_filename(),
                    ctype,
                    len(payload) if isinstance(payload, bytes) else 0,
                    part.get("Content-ID"),
                )
            )
            continue
        if ctype == "text/plain" and text is None:
            text = _text(part)
        elif ctype == "text/html" and html is None:
            raw_html = _text(part)
            html = sanitize_html(raw_html) if raw_html is not None else None
    if is_report:
        # message/rfc822 parts are containers: walk() may have descended into them.
        for container in msg.iter_parts():
            if container.get_content_type() == "message/rfc822":
                dsn_ids.extend(_original_ids(container))
    return ParsedMail(
        headers=headers,
        from_email=from_email.lower() or None,
        from_name=from_name or None,
        to=[a.lower() for a in to],
        subject=_header(msg, "subject"),
        message_id=next(iter(message_ids(_header(msg, "message-id"))), None),
        in_reply_to=message_ids(_header(msg, "in-reply-to")),
        references=message_ids(_header(msg, "references")),
        text=text,
        html=html,
        attachments=attachments,
        dsn=dsn,
        dsn_original_ids=list(dict.fromkeys(dsn_ids)),
    )


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
    except Exception:  # a header the policy cannot parse: its raw text instead
        value = next((v for k, v in msg.raw_items() if k.lower() == name), None)
    return str(value) if value is not None else ""


def _dsn_fields(part: Message) -> list[dict[str, str]]:
    """The per-recipient groups of an RFC 3464 `message/delivery-status` part."""
    payload: Any = part.get_payload()
    blocks: list[Message] = payload if isinstance(payload, list) else []
    if not blocks:
        raw = part.get_payload(decode=True)
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload or "")
        blocks = [email.message_from_string(b) for b in re.split(r"\r?\n\r?\n", text) if b]
    out = []
    for block in blocks:
        fields = {k.lower(): str(v) for k, v in block.items()}
        if "status" in fields or "action" in fields:
            out.append(fields)
    return out


def _original_ids(part: Message) -> list[str]:
    payload: Any = part.get_payload()
    if isinstance(payload, list):
        return [i for p in payload for i in message_ids(str(p.get("message-id", "")))]
    raw = part.get_payload(decode=True)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(payload or "")
    found = re.search(r"^message-id:\s*(.+)$", text, re.IGNORECASE | re.MULTILINE)
    return message_ids(found.group(1)) if found else []
