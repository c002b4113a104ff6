"""RFC 5322 messages for the connectors that speak SMTP or store raw mail (SMTP, sandbox)."""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import formatdate

from services.delivery.connectors.base import OutgoingEmail


def build_mime(m: OutgoingEmail) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = m.from_header
    msg["To"] = m.to
    msg["Subject"] = m.subject
    msg["Date"] = formatdate(usegmt=True)
    if m.reply_to:
        msg["Reply-To"] = m.reply_to
    for name, value in m.headers.items():
        msg[name] = value
    msg.set_content(m.text or "")
    if m.html is not None:
        msg.add_alternative(m.html, subtype="html")
    return msg
