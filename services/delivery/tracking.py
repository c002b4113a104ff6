"""Signed tracking tokens for the open pixel, click redirect and unsubscribe links.

A token is `<kind>.<message id>.<base64url URL or empty>.<base64url HMAC-SHA256>`, the MAC
covering kind, message id and URL: a token cannot be forged, moved to another message,
another URL, or another kind (an open token is not an unsubscribe token). Compared in
constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

Kind = Literal["o", "c", "u"]
_KINDS = ("o", "c", "u")
_MAC_BYTES = 16  # 128-bit tag: unforgeable, and keeps URLs short


@dataclass(frozen=True)
class TrackingToken:
    kind: Kind
    message_id: str
    url: str | None = None


class InvalidToken(ValueError):
    pass


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, key: str) -> None:
        if len(key.encode()) < 32:
            raise ValueError("tracking signing key must be at least 32 bytes")
        self._key = key.encode()

    def _mac(self, kind: str, message_id: str, url: str) -> str:
        msg = f"pm-track-v1\n{kind}\n{message_id}\n{url}".encode()
        return _b64(hmac.new(self._key, msg, hashlib.sha256).digest()[:_MAC_BYTES])

    def sign(self, token: TrackingToken) -> str:
        url = token.url or ""
        return ".".join(
            [
                token.kind,
                token.message_id,
                _b64(url.encode()),
                self._mac(token.kind, token.message_id, url),
            ]
        )

    def verify(self, raw: str, kind: Kind) -> TrackingToken:
        parts = raw.split(".")
        if len(parts) != 4 or parts[0] != kind or parts[0] not in _KINDS:
            raise InvalidToken("malformed token")
        _, message_id, url_b64, mac = parts
        try:
            url = _unb64(url_b64).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidToken("malformed token") from exc
        if not hmac.compare_digest(self._mac(kind, message_id, url), mac):
            raise InvalidToken("bad signature")
        return TrackingToken(kind, message_id, url or None)
