"""Webhook signing secrets and signatures: Standard Webhooks and the seed's legacy header.

A secret has one of two forms. `whsec_` + base64 (the Standard Webhooks format; generated
secrets are 24 random bytes): the HMAC key is the decoded bytes. Any other printable string
of 16 to 128 characters (the seed's `"your-webhook-secret"`): the HMAC key is its UTF-8 bytes.
"Printable" is stated as patterns the OpenAPI spec carries and the code matches alike
(`SECRET_JSON_SCHEMA`): no control character (U+0000-001F, U+007F-009F) and no whitespace
at either end. A Unicode-category rule (`str.isprintable`) cannot be written as a pattern
that every tool reads the same way (the contract fuzz sent such secrets and got 422).
Each request carries `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64
HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one `v1,` entry per active secret, and
`X-PenguinMails-Signature: sha256=<hex HMAC-SHA256 of the body>` (the seed's verification
example). A raw secret keys both headers with its UTF-8 bytes; a `whsec_` secret keys the
legacy header with the whole secret string, as before raw secrets existed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"  # noqa: S105 (a format prefix, not a secret)
SECRET_BYTES = 24
_MIN_SECRET_BYTES = 24
_MAX_SECRET_BYTES = 64
RAW_SECRET_MIN, RAW_SECRET_MAX = 16, 128

# Base64 of 24 to 64 bytes with its padding: 8 to 20 groups of four and an optional
# one- or two-byte tail (24-62 bytes), or 21 groups (63) and an optional one-byte tail (64).
_B64 = "[A-Za-z0-9+/]"
_TAIL = f"{_B64}{{2}}==|{_B64}{{3}}="
_QUAD = f"{_B64}{{4}}"
_WHSEC_BODY = f"whsec_(?:(?:{_QUAD}){{8,20}}(?:{_TAIL})?|(?:{_QUAD}){{21}}(?:{_B64}{{2}}==)?)"
# Whitespace as `str.strip` knows it, plus every control character, at either end.
_EDGE = (
    r"[^\u0000-\u0020\u007f-\u00a0\u1680\u2000-\u200a"
    r"\u2028\u2029\u202f\u205f\u3000]"
)
_INNER = r"[^\u0000-\u001f\u007f-\u009f]"
_RAW_BODY = f"{_EDGE}{_INNER}{{{RAW_SECRET_MIN - 2},{RAW_SECRET_MAX - 2}}}{_EDGE}"
# One pattern (not `anyOf`, which SDK generators turn into a union of untyped values).
SECRET_JSON_SCHEMA: dict[str, object] = {
    "type": "string",
    "format": "password",
    "writeOnly": True,
    "pattern": f"^(?:{_WHSEC_BODY}|(?!whsec_){_RAW_BODY})$",
}
_WHSEC = re.compile(_WHSEC_BODY)
_RAW = re.compile(_RAW_BODY)


class InvalidSecret(ValueError):
    """A supplied secret is neither `whsec_<base64 of 24 to 64 bytes>` nor a printable string
    of 16 to 128 characters."""


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret; raises `InvalidSecret` when malformed."""
    if secret.startswith(SECRET_PREFIX):
        if not _WHSEC.fullmatch(secret):
            raise InvalidSecret(
                f"the part after 'whsec_' must be base64 of {_MIN_SECRET_BYTES} to"
                f" {_MAX_SECRET_BYTES} bytes"
            )
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    if not RAW_SECRET_MIN <= len(secret) <= RAW_SECRET_MAX:
        raise InvalidSecret(
            f"a secret without the 'whsec_' prefix must be {RAW_SECRET_MIN} to"
            f" {RAW_SECRET_MAX} characters"
        )
    if not _RAW.fullmatch(secret):
        raise InvalidSecret(
            "the secret must be printable: no control characters, no whitespace at either end"
        )
    return secret.encode()


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
