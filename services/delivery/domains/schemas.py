"""Request and response models of `/api/v1/domains`."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, SecretStr

# No control characters (CR/LF would reach the From header).
_DISPLAY_NAME = r"^[^\x00-\x1f\x7f]*$"


class CreateDomainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=253,
        description="The domain to send from, e.g. `mail.example.com`. IDN names are accepted "
        "in Unicode or punycode and stored as punycode.",
        examples=["mail.example.com"],
    )


class UpdateDomainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_from: EmailStr | None = Field(
        default=None, description="Default sender at this domain; null clears it."
    )
    default_from_name: str | None = Field(default=None, max_length=200, pattern=_DISPLAY_NAME)


class DnsCredentialsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Literal["cloudflare"] = "cloudflare"
    api_token: SecretStr = Field(
        min_length=20,
        max_length=200,
        description="A Cloudflare API token with Zone.DNS edit permission. Stored in Vault; "
        "never returned.",
    )


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
