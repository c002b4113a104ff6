"""DKIM keys: RSA 2048 pairs with dated selectors, and signing with dkimpy.

The private key (PEM) is handed to Vault by the service and never stored elsewhere; the
public key is published as the DKIM TXT record.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

import dkim as dkimpy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# Signed headers (RFC 6376 §5.4.1 recommendations; From is mandatory).
SIGNED_HEADERS = [
    b"from",
    b"to",
    b"subject",
    b"date",
    b"message-id",
    b"reply-to",
    b"mime-version",
    b"content-type",
    b"list-unsubscribe",
    b"list-unsubscribe-post",
]


@dataclass(frozen=True)
class DkimKeyPair:
    selector: str
    private_pem: str
    public_b64: str


def new_selector(now: datetime | None = None) -> str:
    """`pm<yyyymmdd><4 hex>`: dated, so a rotation publishes a visibly newer selector."""
    day = (now or datetime.now(UTC)).strftime("%Y%m%d")
    return f"pm{day}{secrets.token_hex(2)}"


def generate_key_pair(now: datetime | None = None) -> DkimKeyPair:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public_der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DkimKeyPair(new_selector(now), private_pem, base64.b64encode(public_der).decode())


@dataclass(frozen=True)
class DkimSigner:
    """What a connector needs to sign a message of one domain."""

    domain: str
    selector: str
    private_pem: str

    def sign(self, message: bytes) -> bytes:
        """The message with its `DKIM-Signature` header prepended (relaxed/relaxed)."""
        present = {
            line.split(b":", 1)[0].strip().lower()
            for line in message.split(b"\r\n\r\n", 1)[0].replace(b"\r\n", b"\n").split(b"\n")
            if b":" in line and not line[:1].isspace()
        }
        headers = [h for h in SIGNED_HEADERS if h in present]
        signature = dkimpy.sign(
            message,
            self.selector.encode(),
            self.domain.encode(),
            self.private_pem.encode(),
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=headers,
        )
        return bytes(signature) + message
