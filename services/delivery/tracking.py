"""Signed tracking tokens for the open pixel, click redirect and unsubscribe links.

A token is `<kind>.<message id>.<base64url URL or empty>.<base64url HMAC-SHA256>`, the MAC
covering kind, message id and URL: a token cannot be forged, moved to another message,
another URL, or another kind (an open token is not an unsubscribe token). Compared in
constant time. `TrackingThrottle` decides which verified hits are recorded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

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


@lru_cache(maxsize=1024)
def _url_b64(url: str) -> str:
    """A token's URL part: the same few links in every message of a send."""
    return _b64(url.encode())


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, key: str) -> None:
        if len(key.encode()) < 32:
            raise ValueError("tracking signing key must be at least 32 bytes")
        self._key = key.encode()

    def _mac(self, kind: str, message_id: str, url: str) -> str:
        msg = f"pm-track-v1\n{kind}\n{message_id}\n{url}".encode()
        # One-shot HMAC (OpenSSL's, no HMAC object): three tokens per message sent.
        return _b64(hmac.digest(self._key, msg, hashlib.sha256)[:_MAC_BYTES])

    def sign(self, token: TrackingToken) -> str:
        url = token.url or ""
        return ".".join(
            [
                token.kind,
                token.message_id,
                _url_b64(url),
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


class TrackingThrottle:
    """Which tracking hits become events (Redis; the response is the same either way).

    - Per (token, client address) and per client address, at most `per_token` /
      `per_address` recorded hits per `window_seconds`: a script hammering links cannot
      flood the timeline, the outbox and customers' webhooks.
    - Opens are coalesced: one `email.opened` per message per `open_window_seconds`
      (mail clients and proxies fetch the pixel repeatedly).
    """

    def __init__(
        self,
        redis: Any,
        *,
        per_token: int,
        per_address: int,
        window_seconds: int,
        open_window_seconds: int,
    ) -> None:
        self.redis = redis
        self.per_token = per_token
        self.per_address = per_address
        self.window = window_seconds
        self.open_window = open_window_seconds

    async def admit(self, kind: Kind, token: str, message_id: str, address: str | None) -> bool:
        where = address or "-"
        digest = hashlib.sha256(token.encode()).hexdigest()[:32]
        token_key = f"pm:delivery:track:rate:t:{digest}:{where}"
        address_key = f"pm:delivery:track:rate:a:{where}"
        pipe = self.redis.pipeline(transaction=False)
        for key in (token_key, address_key):
            pipe.set(key, 0, nx=True, ex=self.window)  # a fixed window from the first hit
            pipe.incr(key)
        _, by_token, _, by_address = await pipe.execute()
        if by_token > self.per_token or by_address > self.per_address:
            return False
        if kind == "o" and self.open_window > 0:
            first = await self.redis.set(
                f"pm:delivery:track:open:{message_id}", 1, nx=True, ex=self.open_window
            )
            return bool(first)
        return True
