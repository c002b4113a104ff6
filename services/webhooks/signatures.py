"""Webhook signing secrets and signatures: Standard Webhooks and the seed's legacy header.

A secret has one of two forms. `whsec_` + base64 (the Standard Webhooks format; generated
secrets are 24 random bytes): the HMAC key is the decoded bytes. Any other printable string
of 16 to 128 characters (the seed's `"your-webhook-secret"`): the HMAC key is its UTF-8 bytes.
Each request carries `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64
HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one `v1,` entry per active secret, and
`X-PenguinMails-Signature: sha256=<hex HMAC-SHA256 of the body>` (the seed's verification
example). A raw secret keys both headers with its UTF-8 bytes; a `whsec_` secret keys the
legacy header with the whole secret string, as before raw secrets existed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 (a format prefix, not a secret)
SECRET_BYTES = 24
_MIN_SECRET_BYTES = 24
_MAX_SECRET_BYTES = 64
RAW_SECRET_MIN, RAW_SECRET_MAX = 16, 128


class InvalidSecret(ValueError):
    """A supplied secret is neither `whsec_<base64 of 24 to 64 bytes>` nor a printable string
    of 16 to 128 characters."""


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret; raises `InvalidSecret` when malformed."""
    if not secret.startswith(SECRET_PREFIX):
        if not RAW_SECRET_MIN <= len(secret) <= RAW_SECRET_MAX:
            raise InvalidSecret(
                f"a secret without the 'whsec_' prefix must be {RAW_SECRET_MIN} to"
                f" {RAW_SECRET_MAX} characters"
            )
        if not secret.isprintable() or secret != secret.strip():
            raise InvalidSecret(
                "the secret must be printable characters without leading or trailing spaces"
            )
        return secret.encode()
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecret("the part after 'whsec_' must be base64") from exc
    if not _MIN_SECRET_BYTES <= len(key) <= _MAX_SECRET_BYTES:
        raise InvalidSecret(
            f"the secret must encode {_MIN_SECRET_BYTES} to {_MAX_SECRET_BYTES} bytes"
        )
    return key


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def legacy_signature(secret: str, body: bytes) -> str:
    # The whole secret string as shown: for a raw secret that is exactly its key.
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_headers(
    secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Headers for one request; `secrets_` are the active secrets, newest first. During a
    rotation both signatures travel, space-separated, as Standard Webhooks specifies."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            standard_signature(s, msg_id, timestamp, body) for s in secrets_
        ),
        "X-PenguinMails-Signature": " ".join(legacy_signature(s, body) for s in secrets_),
    }
