"""Request and response models of `/api/v1/domains`."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from libs.common.emails import Email

# What `records.normalize_domain` accepts in ASCII, for the spec (IDN names in Unicode pass
# that check too, but no pattern can tell which Unicode labels IDNA admits; the check stays
# the enforcement): LDH labels of 1-63 characters, none with hyphens in the 3rd and 4th
# positions (IDNA reserves them for `xn--`), a top-level label not all digits, an optional
# trailing dot. Found by the contract fuzz: a schema-valid "Acme Inc." answered 422.
_LABEL = r"(?![A-Za-z0-9]{2}--)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DOMAIN_NAME_PATTERN = rf"^(?:{_LABEL}\.)+(?![0-9]+\.?$){_LABEL}\.?$"

# What an HTTP header carries as a bearer token (RFC 9110 visible characters, no spaces).
_HEADER_SAFE = r"^[!-~]+$"

# No control characters (CR/LF would reach the From header).
_DISPLAY_NAME = r"^[^\x00-\x1f\x7f]*$"


class CreateDomainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=253,
        description="The domain to send from, e.g. `mail.example.com`: two or more labels of "
        "letters, digits and inner hyphens, a top-level label that is not all digits (the "
        "pattern states the ASCII form). IDN names are accepted too, in Unicode or punycode "
        "(UTS 46, IDNA 2008), and stored as punycode.",
        examples=["mail.example.com"],
        json_schema_extra={"pattern": DOMAIN_NAME_PATTERN},
    )


class UpdateDomainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_from: Email | None = Field(
        default=None, description="Default sender at this domain; null clears it."
    )
    default_from_name: str | None = Field(default=None, max_length=200, pattern=_DISPLAY_NAME)


class DnsCredentialsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Literal["cloudflare"] = "cloudflare"
    api_token: SecretStr = Field(
        min_length=20,
        max_length=200,
        description="A Cloudflare API token with Zone.DNS edit permission: visible ASCII "
        "characters, as a bearer token in an HTTP header must be. Stored in Vault; never "
        "returned.",
        json_schema_extra={"pattern": _HEADER_SAFE},
    )

    @field_validator("api_token")
    @classmethod
    def _header_safe(cls, value: SecretStr) -> SecretStr:
        # Found by the contract fuzz: a token with other characters was stored, and publishing
        # failed with a 500 when the HTTP client could not encode it.
        if not re.fullmatch(_HEADER_SAFE, value.get_secret_value()):
            raise ValueError("an API token has visible ASCII characters only (no spaces)")
        return value


class DnsRecord(BaseModel):
    purpose: Literal["dkim", "dkim_next", "spf", "dmarc", "return_path", "tracking"]
    type: Literal["TXT", "CNAME"]
    host: str
    value: str
    required: bool = Field(description="Required for the domain to be verified.")
    status: Literal["pending", "verified", "failed"]


class Domain(BaseModel):
    id: str
    name: str = Field(description="ASCII (punycode) form.")
    unicode_name: str
    status: Literal["pending", "verified", "failed"]
    dkim_selector: str
    dkim_next_selector: str | None = None
    default_from: str | None = None
    default_from_name: str | None = None
    records: list[DnsRecord]
    created_at: datetime
    verified_at: datetime | None = None
    last_checked_at: datetime | None = None
    next_check_at: datetime


class PublishedRecord(BaseModel):
    purpose: str
    host: str
    outcome: Literal["created", "updated", "unchanged"]


class PublishResult(BaseModel):
    domain: Domain
    published: list[PublishedRecord]
