"""How our Message-ID looks, and how a reply's In-Reply-To/References map back to it."""

from __future__ import annotations

import re

_OURS = re.compile(r"<(msg_[0-9a-f]{32})@[^>]+>")


def message_id_header(message_id: str, from_domain: str) -> str:
    return f"<{message_id}@{from_domain or 'penguinmails.local'}>"


def our_message_id(references: str) -> str | None:
    """The last of our message ids in an In-Reply-To/References value, if any."""
    found = _OURS.findall(references or "")
    return found[-1] if found else None
