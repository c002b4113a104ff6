"""Domain logic of the webhooks service: endpoints, matching, payloads, attempts, retries, health.

`EndpointService` is what the API calls (no HTTP framework objects here); the functions above
it are the rules the delivery engine (`dispatcher.py`) and the API share: which endpoint an
event goes to, the payload and its id, how one attempt is made and signed, what happens
after it (retry when, give up, disable the endpoint), and how healthy an endpoint is.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

import asyncpg
import orjson

from libs.common import outbox
from libs.common.events import (
    Envelope,
    WebhookEndpointDisabled,
    make_event,
)
from libs.common.http import ApiError, NotFound, ValidationFailed, register_error_code
from libs.common.pagination import ListParams, Page
from libs.common.tenancy import TenantScope
from services.webhooks import repository as repo
from services.webhooks.address_guard import IPNetwork, UrlRefused, resolve_url
from services.webhooks.payloads import (
    LATEST_VERSION,
    deliverable_types,
    sample_data,
    webhook_body,
)
from services.webhooks.secret_store import SecretStore
from services.webhooks.settings import WebhooksSettings
from services.webhooks.signatures import (
    InvalidSecret,
    generate_secret,
    secret_key,
    signature_headers,
)
from services.webhooks.transport import AttemptResult, WebhookTransport

register_error_code(
    "webhook_url_refused",
    422,
    "The webhook URL is not allowed: not https, or it resolves to a non-public address.",
)
register_error_code(
    "webhook_endpoint_disabled", 409, "The webhook endpoint is disabled; enable it first."
)
register_error_code(
    "webhook_delivery_in_progress",
    409,
    "The webhook delivery is still being attempted; retry it once it has finished.",
)

SOURCE = "/services/webhooks"
# Every public catalog type with a read scope (email.*, campaign.*, contact.*, and whatever
# the catalog gains): endpoints subscribe to them, the event stream carries them.
WEBHOOK_EVENT_TYPES: tuple[str, ...] = deliverable_types()
_DELIVERY_NAMESPACE = uuid.UUID("5b0c3c9e-8a57-4f4e-9d1a-6a2f7e0d4b11")
HEALTHY, DEGRADED, FAILING = "healthy", "degraded", "failing"


# ------------------------------------------------------------------ matching and payloads


def invalid_event_patterns(patterns: Sequence[str]) -> list[str]:
    """The patterns that match no deliverable event type (`*` wildcards allowed)."""
    return [p for p in patterns if not any(fnmatchcase(t, p) for t in WEBHOOK_EVENT_TYPES)]


def endpoint_matches(endpoint: Mapping[str, Any], event_type: str, data: Mapping[str, Any]) -> bool:
    if event_type not in WEBHOOK_EVENT_TYPES:
        return False
    if not any(fnmatchcase(event_type, p) for p in endpoint["event_types"]):
        return False
    campaigns = endpoint["filter_campaign_ids"]
    if campaigns and data.get("campaign_id") not in campaigns:
        return False
    tags = endpoint["filter_contact_tags"]
    return not tags or bool(set(tags).intersection(data.get("contact_tags") or ()))


def event_mode(event: Envelope) -> str:
    """Sandbox (test-key) events say so in the envelope's `mode` (older producers in
    `data.mode`); everything else is live."""
    return "test" if "test" in (event.mode, event.data.get("mode")) else "live"


def delivery_id_for(endpoint_id: str, event_id: uuid.UUID) -> str:
    """The same event to the same endpoint always gets the same id (webhook-id, payload id)."""
    return "msg_" + uuid.uuid5(_DELIVERY_NAMESPACE, f"{endpoint_id}/{event_id}").hex


# ------------------------------------------------------------------ retries and health


@dataclass(frozen=True)
class RetryPolicy:
    schedule_s: tuple[float, ...]
    jitter: float = 0.2
    max_retry_after: float = 3600.0

    @classmethod
    def of(cls, settings: WebhooksSettings, schedule_ms: Sequence[int] | None) -> RetryPolicy:
        schedule = (
            tuple(ms / 1000 for ms in schedule_ms)
            if schedule_ms is not None
            else tuple(settings.webhooks_retry_schedule)
        )
        return cls(schedule, settings.webhooks_retry_jitter, settings.webhooks_max_retry_after)

    def next_delay(self, attempts_in_cycle: int, retry_after: float | None) -> float | None:
        """Seconds until the next attempt after `attempts_in_cycle` failed ones; None: stop."""
        if attempts_in_cycle > len(self.schedule_s):
            return None
        base = self.schedule_s[attempts_in_cycle - 1]
        delay = base * (1 + random.uniform(0, self.jitter)) if self.jitter > 0 else base
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        return delay


def health_of(enabled: bool, disabled_reason: str | None, attempts: int, succeeded: int,
              p95_ms: float | None, consecutive_failures: int) -> str:  # fmt: skip
    """healthy / degraded / failing from the last 24 h (see docs/webhooks.md)."""
    if not enabled and disabled_reason and disabled_reason != "disabled by the customer":
        return FAILING
    if attempts == 0:
        return HEALTHY
    rate = succeeded / attempts
    if rate < 0.5 or consecutive_failures >= 5:
        return FAILING
    if rate < 0.95 or consecutive_failures > 0 or (p95_ms is not None and p95_ms > 10_000):
        return DEGRADED
    return HEALTHY


# ------------------------------------------------------------------ one attempt


@dataclass(frozen=True)
class Claim:
    """A delivery this process holds the lease on, with what the attempt needs."""

    delivery_id: str
    endpoint_id: str
    tenant_id: str
    event_type: str
    payload: str
    seq: int
    attempts: int
    cycle_attempts: int
    trigger: str
    url: str
    retry_schedule_ms: list[int] | None
    secret_version: int

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Claim:
        return cls(
            delivery_id=row["id"],
            endpoint_id=row["endpoint_id"],
            tenant_id=row["tenant_id"],
            event_type=row["event_type"],
            payload=row["payload"],
            seq=row["seq"],
            attempts=row["attempts"],
            cycle_attempts=row["cycle_attempts"],
            trigger=row["trigger"],
            url=row["url"],
            retry_schedule_ms=row["retry_schedule_ms"],
            secret_version=row["secret_version"],
        )


@dataclass
class AttemptContext:
    """What making an attempt needs, in any process (API test sends, workers)."""

    settings: WebhooksSettings
    secrets: SecretStore
    transport: WebhookTransport
    allowed_networks: list[IPNetwork] = field(default_factory=list)


async def make_attempt(ctx: AttemptContext, claim: Claim) -> AttemptResult:
    """Resolve and check the URL, sign, send. Never raises: failures are results."""
    started = time.perf_counter()
    try:
        target = await resolve_url(
            claim.url,
            allow_http=ctx.settings.webhooks_allow_http,
            allowed=ctx.allowed_networks,
        )
    except UrlRefused as exc:
        return AttemptResult(False, None, _elapsed_ms(started), error=f"url refused: {exc}")
    try:
        active = await ctx.secrets.active(claim.endpoint_id, claim.secret_version)
    except Exception as exc:
        error = f"signing secret unavailable: {type(exc).__name__}"
        return AttemptResult(False, None, _elapsed_ms(started), error=error)
    body = claim.payload.encode()
    headers = signature_headers(active, claim.delivery_id, int(time.time()), body)
    return await ctx.transport.send(target, headers, body)


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


@dataclass(frozen=True)
class Outcome:
    """One attempt's log row, the delivery's next state and whether to wake it later."""

    row: repo.OutcomeRow
    retry_delay: float | None
    gone: bool


def decide(
    settings: WebhooksSettings, claim: Claim, result: AttemptResult, attempted_at: datetime
) -> Outcome:
    cycle = claim.cycle_attempts + 1
    delay: float | None = None
    if result.succeeded:
        status = "succeeded"
    elif result.gone or claim.trigger == "test":
        status = "failed"  # 410: the receiver is gone for good; test sends are one attempt
    else:
        policy = RetryPolicy.of(settings, claim.retry_schedule_ms)
        delay = policy.next_delay(cycle, result.retry_after)
        status = "failed" if delay is None else "retrying"
    next_at = attempted_at + timedelta(seconds=delay) if delay is not None else None
    row = repo.OutcomeRow(
        delivery_id=claim.delivery_id,
        endpoint_id=claim.endpoint_id,
        tenant_id=claim.tenant_id,
        attempt=claim.attempts + 1,
        trigger=claim.trigger,
        attempted_at=attempted_at,
        succeeded=result.succeeded,
        status_code=result.status_code,
        response_ms=result.response_ms,
        response_body=result.response_body,
        error=result.error,
        new_status=status,
        next_attempt_at=next_at,
    )
    return Outcome(row=row, retry_delay=delay, gone=result.gone)


async def persist_outcomes(
    pool: asyncpg.Pool, settings: WebhooksSettings, outcomes: Sequence[Outcome]
) -> list[str]:
    """Record attempts, update endpoint health, disable endpoints that earned it (with a
    `webhook.endpoint_disabled` notice in the outbox), all in one transaction. Returns the
    ids of endpoints disabled now."""
    disabled: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await repo.record_outcomes(conn, [o.row for o in outcomes])
        per_endpoint: dict[str, list[Outcome]] = {}
        for o in outcomes:
            per_endpoint.setdefault(o.row.endpoint_id, []).append(o)
        for endpoint_id in sorted(per_endpoint):  # a fixed order: no deadlocks between batches
            items = per_endpoint[endpoint_id]
            last_success = max((i for i, o in enumerate(items) if o.row.succeeded), default=-1)
            failures = [o for o in items[last_success + 1 :] if not o.row.succeeded]
            if last_success >= 0:
                await repo.endpoint_succeeded(conn, endpoint_id)
            reason = None
            if any(o.gone for o in items):
                reason = "the endpoint answered 410 Gone"
            if failures:
                state = await repo.endpoint_failed(
                    conn, endpoint_id, len(failures), failures[0].row.attempted_at
                )
                if state is not None and reason is None:
                    reason = _disable_reason(settings, state)
            if reason is not None:
                row = await repo.disable_endpoint(conn, endpoint_id, reason)
                if row is not None:
                    disabled.append(endpoint_id)
                    await outbox.enqueue(
                        conn,
                        make_event(
                            WebhookEndpointDisabled(
                                endpoint_id=endpoint_id, url=row["url"], reason=reason
                            ),
                            tenant_id=row["tenant_id"],
                            source=SOURCE,
                            subject=endpoint_id,
                        ),
                    )
    return disabled


def _disable_reason(settings: WebhooksSettings, state: Mapping[str, Any]) -> str | None:
    if not state["enabled"]:
        return None
    limit = settings.webhooks_disable_after_failures
    if limit and state["consecutive_failures"] >= limit:
        return f"{state['consecutive_failures']} failed attempts in a row"
    since = state["failing_since"]
    window = timedelta(hours=settings.webhooks_disable_after_hours)
    if since is not None and datetime.now(UTC) - since >= window:
        return f"failing without a success since {since.isoformat()}"
    return None


# ------------------------------------------------------------------ endpoint management


def endpoint_view(row: Mapping[str, Any]) -> dict[str, Any]:
    schedule = row["retry_schedule_ms"]
    return {
        "id": row["id"],
        "url": row["url"],
        "description": row["description"],
        "events": list(row["event_types"]),
        "filters": {
            "campaign_ids": list(row["filter_campaign_ids"]),
            "contact_tags": list(row["filter_contact_tags"]),
        },
        "enabled": row["enabled"],
        "disabled_reason": row["disabled_reason"],
        "disabled_at": row["disabled_at"],
        "retry_schedule": [ms / 1000 for ms in schedule] if schedule is not None else None,
        "payload_version": row["payload_version"],
        "mode": row["mode"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _delivery_view(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "endpoint_id": row["endpoint_id"],
        "event_id": str(row["event_id"]) if row["event_id"] else None,
        "event_type": row["event_type"],
        "status": row["status"],
        "test": row["is_test"],
        "trigger": row["trigger"],
        "attempts": row["attempts"],
        "next_attempt_at": row["next_attempt_at"],
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "created_at": row["created_at"],
        "completed_at": row["completed_at"],
    }


class EndpointService:
    """Customer endpoint management and the delivery log, for the API."""

    def __init__(self, pool: asyncpg.Pool, ctx: AttemptContext) -> None:
        self.pool = pool
        self.ctx = ctx
        self.settings = ctx.settings

    async def _check_url(self, url: str) -> None:
        try:
            await resolve_url(
                url, allow_http=self.settings.webhooks_allow_http, allowed=self.ctx.allowed_networks
            )
        except UrlRefused as exc:
            detail = {"field": "body.url", "message": str(exc)}
            raise ApiError(str(exc), code="webhook_url_refused", details=[detail]) from exc

    @staticmethod
    def _check_events(events: Sequence[str]) -> None:
        bad = invalid_event_patterns(events)
        if bad:
            raise ValidationFailed(
                details=[
                    {"field": "body.events", "message": f"{p!r} matches no webhook event type"}
                    for p in bad
                ]
            )

    async def _endpoint(self, caller: TenantScope, endpoint_id: str) -> asyncpg.Record:
        row = await repo.get_endpoint(self.pool, caller.tenant_id, caller.mode, endpoint_id)
        if row is None:
            raise NotFound("No webhook endpoint with this id.")
        return row

    async def create(self, caller: TenantScope, spec: Mapping[str, Any]) -> dict[str, Any]:
        await self._check_url(spec["url"])
        self._check_events(spec["events"])
        secret = spec.get("secret") or generate_secret()
        try:
            secret_key(secret)
        except InvalidSecret as exc:
            raise ValidationFailed(details=[{"field": "body.secret", "message": str(exc)}]) from exc
        endpoint_id = "ep_" + uuid.uuid4().hex
        # Vault first: an endpoint row never exists without its secret.
        await self.ctx.secrets.create(endpoint_id, secret)
        try:
            async with self.pool.acquire() as conn:
                row = await repo.insert_endpoint(
                    conn,
                    {
                        "id": endpoint_id,
                        "tenant_id": caller.tenant_id,
                        "mode": caller.mode,
                        "url": spec["url"],
                        "description": spec.get("description"),
                        "event_types": list(spec["events"]),
                        "filter_campaign_ids": list(spec.get("campaign_ids") or []),
                        "filter_contact_tags": list(spec.get("contact_tags") or []),
                        "enabled": spec.get("enabled", True),
                        "retry_schedule_ms": _schedule_ms(spec.get("retry_schedule")),
                        "payload_version": spec.get("payload_version") or LATEST_VERSION,
                    },
                )
        except BaseException:
            await self.ctx.secrets.delete(endpoint_id)
            raise
        return {**endpoint_view(row), "secret": secret}

    async def list(
        self,
        caller: TenantScope,
        params: ListParams,
        *,
        enabled: bool | None = None,
        url: str | None = None,
    ) -> Page[dict[str, Any]]:
        rows = await repo.list_endpoints(
            self.pool, caller.tenant_id, caller.mode, params, enabled=enabled, url=url
        )
        return params.page(rows, endpoint_view)

    async def get(self, caller: TenantScope, endpoint_id: str) -> dict[str, Any]:
        return endpoint_view(await self._endpoint(caller, endpoint_id))

    async def update(
        self, caller: TenantScope, endpoint_id: str, changes: Mapping[str, Any]
    ) -> dict[str, Any]:
        current = await self._endpoint(caller, endpoint_id)
        columns: dict[str, Any] = {}
        if "url" in changes:
            await self._check_url(changes["url"])
            columns["url"] = changes["url"]
        if "events" in changes:
            self._check_events(changes["events"])
            columns["event_types"] = list(changes["events"])
        if "description" in changes:
            columns["description"] = changes["description"]
        if "campaign_ids" in changes:
            columns["filter_campaign_ids"] = list(changes["campaign_ids"] or [])
        if "contact_tags" in changes:
            columns["filter_contact_tags"] = list(changes["contact_tags"] or [])
        if "retry_schedule" in changes:
            columns["retry_schedule_ms"] = _schedule_ms(changes["retry_schedule"])
        if changes.get("payload_version"):
            columns["payload_version"] = changes["payload_version"]
        enabling = changes.get("enabled") is True and not current["enabled"]
        if changes.get("enabled") is False and current["enabled"]:
            columns.update(
                enabled=False, disabled_reason="disabled by the customer", disabled_at=_now()
            )
        if enabling:
            columns.update(
                enabled=True,
                disabled_reason=None,
                disabled_at=None,
                failing_since=None,
                consecutive_failures=0,
            )
        async with self.pool.acquire() as conn, conn.transaction():
            row = await repo.update_endpoint(
                conn, caller.tenant_id, caller.mode, endpoint_id, columns
            )
            if row is None:
                raise NotFound("No webhook endpoint with this id.")
            if enabling and await repo.resume_paused(conn, endpoint_id):
                await repo.notify_wake(conn, endpoint_id)
        return endpoint_view(row)

    async def delete(self, caller: TenantScope, endpoint_id: str) -> None:
        async with self.pool.acquire() as conn:
            if not await repo.delete_endpoint(conn, caller.tenant_id, caller.mode, endpoint_id):
                raise NotFound("No webhook endpoint with this id.")
        await self.ctx.secrets.delete(endpoint_id)

    async def rotate_secret(
        self, caller: TenantScope, endpoint_id: str, supplied: str | None
    ) -> dict[str, Any]:
        await self._endpoint(caller, endpoint_id)
        secret = supplied or generate_secret()
        try:
            secret_key(secret)
        except InvalidSecret as exc:
            raise ValidationFailed(details=[{"field": "body.secret", "message": str(exc)}]) from exc
        expires = await self.ctx.secrets.rotate(endpoint_id, secret, _now())
        async with self.pool.acquire() as conn:
            await repo.bump_secret_version(conn, endpoint_id, expires)
        return {"id": endpoint_id, "secret": secret, "previous_secret_expires_at": expires}

    async def send_test(
        self, caller: TenantScope, endpoint_id: str, event_type: str
    ) -> dict[str, Any]:
        endpoint = await self._endpoint(caller, endpoint_id)
        if event_type not in WEBHOOK_EVENT_TYPES:
            raise ValidationFailed(
                details=[{"field": "body.event_type", "message": "not a webhook event type"}]
            )
        msg_id = "msg_" + uuid.uuid4().hex
        payload = webhook_body(
            msg_id, event_type, _now(), sample_data(event_type), endpoint["payload_version"]
        )
        lease = self.settings.webhooks_lease_seconds
        async with self.pool.acquire() as conn:
            await repo.insert_test_delivery(
                conn,
                {
                    "id": msg_id,
                    "endpoint_id": endpoint_id,
                    "tenant_id": caller.tenant_id,
                    "event_type": event_type,
                    "payload": payload,
                    "lease_seconds": lease,
                },
            )
        claim = Claim(
            delivery_id=msg_id,
            endpoint_id=endpoint_id,
            tenant_id=caller.tenant_id,
            event_type=event_type,
            payload=payload,
            seq=0,
            attempts=0,
            cycle_attempts=0,
            trigger="test",
            url=endpoint["url"],
            retry_schedule_ms=endpoint["retry_schedule_ms"],
            secret_version=endpoint["secret_version"],
        )
        attempted_at = _now()
        result = await make_attempt(self.ctx, claim)
        outcome = decide(self.settings, claim, result, attempted_at)
        await persist_outcomes(self.pool, self.settings, [outcome])
        return {
            "delivery_id": msg_id,
            "event_type": event_type,
            "payload": orjson.loads(payload),
            "attempt": _attempt_view(outcome.row),
        }

    async def deliveries(
        self,
        caller: TenantScope,
        endpoint_id: str,
        *,
        status: str | None,
        event_type: str | None,
        created_after: datetime | None,
        created_before: datetime | None,
        params: ListParams,
    ) -> Page[dict[str, Any]]:
        await self._endpoint(caller, endpoint_id)
        rows = await repo.list_deliveries(
            self.pool,
            endpoint_id,
            params,
            status=status,
            event_type=event_type,
            created_after=created_after,
            created_before=created_before,
        )
        return params.page(rows, _delivery_view)

    async def delivery(
        self, caller: TenantScope, endpoint_id: str, delivery_id: str
    ) -> dict[str, Any]:
        await self._endpoint(caller, endpoint_id)
        row = await repo.get_delivery(self.pool, endpoint_id, delivery_id)
        if row is None:
            raise NotFound("No delivery with this id for this endpoint.")
        attempts = await repo.delivery_attempts(self.pool, delivery_id)
        return {
            **_delivery_view(row),
            "payload": orjson.loads(row["payload"]),
            "attempt_log": [dict(a) for a in attempts],
        }

    async def retry(
        self, caller: TenantScope, endpoint_id: str, delivery_id: str
    ) -> dict[str, Any]:
        endpoint = await self._endpoint(caller, endpoint_id)
        if not endpoint["enabled"]:
            raise ApiError(code="webhook_endpoint_disabled")
        async with self.pool.acquire() as conn, conn.transaction():
            restarted = await repo.restart_delivery(conn, endpoint_id, delivery_id, "manual")
            if restarted is None:
                if await repo.get_delivery(self.pool, endpoint_id, delivery_id) is None:
                    raise NotFound("No delivery with this id for this endpoint.")
                raise ApiError(code="webhook_delivery_in_progress")
            await repo.notify_wake(conn, endpoint_id)
        return await self.delivery(caller, endpoint_id, delivery_id)

    async def recover(
        self, caller: TenantScope, endpoint_id: str, since: datetime, until: datetime | None
    ) -> dict[str, Any]:
        endpoint = await self._endpoint(caller, endpoint_id)
        if not endpoint["enabled"]:
            raise ApiError(code="webhook_endpoint_disabled")
        async with self.pool.acquire() as conn, conn.transaction():
            ids = await repo.recover_failed(conn, endpoint_id, since, until)
            if ids:
                await repo.notify_wake(conn, endpoint_id)
        return {"endpoint_id": endpoint_id, "since": since, "until": until,
                "recovered": len(ids), "delivery_ids": ids}  # fmt: skip

    async def stats(self, caller: TenantScope, endpoint_id: str) -> dict[str, Any]:
        endpoint = await self._endpoint(caller, endpoint_id)
        windows = {}
        for name, hours in (("24h", 24), ("7d", 168)):
            s = await repo.endpoint_stats(self.pool, endpoint_id, hours)
            total, ok = s["attempts"], s["succeeded"]
            windows[name] = {
                "attempts": total,
                "deliveries": s["deliveries"],
                "succeeded": ok,
                "failed": total - ok,
                "success_rate": round(ok / total, 4) if total else None,
                "error_rate": round((total - ok) / total, 4) if total else None,
                "avg_response_ms": round(s["avg_ms"], 1) if s["avg_ms"] is not None else None,
                "p95_response_ms": round(s["p95_ms"], 1) if s["p95_ms"] is not None else None,
            }
        day = windows["24h"]
        health = health_of(
            endpoint["enabled"],
            endpoint["disabled_reason"],
            day["attempts"],
            day["succeeded"],
            day["p95_response_ms"],
            endpoint["consecutive_failures"],
        )
        return {"endpoint_id": endpoint_id, "health": health, "enabled": endpoint["enabled"],
                "failing_since": endpoint["failing_since"], **windows}  # fmt: skip


def _attempt_view(row: repo.OutcomeRow) -> dict[str, Any]:
    return {
        "attempt": row.attempt,
        "attempted_at": row.attempted_at,
        "succeeded": row.succeeded,
        "status_code": row.status_code,
        "response_ms": row.response_ms,
        "response_body": row.response_body,
        "error": row.error,
    }


def _schedule_ms(schedule: Sequence[float] | None) -> list[int] | None:
    return [round(s * 1000) for s in schedule] if schedule is not None else None


def _now() -> datetime:
    return datetime.now(UTC)
