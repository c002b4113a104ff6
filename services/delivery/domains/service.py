"""Domain logic of sending domains: create (DKIM key pair into Vault), verify against DNS,
rotate DKIM, publish through Cloudflare, re-check periodically, and the accept-time rule
that live mail comes only from verified domains.

Statuses: `pending` until every required record (DKIM, SPF) is found; `verified` after;
`failed` when a verified domain loses a required record. A DNS outage changes nothing.
"""

from __future__ import annotations

import asyncio
import builtins
import email.utils
import logging
import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import uuid_utils

from libs.common import outbox
from libs.common.events import (
    DomainCreated,
    DomainDeleted,
    DomainHealthChanged,
    DomainRecordChange,
    DomainVerificationFailed,
    DomainVerified,
    EventData,
    make_event,
)
from libs.common.http import ApiError, register_error_code
from libs.common.tenancy import TenantScope
from libs.common.vault import Vault
from services.delivery.domains import repository as repo
from services.delivery.domains.dkim import DkimSigner, generate_key_pair
from services.delivery.domains.records import (
    REQUIRED,
    InvalidDomainName,
    Record,
    RecordPolicy,
    check_record,
    expected_records,
    normalize_domain,
    sender_domain,
    unicode_domain,
)
from services.delivery.domains.resolver import DnsUnavailable, DomainResolver
from services.delivery.domains.schemas import (
    DnsCredentialsRequest,
    DnsRecord,
    Domain,
    PublishedRecord,
    PublishResult,
    UpdateDomainRequest,
)
from services.delivery.settings import DeliverySettings

log = logging.getLogger(__name__)
SOURCE = "/services/delivery"

register_error_code("invalid_domain", 422, "The domain name is not a valid DNS name.")
register_error_code("domain_not_found", 404, "No sending domain with this id.")
register_error_code("domain_exists", 409, "The tenant already has this sending domain.")
register_error_code(
    "domain_taken", 409, "Another account has verified this domain; it cannot be claimed."
)
register_error_code(
    "dkim_rotation_in_progress",
    409,
    "A rotated DKIM key waits for its record to verify; verify it before rotating again.",
)
register_error_code(
    "sender_domain_not_verified",
    422,
    "Live mail may only be sent From a domain verified for the account (POST /api/v1/domains).",
)
register_error_code("dns_unavailable", 503, "DNS could not be queried; try again later.")
register_error_code(
    "dns_provider_not_configured",
    409,
    "No DNS provider token is stored (PUT /api/v1/domains/dns-credentials).",
)
register_error_code("dns_provider_rejected", 422, "The DNS provider refused the request.")
register_error_code("dns_provider_unavailable", 502, "The DNS provider could not be reached.")

_SIGNER_CACHE_SECONDS = 60.0


def _new_id() -> str:
    return f"dom_{uuid_utils.uuid7().hex}"


class DomainService:
    def __init__(self, settings: DeliverySettings, pool: asyncpg.Pool, vault: Vault | None):
        self.settings = settings
        self.pool = pool
        self.vault = vault
        self.policy = RecordPolicy(
            spf_include=settings.spf_include,
            return_path_host=settings.return_path_host,
            return_path_target=settings.return_path_target,
            tracking_host=settings.tracking_cname_host,
            tracking_target=settings.tracking_cname_target,
            dmarc_rua_mailbox=settings.dmarc_rua_mailbox,
        )
        self.resolver = DomainResolver(settings.dns_resolvers, settings.dns_timeout_seconds)
        self._signers: dict[tuple[str, str], tuple[float, DkimSigner | None]] = {}

    # -- Vault ------------------------------------------------------------------------------

    def _key_path(self, tenant_id: str, domain_id: str, selector: str) -> str:
        return f"{self.settings.domain_keys_path}/{tenant_id}/{domain_id}/{selector}"

    def _vault(self) -> Vault:
        if self.vault is None:
            raise ApiError("Vault is not configured.", code="service_unavailable")
        return self.vault

    async def _new_key(self, tenant_id: str, domain_id: str) -> tuple[str, str]:
        """A fresh key pair whose private half is in Vault: (selector, public key)."""
        pair = await asyncio.to_thread(generate_key_pair)
        path = self._key_path(tenant_id, domain_id, pair.selector)
        await self._vault().write(path, {"private_key": pair.private_pem})
        return pair.selector, pair.public_b64

    async def _drop_key(self, tenant_id: str, domain_id: str, selector: str | None) -> None:
        if selector is None:
            return
        try:
            await self._vault().delete(self._key_path(tenant_id, domain_id, selector))
        except Exception as exc:  # the row is gone or moved on; an orphan key is only logged
            log.warning("domains: could not delete DKIM key %s/%s: %s", domain_id, selector, exc)

    # -- API --------------------------------------------------------------------------------

    async def create(self, tenant_id: str, name: str) -> Domain:
        ascii_name = _normalized(name)
        async with self.pool.acquire() as conn:
            if await repo.verified_elsewhere(conn, tenant_id, ascii_name):
                raise ApiError(code="domain_taken", details=[_field("name", ascii_name)])
        domain_id = _new_id()
        selector, public_key = await self._new_key(tenant_id, domain_id)
        first_check = datetime.now(UTC) + timedelta(
            seconds=self.settings.domain_pending_check_seconds
        )
        async with self.pool.acquire() as conn, conn.transaction():
            row = await repo.insert(
                conn,
                domain_id=domain_id,
                tenant_id=tenant_id,
                name=ascii_name,
                selector=selector,
                public_key=public_key,
                first_check_at=first_check,
            )
            if row is not None:
                await self._emit(conn, row, DomainCreated(domain_id=domain_id, name=ascii_name))
        if row is None:
            await self._drop_key(tenant_id, domain_id, selector)
            raise ApiError(code="domain_exists", details=[_field("name", ascii_name)])
        return self._public(row)

    async def list(
        self,
        tenant_id: str,
        *,
        status: str | None,
        after: tuple[datetime, str] | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Domain], int]:
        async with self.pool.acquire() as conn:
            rows = await repo.list_page(
                conn, tenant_id, status=status, after=after, limit=limit, offset=offset
            )
            total = await repo.count(conn, tenant_id, status)
        return [self._public(r) for r in rows], total

    async def get(self, tenant_id: str, domain_id: str) -> Domain:
        return self._public(await self._row(tenant_id, domain_id))

    async def delete(self, tenant_id: str, domain_id: str) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await repo.get(conn, tenant_id, domain_id, lock=True)
            if row is None:
                raise ApiError(code="domain_not_found")
            await repo.delete(conn, tenant_id, domain_id)
            await self._emit(conn, row, DomainDeleted(domain_id=domain_id, name=row["name"]))
        await self._drop_key(tenant_id, domain_id, row["dkim_selector"])
        await self._drop_key(tenant_id, domain_id, row["dkim_next_selector"])
        self._signers.pop((tenant_id, row["name"]), None)

    async def update(self, tenant_id: str, domain_id: str, req: UpdateDomainRequest) -> Domain:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await repo.get(conn, tenant_id, domain_id, lock=True)
            if row is None:
                raise ApiError(code="domain_not_found")
            fields = req.model_fields_set
            default_from = req.default_from if "default_from" in fields else row["default_from"]
            name = (
                req.default_from_name if "default_from_name" in fields else row["default_from_name"]
            )
            if default_from is not None and sender_domain(default_from) != row["name"]:
                raise ApiError(
                    "The default sender must be an address at this domain.",
                    code="validation_error",
                    details=[_field("default_from", f"not an address at {row['name']}")],
                )
            row = await repo.set_sender(conn, domain_id, default_from, name)
        return self._public(row)

    async def verify(self, tenant_id: str, domain_id: str) -> Domain:
        row = await self._row(tenant_id, domain_id)
        try:
            statuses = await self._check(row)
        except DnsUnavailable as exc:
            raise ApiError(str(exc), code="dns_unavailable") from exc
        async with self.pool.acquire() as conn, conn.transaction():
            locked = await repo.get(conn, tenant_id, domain_id, lock=True)
            if locked is None:
                raise ApiError(code="domain_not_found")
            if await repo.verified_elsewhere(conn, tenant_id, locked["name"]):
                raise ApiError(code="domain_taken", details=[_field("name", locked["name"])])
            row, retired = await self._apply(conn, locked, statuses, manual=True)
        await self._drop_key(tenant_id, domain_id, retired)
        return self._public(row)

    async def rotate_dkim(self, tenant_id: str, domain_id: str) -> Domain:
        row = await self._row(tenant_id, domain_id)
        if row["dkim_next_selector"]:
            raise ApiError(code="dkim_rotation_in_progress")
        selector, public_key = await self._new_key(tenant_id, domain_id)
        async with self.pool.acquire() as conn, conn.transaction():
            locked = await repo.get(conn, tenant_id, domain_id, lock=True)
            if locked is None or locked["dkim_next_selector"]:
                await self._drop_key(tenant_id, domain_id, selector)
                raise ApiError(
                    code="domain_not_found" if locked is None else "dkim_rotation_in_progress"
                )
            row = await repo.set_next_key(conn, domain_id, selector, public_key)
        return self._public(row)

    async def store_dns_credentials(self, tenant_id: str, req: DnsCredentialsRequest) -> None:
        await self._vault().write(
            self._dns_token_path(tenant_id), {"api_token": req.api_token.get_secret_value()}
        )

    async def publish(self, tenant_id: str, domain_id: str) -> PublishResult:
        row = await self._row(tenant_id, domain_id)
        stored = await self._vault().read(self._dns_token_path(tenant_id))
        if not stored or not stored.get("api_token"):
            raise ApiError(code="dns_provider_not_configured")
        # Imported here: the cloudflare library is large, and only this route needs it.
        from services.delivery.domains.cloudflare import (
            CloudflarePublisher,
            DnsProviderRejected,
            DnsProviderUnavailable,
        )

        publisher = CloudflarePublisher(
            str(stored["api_token"]),
            self.settings.cloudflare_base_url,
            self.settings.dns_provider_timeout_seconds,
        )
        try:
            outcomes = await publisher.publish(row["name"], self._records(row), self.policy)
        except DnsProviderRejected as exc:
            raise ApiError(str(exc), code="dns_provider_rejected") from exc
        except DnsProviderUnavailable as exc:
            raise ApiError(str(exc), code="dns_provider_unavailable") from exc
        finally:
            await publisher.close()
        return PublishResult(
            domain=self._public(row),
            published=[
                PublishedRecord(purpose=o.purpose, host=o.host, outcome=o.outcome) for o in outcomes
            ],
        )

    # -- the rule senders obey ----------------------------------------------------------------

    async def require_verified_sender(self, scope: TenantScope, from_email: str) -> None:
        """Live mail only From a domain verified for the tenant (or a subdomain of one);
        test mode is exempt."""
        if scope.mode == "test":
            return
        name = _sender_domain_or_none(from_email)
        async with self.pool.acquire() as conn:
            found = name and await repo.verified_covering(
                conn, scope.tenant_id, _with_parents(name)
            )
        if not found:
            shown = name or from_email
            raise ApiError(
                f"{shown} is not a verified sending domain of this account; add and verify it "
                "with POST /api/v1/domains, or send in test mode.",
                code="sender_domain_not_verified",
                details=[_field("from", f"domain {shown} is not verified")],
            )

    async def signer_for(self, tenant_id: str, from_email: str) -> DkimSigner | None:
        """The DKIM signer of the sender's verified domain (cached briefly), or None."""
        name = _sender_domain_or_none(from_email)
        if name is None or self.vault is None:
            return None
        key = (tenant_id, name)
        hit = self._signers.get(key)
        now = time.monotonic()
        if hit and now - hit[0] < _SIGNER_CACHE_SECONDS:
            return hit[1]
        async with self.pool.acquire() as conn:
            found = await repo.verified_covering(conn, tenant_id, _with_parents(name))
        signer = None
        if found:
            domain_id, domain_name, selector = found
            secret = await self.vault.read(self._key_path(tenant_id, domain_id, selector))
            if secret and secret.get("private_key"):
                signer = DkimSigner(domain_name, selector, str(secret["private_key"]))
        self._signers[key] = (now, signer)
        return signer

    # -- periodic checks ----------------------------------------------------------------------

    async def check_due(self, limit: int = 20) -> int:
        """Re-verify up to `limit` due domains; the number checked (0: nothing due)."""
        retired: list[tuple[str, str, str | None]] = []
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await repo.claim_due(conn, limit)
            if not rows:
                return 0
            results = await asyncio.gather(*(self._check(r) for r in rows), return_exceptions=True)
            for row, result in zip(rows, results, strict=True):
                if isinstance(result, BaseException):
                    # DNS could not answer: nothing is concluded, look again soon.
                    log.warning("domains: check of %s failed: %s", row["name"], result)
                    await repo.save_check(
                        conn,
                        row["id"],
                        status=row["status"],
                        record_status=row["record_status"],
                        next_check_at=self._next_check(row["status"], retry=True),
                        promote_next_selector=False,
                    )
                    continue
                try:
                    _, old = await self._apply(conn, row, result, manual=False)
                except ApiError:  # verified by another tenant meanwhile: it stays unverified
                    await repo.save_check(
                        conn,
                        row["id"],
                        status="pending" if row["status"] == "pending" else "failed",
                        record_status=row["record_status"],
                        next_check_at=self._next_check(row["status"]),
                        promote_next_selector=False,
                    )
                    continue
                retired.append((row["tenant_id"], row["id"], old))
        for tenant_id, domain_id, selector in retired:
            await self._drop_key(tenant_id, domain_id, selector)
        return len(rows)

    # -- internals ----------------------------------------------------------------------------

    async def _row(self, tenant_id: str, domain_id: str) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            row = await repo.get(conn, tenant_id, domain_id)
        if row is None:
            raise ApiError(code="domain_not_found")
        return row

    def _dns_token_path(self, tenant_id: str) -> str:
        return f"{self.settings.tenant_credentials_path}/{tenant_id}/cloudflare"

    # builtins.list: the method `list` above shadows the builtin in this class body.
    def _records(self, row: dict[str, Any]) -> builtins.list[Record]:
        nxt = row["dkim_next_selector"]
        return expected_records(
            row["name"],
            self.policy,
            (row["dkim_selector"], row["dkim_public_key"]),
            (nxt, row["dkim_next_public_key"]) if nxt else None,
        )

    async def _check(self, row: dict[str, Any]) -> dict[str, str]:
        """purpose → verified | failed, from DNS now. Raises DnsUnavailable."""
        records = self._records(row)
        answers = await asyncio.gather(*(self.resolver.lookup(r.host, r.type) for r in records))
        return {
            r.purpose: "verified" if check_record(r, found, self.policy) else "failed"
            for r, found in zip(records, answers, strict=True)
        }

    def _next_check(self, status: str, *, retry: bool = False) -> datetime:
        if retry:
            seconds = self.settings.domain_retry_check_seconds
        elif status == "verified":
            seconds = self.settings.domain_check_interval_seconds
        else:
            seconds = self.settings.domain_pending_check_seconds
        # Spread checks so a day's domains are not all looked at in one minute.
        return datetime.now(UTC) + timedelta(seconds=seconds * random.uniform(0.9, 1.1))

    async def _apply(
        self,
        conn: asyncpg.Connection,
        row: dict[str, Any],
        statuses: dict[str, str],
        *,
        manual: bool,
    ) -> tuple[dict[str, Any], str | None]:
        """Store a check; (the saved row, the selector retired by it — its key is dropped
        from Vault by the caller once the transaction committed)."""
        promote = bool(row["dkim_next_selector"]) and statuses.get("dkim_next") == "verified"
        if promote:
            statuses["dkim"] = "verified"
            statuses.pop("dkim_next", None)
        required_ok = all(statuses.get(p) == "verified" for p in REQUIRED)
        previous = row["status"]
        status = "verified" if required_ok else ("pending" if previous == "pending" else "failed")
        try:
            # A savepoint: another tenant may have verified the same name in a transaction
            # that committed after our check (the unique index decides; the caller goes on).
            async with conn.transaction():
                saved = await repo.save_check(
                    conn,
                    row["id"],
                    status=status,
                    record_status=statuses,
                    next_check_at=self._next_check(status),
                    promote_next_selector=promote,
                )
        except asyncpg.UniqueViolationError:
            raise ApiError(code="domain_taken", details=[_field("name", row["name"])]) from None
        ids = {"domain_id": row["id"], "name": row["name"]}
        if status == "verified" and previous != "verified":
            await self._emit(conn, row, DomainVerified(**ids))
        failed = sorted(p for p in REQUIRED if statuses.get(p) != "verified")
        if failed and (manual or previous == "verified"):
            await self._emit(
                conn,
                row,
                DomainVerificationFailed(**ids, failed_records=failed, status=status),
            )
        changes = _changes(row, statuses, self._records(row))
        if changes:
            await self._emit(conn, row, DomainHealthChanged(**ids, status=status, changes=changes))
        self._signers.pop((row["tenant_id"], row["name"]), None)
        return saved, (row["dkim_selector"] if promote else None)

    async def _emit(self, conn: asyncpg.Connection, row: dict[str, Any], data: EventData) -> None:
        await outbox.enqueue(
            conn,
            make_event(data, tenant_id=row["tenant_id"], source=SOURCE, subject=row["id"]),
        )

    def _public(self, row: dict[str, Any]) -> Domain:
        status_of = row["record_status"]
        return Domain(
            id=row["id"],
            name=row["name"],
            unicode_name=unicode_domain(row["name"]),
            status=row["status"],
            dkim_selector=row["dkim_selector"],
            dkim_next_selector=row["dkim_next_selector"],
            default_from=row["default_from"],
            default_from_name=row["default_from_name"],
            records=[
                DnsRecord(
                    purpose=r.purpose,
                    type=r.type,
                    host=r.host,
                    value=r.value,
                    required=r.required,
                    status=status_of.get(r.purpose, "pending"),
                )
                for r in self._records(row)
            ],
            created_at=row["created_at"],
            verified_at=row["verified_at"],
            last_checked_at=row["last_checked_at"],
            next_check_at=row["next_check_at"],
        )


def _changes(
    row: dict[str, Any], statuses: dict[str, str], records: list[Record]
) -> list[DomainRecordChange]:
    """Records whose status moved since the previous check (never-checked ones don't count)."""
    before = row["record_status"]
    hosts: dict[str, str] = {r.purpose: r.host for r in records}
    return [
        DomainRecordChange(
            purpose=purpose, host=hosts.get(purpose, ""), previous=before[purpose], current=now
        )
        for purpose, now in sorted(statuses.items())
        if purpose in before and before[purpose] != now
    ]


def _normalized(name: str) -> str:
    try:
        return normalize_domain(name)
    except InvalidDomainName as exc:
        raise ApiError(
            str(exc), code="invalid_domain", details=[_field("name", str(exc))]
        ) from None


def _with_parents(name: str) -> list[str]:
    """`a.b.example.com` → itself, `b.example.com`, `example.com`: a verified domain covers
    its subdomains (DMARC relaxed alignment: the DKIM `d=` is the verified domain)."""
    labels = name.split(".")
    return [".".join(labels[i:]) for i in range(len(labels) - 1)]


def _sender_domain_or_none(address: str) -> str | None:
    """The domain of a sender (`a@x.io` or `Name <a@x.io>`), None when it has none."""
    try:
        return sender_domain(email.utils.parseaddr(address)[1] or address)
    except InvalidDomainName:
        return None


def _field(name: str, message: str) -> dict[str, str]:
    return {"field": f"body.{name}", "message": message}
