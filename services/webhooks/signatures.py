"""Webhook signing secrets and signatures: Standard Webhooks and the seed's legacy header.

A secret is `whsec_` + base64 of 24 random bytes (the Standard Webhooks format). Each request
carries `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">` keyed with the decoded secret bytes, one `v1,` entry per active
secret, and `X-PenguinMails-Signature: sha256=<hex HMAC-SHA256 of the body>` keyed with the
secret string as shown to the customer (the seed's verification example).
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


class InvalidSecret(ValueError):
    """A supplied secret is not `whsec_<base64 of 24 to 64 bytes>`."""


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_` secret; raises `InvalidSecret` when malformed."""
    if not secret.startswith(SECRET_PREFIX):
        raise InvalidSecret("the secret must start with 'whsec_'")
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
