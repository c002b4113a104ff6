"""Verify a PenguinMails webhook (Standard Webhooks) with the standard library only.

`secret` is the endpoint's secret as you chose or received it: a `whsec_...` secret's key is
the base64 after the prefix, any other secret's key is its UTF-8 bytes."""

import base64
import hashlib
import hmac
import time


def verify_webhook(
    secret: str, headers: dict[str, str], raw_body: bytes, tolerance: int = 300
) -> bool:
    msg_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not (msg_id and timestamp and signatures and timestamp.isdigit()):
        return False
    if abs(time.time() - int(timestamp)) > tolerance:  # replay
        return False
    if secret.startswith("whsec_"):
        key = base64.b64decode(secret.removeprefix("whsec_"))
    else:
        key = secret.encode()
    signed = f"{msg_id}.{timestamp}.".encode() + raw_body  # the raw bytes as received
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        version == "v1" and hmac.compare_digest(value, expected)
        for version, _, value in (entry.partition(",") for entry in signatures.split(" "))
    )
