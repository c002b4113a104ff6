"""The API key format shared by the keys service (which mints keys) and the gateway (which
parses them before any lookup).

A key is `pm_live_` or `pm_test_` followed by 32 base62 characters, GitHub-token style:

    pm_live_ 7KfD2aQx 9mWc0Lr4Tz8bNq1YhJ 3fK9aZ
             lookup   secret (18 chars)  checksum (CRC32 of the rest, base62)

- the lookup id (8 chars) is public: it finds the key's row without scanning hashes and is
  what throttling of bad secrets counts per;
- the secret (18 chars, ~107 bits) never leaves the create/regenerate response;
- the checksum rejects mistyped or truncated keys offline, before Postgres or Vault.
"""

from __future__ import annotations

import secrets
import zlib
from dataclasses import dataclass

from libs.common.tenancy import Mode

__all__ = [
    "ALPHABET",
    "BODY_LENGTH",
    "KEY_PREFIXES",
    "LOOKUP_LENGTH",
    "ApiKeyFormatError",
    "ParsedApiKey",
    "generate_api_key",
    "looks_like_api_key",
    "mask_api_key",
    "parse_api_key",
]

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ALPHABET_SET = frozenset(ALPHABET)
LOOKUP_LENGTH = 8
SECRET_LENGTH = 18
CHECKSUM_LENGTH = 6
BODY_LENGTH = LOOKUP_LENGTH + SECRET_LENGTH + CHECKSUM_LENGTH  # 32
KEY_PREFIXES: dict[Mode, str] = {"live": "pm_live_", "test": "pm_test_"}
_PREFIX_LENGTH = 8


class ApiKeyFormatError(ValueError):
    """The string is not a well-formed PenguinMails API key (wrong prefix, length, alphabet
    or checksum)."""


@dataclass(frozen=True)
class ParsedApiKey:
    mode: Mode
    lookup_id: str
    raw: str

    @property
    def last4(self) -> str:
        return self.raw[-4:]

    def __repr__(self) -> str:  # never print the secret, even in a traceback
        return f"ParsedApiKey(mode={self.mode!r}, lookup_id={self.lookup_id!r})"


def _random_chars(n: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def _checksum(text: str) -> str:
    value = zlib.crc32(text.encode("ascii"))
    out = []
    for _ in range(CHECKSUM_LENGTH):
        value, digit = divmod(value, 62)
        out.append(ALPHABET[digit])
    return "".join(reversed(out))


def generate_api_key(mode: Mode, lookup_id: str | None = None) -> ParsedApiKey:
    """A new random key; pass `lookup_id` only to keep an existing one (tests)."""
    lookup = lookup_id or _random_chars(LOOKUP_LENGTH)
    if len(lookup) != LOOKUP_LENGTH or not set(lookup) <= _ALPHABET_SET:
        raise ValueError("lookup id must be 8 base62 characters")
    head = KEY_PREFIXES[mode] + lookup + _random_chars(SECRET_LENGTH)
    return ParsedApiKey(mode=mode, lookup_id=lookup, raw=head + _checksum(head))


def looks_like_api_key(token: str) -> bool:
    """True when `token` starts like one of our keys (a JWT never does)."""
    return token.startswith(("pm_live_", "pm_test_"))


def parse_api_key(token: str) -> ParsedApiKey:
    """Check prefix, length, alphabet and checksum; raises `ApiKeyFormatError`."""
    if len(token) != _PREFIX_LENGTH + BODY_LENGTH:
        raise ApiKeyFormatError("API key has the wrong length")
    prefix, body = token[:_PREFIX_LENGTH], token[_PREFIX_LENGTH:]
    mode: Mode
    if prefix == KEY_PREFIXES["live"]:
        mode = "live"
    elif prefix == KEY_PREFIXES["test"]:
        mode = "test"
    else:
        raise ApiKeyFormatError("API key has an unknown prefix")
    if not set(body) <= _ALPHABET_SET:
        raise ApiKeyFormatError("API key contains characters outside base62")
    head, check = token[:-CHECKSUM_LENGTH], token[-CHECKSUM_LENGTH:]
    if not secrets.compare_digest(_checksum(head), check):
        raise ApiKeyFormatError("API key checksum does not match (mistyped or truncated?)")
    return ParsedApiKey(mode=mode, lookup_id=body[:LOOKUP_LENGTH], raw=token)


def mask_api_key(mode: Mode, lookup_id: str, last4: str) -> str:
    """What lists show: prefix, public lookup id and the last four characters."""
    return f"{KEY_PREFIXES[mode]}{lookup_id}{'*' * (SECRET_LENGTH + CHECKSUM_LENGTH - 4)}{last4}"
