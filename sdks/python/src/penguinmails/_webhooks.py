"""Standard Webhooks verification (`webhook-id`, `webhook-timestamp`, `webhook-signature`)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from ._errors import WebhookVerificationError

WebhookHeaders = Mapping[str, str]


def secret_key(secret: str) -> bytes:
    """`whsec_<base64>` decoded, or a raw printable secret (16-128 chars) as UTF-8 bytes."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise WebhookVerificationError("Bad whsec_ secret", code="invalid_secret") from exc
    if not 16 <= len(secret) <= 128 or not all(0x21 <= ord(c) <= 0x7E for c in secret):
        raise WebhookVerificationError(
            "A raw secret is 16-128 printable characters", code="invalid_secret"
        )
    return secret.encode()


def sign_webhook(msg_id: str, timestamp: int, payload: str | bytes, secret: str) -> str:
    """The `v1,<base64>` signature of `{id}.{timestamp}.{payload}`."""
    body = payload.encode() if isinstance(payload, str) else payload
    mac = hmac.new(secret_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def webhook_headers(msg_id: str, payload: str | bytes, secret: str) -> dict[str, str]:
    """The headers PenguinMails signs a delivery with, stamped now: Standard Webhooks
    (`webhook-id`, `webhook-timestamp`, `webhook-signature`) and the legacy
    `X-PenguinMails-Signature: sha256=<hex HMAC of the body keyed by the secret string>`."""
    body = payload.encode() if isinstance(payload, str) else payload
    timestamp = int(time.time())
    legacy = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign_webhook(msg_id, timestamp, body, secret),
        "X-PenguinMails-Signature": f"sha256={legacy}",
    }


def _header(headers: WebhookHeaders, name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def verify_webhook(
    payload: str | bytes, headers: WebhookHeaders, secret: str, tolerance: int = 300
) -> Any:
    """Verify a delivery (pass the raw body as received) and return its parsed JSON payload."""
    msg_id = _header(headers, "webhook-id")
    ts = _header(headers, "webhook-timestamp")
    signatures = _header(headers, "webhook-signature")
    if not msg_id or not ts or not signatures:
        raise WebhookVerificationError(
            "Missing webhook-id, webhook-timestamp or webhook-signature", code="missing_headers"
        )
    try:
        timestamp = int(ts)
    except ValueError as exc:
        raise WebhookVerificationError("Bad webhook-timestamp", code="bad_timestamp") from exc
    if abs(time.time() - timestamp) > tolerance:
        raise WebhookVerificationError(
            "webhook-timestamp outside the tolerance", code="timestamp_out_of_range"
        )
    expected = sign_webhook(msg_id, timestamp, payload, secret).split(",", 1)[1]
    for part in signatures.split(" "):
        version, _, sig = part.partition(",")
        if version == "v1" and hmac.compare_digest(sig.encode(), expected.encode()):
            return json.loads(payload)
    raise WebhookVerificationError("No matching signature", code="bad_signature")
