"""Ed25519 signing keys of the platform's tokens (principals, dashboard access tokens), as
they travel in settings and Vault.

A private key is written `<kid>:<base64url 32-byte seed>`; a verifier's key set is one or
more public keys `<kid>:<base64url 32-byte key>` separated by commas. The token header names
the `kid` that signed it, so a verifier holding two public keys accepts tokens of both during
a rotation (docs/authentication.md, "Rotating signing keys").

The built-in development keys below are derived from fixed labels (anyone can compute them);
settings refuse them unless `PM_ENVIRONMENT` is `dev` or `test`.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "DEV_PRINCIPAL_PRIVATE_KEY",
    "DEV_PRINCIPAL_PUBLIC_KEYS",
    "DEV_USER_TOKEN_PRIVATE_KEY",
    "DEV_USER_TOKEN_PUBLIC_KEYS",
    "PrivateSigningKey",
    "generate_private_key",
    "is_builtin_key",
    "load_private_key",
    "load_public_keys",
    "public_keys_of",
]

_KID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class PrivateSigningKey:
    kid: str
    key: Ed25519PrivateKey


def _split(entry: str) -> tuple[str, bytes]:
    kid, sep, material = entry.strip().partition(":")
    if not sep or not _KID.match(kid):
        raise ValueError("a signing key is written '<kid>:<base64url key>'")
    try:
        raw = _unb64(material.strip())
    except ValueError as exc:
        raise ValueError(f"signing key {kid!r} is not base64url") from exc
    if len(raw) != 32:
        raise ValueError(f"signing key {kid!r} must be 32 bytes (Ed25519)")
    return kid, raw


@lru_cache(maxsize=16)
def load_private_key(text: str) -> PrivateSigningKey:
    """Parse `<kid>:<seed>` (cached: settings hand the same string on every request)."""
    kid, seed = _split(text)
    return PrivateSigningKey(kid, Ed25519PrivateKey.from_private_bytes(seed))


@lru_cache(maxsize=16)
def load_public_keys(text: str) -> dict[str, Ed25519PublicKey]:
    """Parse `<kid>:<key>[,<kid>:<key>...]` into kid -> public key."""
    keys: dict[str, Ed25519PublicKey] = {}
    for entry in text.split(","):
        if not entry.strip():
            continue
        kid, raw = _split(entry)
        if kid in keys:
            raise ValueError(f"public key id {kid!r} appears twice")
        keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
    if not keys:
        raise ValueError("no public key configured")
    return keys


def public_keys_of(private_text: str) -> str:
    """The public half of a private key, in the key-set format."""
    private = load_private_key(private_text)
    raw = private.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return f"{private.kid}:{_b64(raw)}"


def generate_private_key(kid: str | None = None) -> str:
    """A fresh random private key, `<kid>:<seed>`; kid defaults to a random `k<hex>`."""
    kid = kid or f"k{secrets.token_hex(4)}"
    if not _KID.match(kid):
        raise ValueError(f"invalid key id {kid!r}")
    return f"{kid}:{_b64(secrets.token_bytes(32))}"


def _dev_key(label: str) -> str:
    return f"dev:{_b64(hashlib.sha256(label.encode()).digest())}"


DEV_PRINCIPAL_PRIVATE_KEY = _dev_key("penguinmails development principal key (public!)")
DEV_PRINCIPAL_PUBLIC_KEYS = public_keys_of(DEV_PRINCIPAL_PRIVATE_KEY)
DEV_USER_TOKEN_PRIVATE_KEY = _dev_key("penguinmails development access-token key (public!)")
DEV_USER_TOKEN_PUBLIC_KEYS = public_keys_of(DEV_USER_TOKEN_PRIVATE_KEY)

_BUILTIN_PUBLIC = {
    DEV_PRINCIPAL_PUBLIC_KEYS.split(":", 1)[1],
    DEV_USER_TOKEN_PUBLIC_KEYS.split(":", 1)[1],
}


def is_builtin_key(text: str) -> bool:
    """True if `text` (a private key or a public key set) contains a built-in dev key."""
    if not text:
        return False
    if text in (DEV_PRINCIPAL_PRIVATE_KEY, DEV_USER_TOKEN_PRIVATE_KEY):
        return True
    for entry in text.split(","):
        _, _, material = entry.strip().partition(":")
        if material.strip() in _BUILTIN_PUBLIC:
            return True
    return False


if __name__ == "__main__":
    # `python -m libs.common.signing_keys [kid]`: a new key pair for a rotation.
    import sys

    private_text = generate_private_key(sys.argv[1] if len(sys.argv) > 1 else None)
    sys.stdout.write(f"private_key={private_text}\npublic_key={public_keys_of(private_text)}\n")
