"""How our Message-ID looks: `<msg_...@sender domain>`. Replies reference it; the inbox
service threads them (and the per-message reply address, `libs.common.reply_tokens`)."""

from __future__ import annotations


def message_id_header(message_id: str, from_domain: str) -> str:
    return f"<{message_id}@{from_domain or 'penguinmails.local'}>"


def sender_domain(from_email: str) -> str:
    """The lower-cased domain of a From value (`a@b` or `Name <a@b>`)."""
    return from_email.rpartition("@")[2].rstrip(">").strip().lower()


def message_id_for(message_id: str, from_email: str) -> str:
    """The Message-ID header a message from `from_email` goes out with."""
    return message_id_header(message_id, sender_domain(from_email))
