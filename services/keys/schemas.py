"""Request and response models of the keys service's public and internal routes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from libs.common.emails import Email
from libs.common.http import ResponseModel
from libs.common.plans import PLAN_NAMES, PlanName
from libs.common.principal import SCOPES, Scope

# Plans a tenant can be put on (libs/common/plans.py); `unlimited` only by the admin command.
Plan = PlanName
PLANS: tuple[str, ...] = PLAN_NAMES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# bcrypt reads 72 bytes: a longer password is refused (JSON Schema counts characters only).
_BCRYPT_LIMIT_NOTE = "At most 72 bytes in UTF-8 (bcrypt's limit), e.g. 18 four-byte characters."


class SignupRequest(_Strict):
    email: Email
    password: str = Field(min_length=12, max_length=72, description=_BCRYPT_LIMIT_NOTE)
    company: str = Field(min_length=1, max_length=200)


class LoginRequest(_Strict):
    email: Email
    password: str = Field(min_length=1, max_length=72, description=_BCRYPT_LIMIT_NOTE)


class RefreshRequest(_Strict):
    refresh_token: str = Field(min_length=1, max_length=200)


class TokenPair(ResponseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105
    expires_in: int
    # None when the request asked for the cookie transport (the token is in the cookie).
    refresh_token: str | None


class UserOut(ResponseModel):
    id: str
    email: str
    role: str


class TenantOut(ResponseModel):
    id: str
    name: str
    plan: str


class SessionOut(TokenPair):
    user: UserOut
    tenant: TenantOut


class CreateApiKeyRequest(_Strict):
    name: str = Field(min_length=1, max_length=100)
    scopes: list[Scope] = Field(min_length=1)
    mode: Literal["live", "test"] = "live"
    expires_at: datetime | None = None

    @field_validator("scopes")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return sorted(set(value), key=SCOPES.index)

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("expires_at needs a timezone (e.g. 2026-01-01T00:00:00Z)")
        return value


class RegenerateApiKeyRequest(_Strict):
    # How long the replaced secret keeps working; 0 = it stops at once. At most 7 days.
    grace_period_seconds: int = Field(default=0, ge=0, le=7 * 24 * 3600, strict=True)


class ApiKeyOut(ResponseModel):
    id: str
    name: str
    mode: str
    masked_key: str
    lookup_id: str
    last4: str
    scopes: list[str]
    status: Literal["active", "revoked", "expired"]
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    regenerated_at: datetime | None
    previous_valid_until: datetime | None
    usage: ApiKeyUsageTotals


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The full key. Shown once: store it now.")


class ApiKeyUsageTotals(ResponseModel):
    request_count: int
    error_count: int
    last_used_at: datetime | None


class UsageBucket(ResponseModel):
    # The bucket's start, whatever the granularity (the field kept its first name).
    minute: datetime
    requests: int
    errors: int


class ApiKeyUsage(ResponseModel):
    model_config = ConfigDict(populate_by_name=True)

    key_id: str
    from_: datetime = Field(alias="from")
    to: datetime
    granularity: Literal["minute", "hour", "day"]
    totals: ApiKeyUsageTotals
    buckets: list[UsageBucket]


class LoggedOut(ResponseModel):
    logged_out: Literal[True] = True


class VerifyRequest(_Strict):
    key: str = Field(min_length=1, max_length=100)


class VerifiedKey(BaseModel):
    key_id: str
    tenant_id: str
    lookup_id: str
    scopes: list[str]
    mode: Literal["live", "test"]
    plan: str
    valid_until: datetime | None
    # Dashboard role of the user who created the key (routes may require owner/admin).
    role: str | None = None


class PlanChangeRequest(_Strict):
    plan: Plan
    reason: str | None = Field(default=None, max_length=200)
