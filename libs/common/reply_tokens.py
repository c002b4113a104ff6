"""The per-message reply address `reply+<token>@<reply domain>` (VERP style): delivery puts
it in Reply-To, the inbox maps a reply sent to it back to the message even when the
prospect's client dropped In-Reply-To/References.

The token is the message id (`msg_<32 hex>`) and a truncated HMAC-SHA256 of it, base32 in
lower case (mail systems may fold the case of a local part). A forged or altered token does
not verify, so a reply can never be filed under another tenant's message by guessing ids.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

DEV_REPLY_TOKEN_KEY = "dev-only-reply-token-key-change-me-0123456789"  # noqa: S105
_PREFIX = "reply+"
_MAC_BYTES = 10
_CONTEXT = b"pm-reply-v1:"
_MESSAGE_ID = re.compile(r"msg_([0-9a-f]{32})")


def _mac(key: str, raw: bytes) -> bytes:
    return hmac.new(key.encode(), _CONTEXT + raw, hashlib.sha256).digest()[:_MAC_BYTES]


def reply_token(key: str, message_id: str) -> str | None:
    """The token of `message_id`, or None for an id that is not one of ours."""
    m = _MESSAGE_ID.fullmatch(message_id)
    if m is None:
        return None
    raw = bytes.fromhex(m.group(1))
    return base64.b32encode(raw + _mac(key, raw)).decode().rstrip("=").lower()


def reply_address(key: str, message_id: str, domain: str) -> str | None:
    token = reply_token(key, message_id)
    return f"{_PREFIX}{token}@{domain}" if token else None


def verify_reply_token(key: str, token: str) -> str | None:
    """The message id a token was made for, or None when it is malformed or forged."""
    text = token.strip().upper()
    text += "=" * (-len(text) % 8)
    try:
        blob = base64.b32decode(text)
    except ValueError:
        return None
    if len(blob) != 16 + _MAC_BYTES:
        return None
    # Only the canonical spelling: 26 bytes leave 2 unused bits in the last character, so
    # four spellings would decode to one token (an "altered" token that still verifies).
    if base64.b32encode(blob).decode().rstrip("=") != token.strip().upper():
        return None
    raw, mac = blob[:16], blob[16:]
    if not hmac.compare_digest(mac, _mac(key, raw)):
        return None
    return f"msg_{raw.hex()}"


def message_id_of_address(
    key: str, address: str, domains: list[str] | tuple[str, ...]
) -> str | None:
    """The message id of a reply address at one of `domains` (`reply+<token>@domain`)."""
    local, _, domain = address.strip().strip("<>").rpartition("@")
    if domain.lower() not in {d.lower() for d in domains}:
        return None
    if not local.lower().startswith(_PREFIX):
        return None
    return verify_reply_token(key, local[len(_PREFIX) :])
