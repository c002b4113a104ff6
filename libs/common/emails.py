"""Email addresses: one validation rule for every service, fast enough for 50,000-row imports.

The rule is email-validator's in strict mode: what pydantic's `EmailStr` applies (RFC 5322
dot-atom local parts, internationalised (IDNA) domains normalised to Unicode and lower case,
special-use and reserved domains such as `.test`, `.local` and `localhost` refused, no IP
literals, no quoted local parts), plus RFC 5321's 64-octet limit on the local part, which
mail servers may enforce. Deliverability (DNS) is never checked: a send finds out.

email-validator costs ~28 µs an address, most of it on the domain, and a bulk send or an
import repeats a few hundred domains over thousands of addresses. So the common case (an
ASCII dot-atom local part) checks the local part with a regex and validates the domain
through email-validator once per distinct domain (cached); anything else (Unicode local
parts, display names, surrounding spaces, lengths near the limits, invalid input) goes
through email-validator whole, so errors read the same. A test asserts both paths agree.
"""

from __future__ import annotations

import re
import unicodedata
from email.utils import formataddr
from functools import lru_cache
from typing import Annotated

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from pydantic import AfterValidator, WithJsonSchema
from pydantic.networks import validate_email as pydantic_validate_email
from pydantic_core import PydanticCustomError

__all__ = [
    "EMAIL_SCHEMA",
    "Email",
    "InvalidEmail",
    "check_display_name",
    "format_address",
    "normalize_email",
]


def _any_case(name: str) -> str:
    return "".join(f"[{c}{c.upper()}]" if c.isalpha() else re.escape(c) for c in name)


# The JSON schema of an address: `format: email` admits the special-use domains (RFC 6761:
# `.test`, `.local`, `localhost`, ...) that the rule refuses, so the spec says so too (`not`
# a pattern; an ECMA pattern has no case-insensitive flag, hence the classes). Found by the
# contract fuzz: a schema-valid `x@y.test` answered 422.
EMAIL_SCHEMA: dict[str, object] = {
    "type": "string",
    "format": "email",
    "not": {"pattern": f"[.@]({'|'.join(_any_case(n) for n in SPECIAL_USE_DOMAIN_NAMES)})$"},
}

# RFC 5322 dot-atom of `atext` characters: what email-validator accepts unquoted in ASCII.
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_MAX_LOCAL = 64
_MAX_ADDRESS = 254


class InvalidEmail(ValueError):
    """Not an address we accept; the message is email-validator's reason."""


@lru_cache(maxsize=16384)
def _domain(domain: str) -> str | None:
    """The normalised domain, or None when email-validator refuses it."""
    try:
        return str(validate_email("a@" + domain, check_deliverability=False).domain)
    except EmailNotValidError:
        return None


def _fast(value: str) -> str | None:
    """The normalised address by the fast path, or None when only the full check can tell."""
    local, at, domain = value.rpartition("@")
    if not at or len(local) > _MAX_LOCAL or len(value) > _MAX_ADDRESS:
        return None
    if not _DOT_ATOM.fullmatch(local):
        return None
    normal_domain = _domain(domain)
    if normal_domain is None:
        return None
    address = f"{local}@{normal_domain}"
    return address if len(address.encode()) <= _MAX_ADDRESS else None


def normalize_email(value: str) -> str:
    """The address as email-validator normalises it (domain in lower-case Unicode, local part
    as given); raises `InvalidEmail` with the reason."""
    fast = _fast(value)
    if fast is not None:
        return fast
    try:
        return str(validate_email(value, check_deliverability=False, strict=True).normalized)
    except EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from exc


def _pydantic_email(value: str) -> str:
    fast = _fast(value)
    if fast is not None:
        return fast
    # pydantic's own check (display names, trimming, its error type and wording), then ours
    # for the local-part limit (idempotent on what pydantic normalised).
    address = pydantic_validate_email(value)[1]
    try:
        return normalize_email(address)
    except InvalidEmail as exc:
        raise PydanticCustomError(
            "value_error", "value is not a valid email address: {reason}", {"reason": str(exc)}
        ) from exc


# Drop-in for pydantic's `EmailStr` (same normalised value and errors; the JSON schema also
# states the refused special-use domains) that also refuses local parts over 64 octets; the
# common case takes the fast path.
Email = Annotated[
    str,
    AfterValidator(_pydantic_email),
    WithJsonSchema(EMAIL_SCHEMA),
]


def check_display_name(value: str | None) -> str | None:
    """A sender's display name (`from_name`): refused when it holds control characters or
    line breaks (CR/LF would inject headers and break SMTP batches)."""
    if value is not None and any(unicodedata.category(c) in _CONTROL for c in value):
        raise ValueError("may not contain control characters or line breaks")
    return value


def format_address(name: str | None, address: str) -> str:
    """`Name <address>` per RFC 5322 (`email.utils.formataddr`: specials quoted, non-ASCII
    names RFC 2047-encoded), with any control character in the name made a space."""
    clean = "".join(" " if unicodedata.category(c) in _CONTROL else c for c in name or "")
    return formataddr((" ".join(clean.split()), address))


# Cc: C0/C1 controls (CR, LF, NUL, ...); Zl/Zp: Unicode line and paragraph separators.
_CONTROL = frozenset({"Cc", "Zl", "Zp"})
