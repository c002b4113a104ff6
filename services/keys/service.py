"""Domain logic of the keys service: tenants and plans, dashboard users (signup, login,
refresh, logout), API keys (mint, list, regenerate, revoke, verify) and key usage.

API key secrets are shown once and never stored: Vault keeps their bcrypt hash at
`api_keys/{tenant_id}/{key_id}`, Postgres the metadata. Writes that must reach Vault and
Postgres go Vault first, so a crash in between leaves an unusable orphan hash, never a key
row without its hash. Facts (`api_key.*`, `tenant.*`) leave through the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

import asyncpg
import bcrypt
import jwt
import redis.asyncio as aioredis
import uuid_utils
from redis.exceptions import RedisError

from libs.common import outbox
from libs.common.apikeys import ApiKeyFormatError, generate_api_key, mask_api_key, parse_api_key
from libs.common.client_address import address_bucket
from libs.common.events import (
    ApiKeyCreated,
    ApiKeyRegenerated,
    ApiKeyRevoked,
    TenantCreated,
    TenantPlanChanged,
    make_event,
)
from libs.common.http import (
    ApiError,
    Conflict,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
    register_error_code,
)
from libs.common.pagination import ListParams, Page
from libs.common.plans import DEFAULT_PLAN, limits_for
from libs.common.principal import SCOPES, Principal
from libs.common.signing_keys import load_private_key
from libs.common.vault import Vault
from services.keys import repository as repo
from services.keys.schemas import (
    PLANS,
    ApiKeyOut,
    CreateApiKeyRequest,
    SessionOut,
    TenantOut,
    UserOut,
    VerifiedKey,
)
from services.keys.settings import KeysSettings

log = logging.getLogger(__name__)
SOURCE = "/services/keys"
ACCESS_TOKEN_ISSUER = "pm-keys"  # noqa: S105
ACCESS_TOKEN_AUDIENCE = "pm-gateway"  # noqa: S105
REFRESH_PREFIX = "pmr_"

register_error_code("signup_disabled", 403, "Self-service signup is switched off.")
register_error_code("email_taken", 409, "An account with this email already exists.")
register_error_code(
    "api_key_limit_reached",
    409,
    "The tenant already holds as many active API keys as its plan allows (rate-limits.md).",
)
register_error_code("invalid_credentials", 401, "The email or password is wrong.")
register_error_code("login_throttled", 429, "Too many login attempts; wait and retry.")
register_error_code(
    "invalid_refresh_token", 401, "The refresh token is unknown, expired or revoked."
)
register_error_code(
    "api_key_invalid", 401, "The API key is malformed, unknown, revoked or expired."
)
register_error_code(
    "user_session_required", 403, "This operation needs a dashboard user session, not an API key."
)
register_error_code("tenant_not_found", 404, "The tenant does not exist.")


class InvalidApiKey(ApiError):
    code = "api_key_invalid"


# Longest `from`..`to` range per usage granularity (bucket counts stay a few thousand).
USAGE_RANGE_DAYS = {"minute": 31, "hour": 93, "day": 366}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid_utils.uuid7().hex}"


def _now() -> datetime:
    return datetime.now(UTC)


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def key_status(row: Any, now: datetime | None = None) -> Literal["active", "revoked", "expired"]:
    now = now or _now()
    if row["revoked_at"] is not None:
        return "revoked"
    if row["expires_at"] is not None and row["expires_at"] <= now:
        return "expired"
    return "active"


def key_out(row: Any) -> dict[str, Any]:
    return ApiKeyOut(
        id=row["id"],
        name=row["name"],
        mode=row["mode"],
        masked_key=mask_api_key(row["mode"], row["lookup_id"], row["last4"]),
        lookup_id=row["lookup_id"],
        last4=row["last4"],
        scopes=list(row["scopes"]),
        status=key_status(row),
        created_by=row["created_by"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        regenerated_at=row["regenerated_at"],
        previous_valid_until=row["previous_valid_until"],
        usage={
            "request_count": row["request_count"],
            "error_count": row["error_count"],
            "last_used_at": row["last_used_at"],
        },
    ).model_dump()


@dataclass
class KeysService:
    settings: KeysSettings
    pool: asyncpg.Pool
    vault: Vault
    redis: aioredis.Redis

    _dummy_hash: bytes | None = None

    # ------------------------------------------------------------ hashing (off the loop)

    async def _hash(self, secret: str) -> str:
        rounds = self.settings.bcrypt_rounds
        hashed = await asyncio.to_thread(bcrypt.hashpw, secret.encode(), bcrypt.gensalt(rounds))
        return hashed.decode()

    async def _check(self, secret: str, hashed: str | bytes) -> bool:
        raw = hashed.encode() if isinstance(hashed, str) else hashed
        try:
            return await asyncio.to_thread(bcrypt.checkpw, secret.encode(), raw)
        except ValueError:
            return False

    async def _burn_like_a_check(self, secret: str) -> None:
        # Unknown email: spend what a real check costs so timing does not reveal accounts.
        if self._dummy_hash is None:
            self._dummy_hash = (await self._hash(secrets.token_urlsafe(16))).encode()
        await self._check(secret, self._dummy_hash)

    def _ns(self, *parts: str) -> str:
        return ":".join((self.settings.redis_namespace, *parts))

    # ------------------------------------------------------------ tenants and users

    async def create_tenant(
        self, email: str, password: str, company: str, plan: str = "starter"
    ) -> tuple[asyncpg.Record, asyncpg.Record]:
        """A tenant and its owner user, plus `tenant.created`, in one transaction."""
        if plan not in PLANS:
            raise ValidationFailed(details=[{"field": "plan", "message": "unknown plan"}])
        _check_password_bytes(password)
        password_hash = await self._hash(password)
        tenant_id, user_id = _new_id("ten"), _new_id("usr")
        async with self.pool.acquire() as conn, conn.transaction():
            if await repo.find_user_by_email(conn, email) is not None:
                raise Conflict("An account with this email already exists.", code="email_taken")
            tenant = await repo.insert_tenant(conn, tenant_id, company, plan)
            try:
                user = await repo.insert_user(
                    conn, user_id, tenant_id, email, password_hash, "owner"
                )
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(
                    "An account with this email already exists.", code="email_taken"
                ) from exc
            await outbox.enqueue(
                conn,
                make_event(
                    TenantCreated(name=company, plan=plan),
                    tenant_id=tenant_id,
                    source=SOURCE,
                    subject=tenant_id,
                ),
            )
        return tenant, user

    async def signup(
        self, email: str, password: str, company: str, client_ip: str
    ) -> dict[str, Any]:
        if not self.settings.signup_enabled:
            raise ApiError("Self-service signup is switched off.", code="signup_disabled")
        await self._count_signup(client_ip)
        tenant, user = await self.create_tenant(email, password, company)
        return await self._open_session(
            user_id=user["id"],
            tenant_id=tenant["id"],
            email=user["email"],
            role=user["role"],
            tenant_name=tenant["name"],
            plan=tenant["plan"],
        )

    async def change_plan(self, tenant_id: str, plan: str, reason: str | None) -> str | None:
        """Admin path: change the plan and publish `tenant.plan_changed` (the gateway and
        billing react to the event). Returns the old plan."""
        if plan not in PLANS:
            raise ValidationFailed(details=[{"field": "plan", "message": "unknown plan"}])
        async with self.pool.acquire() as conn, conn.transaction():
            old = await repo.set_tenant_plan(conn, tenant_id, plan)
            if old is None:
                raise NotFound("The tenant does not exist.", code="tenant_not_found")
            await outbox.enqueue(
                conn,
                make_event(
                    TenantPlanChanged(old_plan=old, new_plan=plan, reason=reason),
                    tenant_id=tenant_id,
                    source=SOURCE,
                    subject=tenant_id,
                ),
            )
        return old

    async def tenant_plan(self, tenant_id: str) -> str:
        tenant = await repo.get_tenant(self.pool, tenant_id)
        if tenant is None:
            raise NotFound("The tenant does not exist.", code="tenant_not_found")
        return str(tenant["plan"])

    # ------------------------------------------------------------ login, refresh, logout

    async def _count_signup(self, client_ip: str) -> None:
        # Signups spend bcrypt CPU and create tenants: a budget per address (IPv6: per /64).
        key = self._ns("signup", "ip", address_bucket(client_ip))
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, self.settings.login_window_seconds, nx=True)
            pipe.ttl(key)
            count, _, ttl = await pipe.execute()
        except RedisError as exc:
            raise ServiceUnavailable("Sign-up is temporarily unavailable.") from exc
        if int(count) > self.settings.signup_max_per_ip:
            raise _throttled(ttl)

    async def login(self, email: str, password: str, client_ip: str) -> dict[str, Any]:
        """Only failures count. Per address (IPv6: per /64): past `login_max_failures_per_ip`
        failures in the window, the address is refused. Per (account, address): after
        `login_max_failures_per_account` failures, each further attempt from that address
        must wait a delay doubling per failure (up to `login_delay_max_seconds`). Nobody can
        lock an account: a stranger's failures slow the stranger's address only."""
        s = self.settings
        window = s.login_window_seconds
        bucket = address_bucket(client_ip)
        account = hashlib.sha256(email.lower().encode()).hexdigest()
        ip_key = self._ns("login", "ipfail", bucket)
        account_key = self._ns("login", "acctfail", account, bucket)
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(ip_key)
            pipe.ttl(ip_key)
            pipe.hmget(account_key, "n", "last")
            ip_failures, ip_ttl, (failures, last) = await pipe.execute()
        except RedisError as exc:
            # Without the counters nothing stops password guessing: refuse rather than guess.
            raise ServiceUnavailable("Login is temporarily unavailable.") from exc
        if int(ip_failures or 0) >= s.login_max_failures_per_ip:
            raise _throttled(ip_ttl)
        wait = _login_delay(int(failures or 0), s) - (time.time() - float(last or 0))
        if wait > 0:
            raise _throttled(math.ceil(wait))
        user = await repo.find_user_by_email(self.pool, email)
        if user is None:
            await self._burn_like_a_check(password)
            ok = False
        else:
            ok = await self._check(password, user["password_hash"])
        if not ok:
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.incr(ip_key)
                pipe.expire(ip_key, window, nx=True)
                pipe.hincrby(account_key, "n", 1)
                pipe.hset(account_key, "last", repr(time.time()))
                pipe.expire(account_key, window)
                await pipe.execute()
            except RedisError:
                log.warning("could not count a failed login")
            raise ApiError("The email or password is wrong.", code="invalid_credentials")
        assert user is not None
        try:
            await self.redis.delete(account_key)
        except RedisError:
            log.warning("could not reset the failed-login counter")
        return await self._open_session(
            user_id=user["id"],
            tenant_id=user["tenant_id"],
            email=user["email"],
            role=user["role"],
            tenant_name=user["tenant_name"],
            plan=user["plan"],
        )

    def _access_token(self, user_id: str, tenant_id: str, session_id: str, role: str) -> str:
        now = int(time.time())
        claims = {
            "sub": user_id,
            "tid": tenant_id,
            "sid": session_id,
            "role": role,
            "typ": "access",
            "iat": now,
            "exp": now + self.settings.access_token_ttl_seconds,
            "iss": ACCESS_TOKEN_ISSUER,
            "aud": ACCESS_TOKEN_AUDIENCE,
        }
        signing = load_private_key(self.settings.user_token_private_key.get_secret_value())
        return jwt.encode(claims, signing.key, algorithm="EdDSA", headers={"kid": signing.kid})

    async def _open_session(
        self,
        *,
        user_id: str,
        tenant_id: str,
        email: str,
        role: str,
        tenant_name: str,
        plan: str,
    ) -> dict[str, Any]:
        session_id = _new_id("ses")
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        expires = _now() + timedelta(seconds=self.settings.refresh_token_ttl_seconds)
        await repo.insert_session(
            self.pool, session_id, user_id, tenant_id, _sha256(refresh), expires
        )
        return SessionOut(
            access_token=self._access_token(user_id, tenant_id, session_id, role),
            expires_in=self.settings.access_token_ttl_seconds,
            refresh_token=refresh,
            user=UserOut(id=user_id, email=email, role=role),
            tenant=TenantOut(id=tenant_id, name=tenant_name, plan=plan),
        ).model_dump()

    async def refresh(self, refresh_token: str) -> dict[str, Any]:
        """Rotate the refresh token. Presenting an already-rotated token revokes the session:
        someone else holds a copy."""
        digest = _sha256(refresh_token)
        reused = None
        async with self.pool.acquire() as conn, conn.transaction():
            session = await repo.find_session_by_refresh(conn, digest)
            if session is None:
                reused = await repo.find_session_by_previous_refresh(conn, digest)
                if reused is not None:
                    await repo.revoke_session(conn, reused["id"])
        if session is None:
            # Outside the transaction: the revocation must commit although we answer 401.
            if reused is not None:
                await self._mark_session_revoked(reused["id"])
                log.warning("rotated refresh token reused; session revoked")
            raise ApiError(code="invalid_refresh_token")
        async with self.pool.acquire() as conn, conn.transaction():
            session = await repo.find_session_by_refresh(conn, digest)
            if session is None:
                raise ApiError(code="invalid_refresh_token")
            if session["revoked_at"] is not None or session["expires_at"] <= _now():
                raise ApiError(code="invalid_refresh_token")
            user = await repo.get_user(conn, session["user_id"])
            if user is None:
                raise ApiError(code="invalid_refresh_token")
            new_refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
            await repo.rotate_session(conn, session["id"], _sha256(new_refresh))
        return {
            "access_token": self._access_token(
                user["id"], user["tenant_id"], session["id"], user["role"]
            ),
            "token_type": "Bearer",
            "expires_in": self.settings.access_token_ttl_seconds,
            "refresh_token": new_refresh,
        }

    async def logout(self, refresh_token: str) -> None:
        """Revoke the session; its access tokens stop working at the gateway at once."""
        async with self.pool.acquire() as conn, conn.transaction():
            session = await repo.find_session_by_refresh(conn, _sha256(refresh_token))
            if session is None:
                raise ApiError(code="invalid_refresh_token")
            await repo.revoke_session(conn, session["id"])
        await self._mark_session_revoked(session["id"])

    async def _mark_session_revoked(self, session_id: str) -> None:
        # Read by the gateway per JWT request; lives as long as an access token can.
        key = self._ns("auth", "revoked_sid", session_id)
        try:
            await self.redis.set(key, "1", ex=self.settings.access_token_ttl_seconds + 60)
        except RedisError as exc:
            raise ServiceUnavailable("Logout could not be recorded; retry.") from exc

    # ------------------------------------------------------------ API keys

    async def create_key(self, principal: Principal, req: CreateApiKeyRequest) -> dict[str, Any]:
        if req.expires_at is not None and req.expires_at <= _now():
            raise ValidationFailed(
                details=[{"field": "body.expires_at", "message": "must be in the future"}]
            )
        async with self.pool.acquire() as conn:
            await self._check_key_cap(conn, principal.tenant_id)  # before paying for bcrypt
        key_id = _new_id("key")
        key = generate_api_key(req.mode)
        hashed = await self._hash(key.raw)
        await self._vault_write(
            principal.tenant_id, key_id, {"hash": hashed, "lookup_id": key.lookup_id}
        )
        async with self.pool.acquire() as conn, conn.transaction():
            await self._check_key_cap(conn, principal.tenant_id)  # again, under the tenant lock
            row = await repo.insert_api_key(
                conn,
                key_id=key_id,
                tenant_id=principal.tenant_id,
                name=req.name,
                mode=req.mode,
                lookup_id=key.lookup_id,
                last4=key.last4,
                scopes=req.scopes,
                created_by=principal.subject_id,
                expires_at=req.expires_at,
            )
            await outbox.enqueue(
                conn,
                make_event(
                    ApiKeyCreated(
                        key_id=key_id, lookup_id=key.lookup_id, mode=req.mode, scopes=req.scopes
                    ),
                    tenant_id=principal.tenant_id,
                    source=SOURCE,
                    subject=key_id,
                ),
            )
        log.info("api key created", extra={"key_id": key_id, "lookup_id": key.lookup_id})
        return {**key_out(row), "key": key.raw}

    async def _check_key_cap(self, conn: asyncpg.Connection, tenant_id: str) -> None:
        if conn.is_in_transaction():
            plan = await repo.lock_tenant_plan(conn, tenant_id)
        else:
            tenant = await repo.get_tenant(conn, tenant_id)
            plan = tenant["plan"] if tenant else None
        cap = limits_for(plan or DEFAULT_PLAN).key_cap
        if cap is not None and await repo.count_active_api_keys(conn, tenant_id) >= cap:
            raise Conflict(
                f"The {plan} plan allows {cap} active API keys; revoke one or upgrade the plan.",
                code="api_key_limit_reached",
            )

    async def list_keys(
        self,
        tenant_id: str,
        params: ListParams,
        *,
        status: str | None = None,
        mode: str | None = None,
        name: str | None = None,
    ) -> Page[dict[str, Any]]:
        rows = await repo.list_api_keys(
            self.pool, tenant_id, params, status=status, mode=mode, name=name
        )
        return params.page(rows, key_out)

    async def get_key(self, tenant_id: str, key_id: str) -> dict[str, Any]:
        row = await repo.get_api_key(self.pool, tenant_id, key_id)
        if row is None:
            raise NotFound("API key not found.")
        return key_out(row)

    async def regenerate_key(
        self, tenant_id: str, key_id: str, grace_period_seconds: int
    ) -> dict[str, Any]:
        async with self.pool.acquire() as conn, conn.transaction():
            current = await repo.lock_api_key(conn, tenant_id, key_id)
            if current is None:
                raise NotFound("API key not found.")
            if key_status(current) != "active":
                raise Conflict("Only an active API key can be regenerated.")
            key = generate_api_key(current["mode"])
            hashed = await self._hash(key.raw)
            stored = await self._vault_read(tenant_id, key_id) or {}
            previous_hash = _hash_for(stored, current["lookup_id"])
            entry = {"hash": hashed, "lookup_id": key.lookup_id}
            if previous_hash is not None:
                entry |= {
                    "previous_hash": previous_hash,
                    "previous_lookup_id": current["lookup_id"],
                }
            # Vault keeps both hashes before Postgres switches: a crash in between leaves the
            # old secret working and the new one unused, never a key with no hash.
            await self._vault_write(tenant_id, key_id, entry)
            valid_until = (
                _now() + timedelta(seconds=grace_period_seconds) if grace_period_seconds else None
            )
            row = await repo.regenerate_api_key(
                conn,
                tenant_id,
                key_id,
                lookup_id=key.lookup_id,
                last4=key.last4,
                previous_valid_until=valid_until,
            )
            await outbox.enqueue(
                conn,
                make_event(
                    ApiKeyRegenerated(
                        key_id=key_id,
                        lookup_id=key.lookup_id,
                        previous_lookup_id=current["lookup_id"],
                        previous_valid_until=valid_until,
                    ),
                    tenant_id=tenant_id,
                    source=SOURCE,
                    subject=key_id,
                ),
            )
        return {**key_out(row), "key": key.raw}

    async def revoke_key(self, tenant_id: str, key_id: str) -> dict[str, Any]:
        """Idempotent: revoking a revoked key answers its current state."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await repo.revoke_api_key(conn, tenant_id, key_id)
            if row is None:
                existing = await repo.get_api_key(conn, tenant_id, key_id)
                if existing is None:
                    raise NotFound("API key not found.")
                return key_out(existing)
            await outbox.enqueue(
                conn,
                make_event(
                    ApiKeyRevoked(key_id=key_id, lookup_id=row["lookup_id"]),
                    tenant_id=tenant_id,
                    source=SOURCE,
                    subject=key_id,
                ),
            )
        try:
            await self.vault.delete(f"{tenant_id}/{key_id}")
        except Exception:
            # The row is revoked, which alone rejects the key; the orphan hash is harmless.
            log.warning("vault delete of a revoked key failed", extra={"key_id": key_id})
        return key_out(row)

    async def usage(
        self,
        tenant_id: str,
        key_id: str,
        start: datetime | None,
        end: datetime | None,
        granularity: Literal["minute", "hour", "day"] = "minute",
    ) -> dict[str, Any]:
        row = await repo.get_api_key(self.pool, tenant_id, key_id)
        if row is None:
            raise NotFound("API key not found.")
        # A time without offset means UTC (comparing naive and aware datetimes would fail).
        end = _utc(end) if end else _now()
        start = _utc(start) if start else end - timedelta(hours=1)
        if start >= end:
            raise ValidationFailed(details=[{"field": "query.from", "message": "must be < to"}])
        limit_days = USAGE_RANGE_DAYS[granularity]
        if end - start > timedelta(days=limit_days):
            raise ValidationFailed(
                details=[
                    {
                        "field": "query.from",
                        "message": f"range is limited to {limit_days} days per {granularity}",
                    }
                ]
            )
        buckets = await repo.usage_buckets(self.pool, tenant_id, key_id, start, end, granularity)
        return {
            "key_id": key_id,
            "from": start,
            "to": end,
            "granularity": granularity,
            "totals": {
                "request_count": row["request_count"],
                "error_count": row["error_count"],
                "last_used_at": row["last_used_at"],
            },
            "buckets": [
                # `minute` is the bucket's start whatever the granularity (its first name).
                {"minute": b["minute"], "requests": b["requests"], "errors": b["errors"]}
                for b in buckets
            ],
        }

    # ------------------------------------------------------------ verification (gateway)

    async def verify(self, raw_key: str) -> VerifiedKey:
        """bcrypt-check a presented key against Vault; `InvalidApiKey` when it fails."""
        try:
            parsed = parse_api_key(raw_key)
        except ApiKeyFormatError as exc:
            raise InvalidApiKey() from exc
        row = await repo.find_key_by_lookup(self.pool, parsed.lookup_id)
        now = _now()
        if row is None or row["mode"] != parsed.mode or key_status(row, now) != "active":
            raise InvalidApiKey()
        valid_until: datetime | None = row["expires_at"]
        if row["lookup_id"] != parsed.lookup_id:
            grace_end = row["previous_valid_until"]
            if grace_end is None or grace_end <= now:
                raise InvalidApiKey()
            valid_until = min(d for d in (valid_until, grace_end) if d is not None)
        stored = await self._vault_read(row["tenant_id"], row["id"])
        hashed = _hash_for(stored or {}, parsed.lookup_id)
        if hashed is None or not await self._check(parsed.raw, hashed):
            raise InvalidApiKey()
        return VerifiedKey(
            key_id=row["id"],
            tenant_id=row["tenant_id"],
            lookup_id=parsed.lookup_id,
            scopes=[s for s in row["scopes"] if s in SCOPES],
            mode=row["mode"],
            plan=row["plan"],
            valid_until=valid_until,
            role=row["creator_role"],
        )

    # ------------------------------------------------------------ Vault

    async def _vault_write(self, tenant_id: str, key_id: str, data: dict[str, Any]) -> None:
        try:
            await self.vault.write(f"{tenant_id}/{key_id}", data)
        except Exception as exc:
            log.error("vault write failed: %s", type(exc).__name__)
            raise ServiceUnavailable("Key storage is temporarily unavailable.") from exc

    async def _vault_read(self, tenant_id: str, key_id: str) -> dict[str, Any] | None:
        try:
            return await self.vault.read(f"{tenant_id}/{key_id}")
        except Exception as exc:
            log.error("vault read failed: %s", type(exc).__name__)
            raise ServiceUnavailable("Key storage is temporarily unavailable.") from exc


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _hash_for(stored: dict[str, Any], lookup_id: str) -> str | None:
    if stored.get("lookup_id") == lookup_id:
        return stored.get("hash")
    if stored.get("previous_lookup_id") == lookup_id:
        return stored.get("previous_hash")
    return None


def _check_password_bytes(password: str) -> None:
    # bcrypt reads at most 72 bytes; longer passwords would be silently truncated.
    if len(password.encode()) > 72:
        raise ValidationFailed(
            details=[{"field": "body.password", "message": "at most 72 bytes in UTF-8"}]
        )


def _login_delay(failures: int, settings: KeysSettings) -> float:
    """Seconds an address must wait after its last failure on an account: none for the
    first `login_max_failures_per_account` failures, then base, 2x base, 4x ... up to max."""
    extra = failures - settings.login_max_failures_per_account
    if extra < 0:
        return 0.0
    return float(
        min(settings.login_delay_max_seconds, settings.login_delay_base_seconds * 2**extra)
    )


def _throttled(ttl: Any) -> ApiError:
    retry = max(1, int(ttl or 1))
    return ApiError(
        "Too many login attempts; wait and retry.",
        code="login_throttled",
        headers={"Retry-After": str(retry)},
    )


# ---------------------------------------------------------------- usage flushing


def usage_key(namespace: str, key_id: str) -> str:
    """Redis hash the gateway increments per request: fields `r:<minute epoch>`,
    `e:<minute epoch>` and `last` (epoch seconds)."""
    return f"{namespace}:usage:{key_id}"


def usage_dirty_set(namespace: str) -> str:
    return f"{namespace}:usage:dirty"


def _inflight_prefix(namespace: str) -> str:
    return f"{namespace}:usage:inflight:"


async def flush_usage(
    pool: asyncpg.Pool, redis: aioredis.Redis, namespace: str, *, batch: int = 500
) -> int:
    """Move aggregated usage from Redis to Postgres; returns the keys flushed.

    Each key's hash is first renamed to an in-flight name that carries a batch id; Postgres
    records the batch id in the transaction that adds the counts; only then is the in-flight
    hash deleted. A flusher killed at any point loses nothing and counts nothing twice: the
    next run finds the in-flight hash and either applies it or (already applied) drops it.
    """
    prefix = _inflight_prefix(namespace)
    inflight: list[str] = [k.decode() async for k in redis.scan_iter(match=prefix + "*", count=500)]
    # redis-py types replies for both decode modes; this client answers bytes.
    key_ids = cast("list[bytes]", await redis.spop(usage_dirty_set(namespace), batch) or [])
    batch_id = uuid.uuid4().hex
    for raw in key_ids:
        key_id = raw.decode()
        target = f"{prefix}{batch_id}:{key_id}"
        try:
            await redis.rename(usage_key(namespace, key_id), target)
        except RedisError:
            continue  # nothing new since the last flush (the hash does not exist)
        inflight.append(target)
    flushed = 0
    for name in inflight:
        _, _, rest = name.partition(prefix)
        key_id = rest.split(":", 1)[1]
        fields = cast("dict[bytes, bytes]", await redis.hgetall(name))
        buckets: dict[int, list[int]] = {}
        last_used: datetime | None = None
        for field, value in fields.items():
            kind, _, minute = field.decode().partition(":")
            if kind == "last":
                last_used = datetime.fromtimestamp(float(value), UTC)
                continue
            counts = buckets.setdefault(int(minute), [0, 0])
            counts[0 if kind == "r" else 1] += int(value)
        rows = [(datetime.fromtimestamp(m, UTC), r, e) for m, (r, e) in sorted(buckets.items())]
        async with pool.acquire() as conn, conn.transaction():
            if await repo.claim_usage_batch(conn, rest) and rows:
                await repo.add_usage(conn, key_id, rows, last_used)
        await redis.delete(name)
        flushed += 1
    return flushed


async def run_usage_flusher(
    pool: asyncpg.Pool,
    redis: aioredis.Redis,
    settings: KeysSettings,
    stop: asyncio.Event,
) -> None:
    """Flush every `usage_flush_interval_seconds` until `stop`, then once more."""
    while True:
        try:
            await flush_usage(
                pool, redis, settings.redis_namespace, batch=settings.usage_flush_batch
            )
        except (RedisError, OSError, asyncpg.PostgresError) as exc:
            log.warning("usage flush failed; will retry", extra={"error": type(exc).__name__})
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.usage_flush_interval_seconds)
