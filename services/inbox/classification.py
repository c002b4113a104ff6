"""What an inbound message is: a human reply, an auto-reply (RFC 3834 `Auto-Submitted`,
vendor auto-reply headers, out-of-office subjects), a bounce (an RFC 3464 delivery status
notification) or an unsubscribe request. Only human replies stop a sequence."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from services.inbox.mime import ParsedMail

Classification = Literal["human_reply", "auto_reply", "bounce", "unsubscribe_request"]
CLASSIFICATIONS: tuple[Classification, ...] = (
    "human_reply",
    "auto_reply",
    "bounce",
    "unsubscribe_request",
)

_OOO_SUBJECT = re.compile(
    r"^\s*(out of (the )?office|automatic reply|auto(matic)?[- ]?reply|autoreply|auto:|"
    r"on vacation|away from (the )?office|abwesenheitsnotiz|r[ée]ponse automatique|"
    r"respuesta autom[áa]tica|risposta automatica|fuera de la oficina)",
    re.IGNORECASE,
)
_BOUNCE_SENDER = re.compile(r"^(mailer-daemon|postmaster)@", re.IGNORECASE)
_BOUNCE_SUBJECT = re.compile(
    r"(undeliverable|undelivered mail|delivery status notification \(failure\)|"
    r"mail delivery (failed|subsystem)|returned mail|failure notice)",
    re.IGNORECASE,
)
# The first line of the body starting with one of these, or a subject that is only one.
_UNSUBSCRIBE = re.compile(
    r"^\W*(unsubscribe|remove me|opt[- ]?out|take me off|please remove|"
    r"stop (emailing|sending|contacting|mailing)( me)?)\b",
    re.IGNORECASE,
)
_UNSUBSCRIBE_SUBJECT = re.compile(
    r"^\W*(unsubscribe|remove me|opt[- ]?out|stop)\W*$", re.IGNORECASE
)
_STATUS = re.compile(r"([245])\.\d{1,3}\.\d{1,3}")


@dataclass(frozen=True)
class Verdict:
    classification: Classification
    bounce_type: Literal["hard", "soft"] | None = None
    bounce_reason: str | None = None
    bounced_recipient: str | None = None


def _is_auto_reply(mail: ParsedMail) -> bool:
    auto = (mail.header("Auto-Submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return True  # RFC 3834: auto-replied, auto-generated, auto-notified
    if mail.header("X-Autoreply") or mail.header("X-Autorespond"):
        return True
    if (mail.header("Precedence") or "").strip().lower() == "auto_reply":
        return True
    if mail.header("X-MS-Exchange-Inbox-Rules-Loop") and mail.header("X-Auto-Response-Suppress"):
        return True  # an Exchange rule answered
    return bool(_OOO_SUBJECT.search(mail.subject or ""))


def _bounce(mail: ParsedMail) -> Verdict | None:
    if mail.dsn:
        failed = [f for f in mail.dsn if "failed" in f.get("action", "").lower()
                  or f.get("status", "").startswith(("4", "5"))]  # fmt: skip
        if not failed:
            return None  # delayed/delivered/relayed reports are no bounce
        first = failed[0]
        status = _STATUS.search(first.get("status", ""))
        hard = status is not None and status.group(1) == "5"
        field = first.get("final-recipient") or first.get("original-recipient") or ""
        recipient = field.partition(";")[2].strip() or field.strip() or None
        reason = first.get("diagnostic-code") or first.get("status")
        return Verdict("bounce", "hard" if hard else "soft", reason, recipient)
    sender = mail.from_email or ""
    if _BOUNCE_SENDER.match(sender) and _BOUNCE_SUBJECT.search(mail.subject or ""):
        body = mail.text or ""
        status = _STATUS.search(body)
        hard = status is None or status.group(1) == "5"
        return Verdict("bounce", "hard" if hard else "soft", (mail.subject or "")[:200])
    return None


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def classify(mail: ParsedMail) -> Verdict:
    bounce = _bounce(mail)
    if bounce is not None:
        return bounce
    if _is_auto_reply(mail):
        return Verdict("auto_reply")
    subject = re.sub(r"^\s*(re|aw|sv|antw)\s*:\s*", "", mail.subject or "", flags=re.IGNORECASE)
    if _UNSUBSCRIBE_SUBJECT.match(subject) or _UNSUBSCRIBE.match(_first_line(mail.text)):
        return Verdict("unsubscribe_request")
    return Verdict("human_reply")
