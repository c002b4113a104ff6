"""Domain logic of delivery: one send pipeline from accept to provider, and every later fact
about a message (tracking, ESP webhooks, the inbox's replies and bounces, suppression).

Accept (API single/bulk, `email.requested` consumer) → messages `queued` + outbox
`email.queued` facts and private `SendBatch` commands (`commands.py`; a delayed chunk's
scheduled for when it is due) in one transaction → a worker claims the messages
(`sending`, leased), checks suppression and daily caps, renders, routes (tenant rules,
defaults, circuit-breaker failover, sandbox for test mode), takes provider tokens, records
`call_started_at` (committed) BEFORE the provider call and the outcome AFTER it. Retryable
answers go back to `queued` with the provider's backoff and a `SendBatch` scheduled for
then; permanent ones fail the message. Every send starts from a `SendBatch`: one path.

At most once per attempt decision: a claim whose worker vanished before `call_started_at`
is requeued; one that vanished after it is failed as `provider_outcome_unknown`, never
resent. Remaining window: killed between committing `call_started_at` and the request
leaving the host, such a message was never sent yet is reported failed (not silently).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import redis.asyncio as aioredis
import uuid_utils
from prometheus_client import Counter

from libs.common import outbox
from libs.common.commands import make_command
from libs.common.emails import format_address
from libs.common.events import (
    EmailBounced,
    EmailClicked,
    EmailComplained,
    EmailDelivered,
    EmailFailed,
    EmailOpened,
    EmailQueued,
    EmailReplied,
    EmailRequested,
    EmailSent,
    EmailUnsubscribed,
    Envelope,
    EventData,
    InboxFeedbackReceived,
    SendingSettingsUpdated,
    TenantCreated,
    TenantPlanChanged,
    make_event,
    stamp_events,
)
from libs.common.http import ApiError, NotFound, dependency_unavailable, register_error_code
from libs.common.pagination import ListParams, Page
from libs.common.plans import DEFAULT_PLAN, limits_for, plan_change_allowed
from libs.common.templating import (
    LIMIT_ERROR_CODE,
    LIMIT_ERROR_MEANING,
    TemplatePool,
    TemplateProblem,
)
from libs.common.tenancy import Mode, TenantScope
from libs.common.vault import Vault, VaultError, VaultSecretNotFound
from services.delivery import repository as repo
from services.delivery.commands import SendBatch
from services.delivery.connectors.base import (
    Connector,
    NormalizedEvent,
    OutgoingEmail,
    SendResult,
    WebhookRejected,
    WebhookRequest,
)
from services.delivery.connectors.registry import PROVIDERS, build_connector
from services.delivery.connectors.replies import message_id_for
from services.delivery.connectors.sandbox import SandboxConnector
from services.delivery.content import (
    Content,
    ContentError,
    ContentLimitExceeded,
    MessageSpec,
    Renderer,
    check_template,
    content_error,
)
from services.delivery.credentials import CredentialStore
from services.delivery.domains.service import DomainService
from services.delivery.schemas import (
    RoutingRuleIn,
    SendBulkRequest,
    SendEmailRequest,
    SendingCapIn,
    SendingSettingsIn,
)
from services.delivery.settings import DeliverySettings
from services.delivery.throttle import CircuitBreaker, DailyCaps, TokenBucket
from services.delivery.tracking import InvalidToken, Kind, TokenSigner, TrackingThrottle

log = logging.getLogger(__name__)
SOURCE = "/services/delivery"
QUOTA = Counter(
    "pm_delivery_daily_quota_total",
    "Sends beyond a tenant's daily quota: refused (API), deferred or refused (campaign steps)",
    ["outcome"],
)

register_error_code("invalid_tracking_token", 404, "The tracking or unsubscribe link is not valid.")
register_error_code(
    "webhook_signature_invalid", 401, "The ESP webhook's signature or credentials are wrong."
)
register_error_code("unknown_provider", 404, "No ESP connector has this name.")
register_error_code("template_invalid", 422, "The subject or body is not a valid template.")
register_error_code(LIMIT_ERROR_CODE, 422, LIMIT_ERROR_MEANING)
# Rendering a claimed batch stops after this; what is left goes back to the queue (a template
# at its time limit costs seconds per message, and the claim's lease must not run out).
RENDER_BATCH_SECONDS = 10.0
register_error_code(
    "sender_required",
    422,
    "A live send without `from` needs the tenant's `default_from` (PUT /api/v1/sending/settings).",
)

# What a test-mode send without `from` and without a default sender is sent as (documented in
# docs/sending.md). Test mode never leaves the sandbox, so no domain has to be verified.
SANDBOX_SENDER = "PenguinMails Sandbox <sandbox@sandbox.penguinmails.com>"


class TemplateInvalid(ApiError):
    code = "template_invalid"


class TemplateLimit(ApiError):
    code = LIMIT_ERROR_CODE


class SenderRequired(ApiError):
    code = "sender_required"


register_error_code(
    "campaign_not_found",
    404,
    "send-bulk names a campaign_id this tenant (in this mode) has no campaign with.",
)


register_error_code(
    "daily_send_quota_exceeded",
    429,
    "The tenant's plan allows no more emails today (UTC); the quota resets at midnight UTC.",
)


class DailyQuotaExceeded(ApiError):
    code = "daily_send_quota_exceeded"


@dataclass(frozen=True)
class QuotaState:
    """A tenant's daily send quota after an accept: the `X-Daily-Quota-*` headers."""

    limit: int
    remaining: int
    reset: int  # Unix seconds of the next UTC midnight

    def headers(self) -> dict[str, str]:
        return {
            "X-Daily-Quota-Limit": str(self.limit),
            "X-Daily-Quota-Remaining": str(self.remaining),
            "X-Daily-Quota-Reset": str(self.reset),
        }


def _next_midnight(at: datetime) -> datetime:
    day = at.astimezone(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# Where a principal's plan fills in a tenant the plan read model has not seen: older than any
# event, so `tenant.created` / `tenant.plan_changed` always win.
_PRINCIPAL_PLAN_TIME = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidTokenError(ApiError):
    code = "invalid_tracking_token"


class WebhookUnauthorized(ApiError):
    code = "webhook_signature_invalid"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid_utils.uuid7().hex}"


@dataclass(frozen=True)
class Recipient:
    to: str
    variables: dict[str, Any]
    contact_id: str | None = None
    request_id: str | None = None
    campaign_id: str | None = None
    step: int | None = None
    # The contact's tags when the sender knows them (campaign sends); else the read model's.
    contact_tags: list[str] | None = None


@dataclass(frozen=True)
class SendOptions:
    scope: TenantScope
    category: str
    tags: list[str]
    metadata: dict[str, str]
    track_opens: bool
    track_clicks: bool


def _event(data: EventData, scope: TenantScope, subject: str | None = None) -> Envelope:
    return make_event(
        data, tenant_id=scope.tenant_id, source=SOURCE, subject=subject, mode=scope.mode
    )


def _scope(row: asyncpg.Record) -> TenantScope:
    """The scope of a message row (tracking links and ESP events carry no tenant)."""
    return TenantScope(row["tenant_id"], row["mode"])


def queued_events(
    scope: TenantScope, rows: Sequence[repo.MessageRow], at: datetime
) -> Iterator[dict[str, Any]]:
    """One `email.queued` per message row, stamped from one template (`stamp_events`): a
    bulk send writes 10,000 in its accept transaction."""
    template = _event(EmailQueued(message_id="-", to="-", occurred_at=at), scope)
    return stamp_events(
        template,
        (
            (
                row.id,
                {
                    "message_id": row.id,
                    "to": row.to_email,
                    "campaign_id": row.campaign_id,
                    "contact_id": row.contact_id,
                    "step": row.step,
                    "contact_tags": list(row.contact_tags),
                },
            )
            for row in rows
        ),
    )


async def schedule_sends(
    conn: asyncpg.Connection,
    scope: TenantScope,
    items: Sequence[tuple[Sequence[str], datetime | None]],
    batch_id: str | None = None,
) -> None:
    """One `SendBatch` command per `(message_ids, not_before)` (None: now), in the caller's
    transaction: the worker sends them once the relay publishes them, when due."""
    await outbox.enqueue_commands(
        conn,
        SendBatch.queue,
        (
            (
                make_command(
                    SendBatch(message_ids=list(ids), batch_id=batch_id),
                    tenant_id=scope.tenant_id,
                    source=SOURCE,
                    subject=batch_id,
                    mode=scope.mode,
                ),
                not_before,
            )
            for ids, not_before in items
            if ids
        ),
    )


def _email_fields(row: Any, **extra: Any) -> dict[str, Any]:
    return {
        "message_id": row["id"],
        "to": row["to_email"],
        "campaign_id": row["campaign_id"],
        "contact_id": row["contact_id"],
        "step": row["step"],
        "contact_tags": list(row["contact_tags"] or ()),
        **extra,
    }


class DeliveryService:
    def __init__(
        self,
        settings: DeliverySettings,
        pool: asyncpg.Pool,
        redis: aioredis.Redis | None,
        vault: Vault | None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        self.client = client or httpx.AsyncClient(timeout=settings.provider_timeout_seconds)
        self.signer = TokenSigner(settings.tracking_signing_key.get_secret_value())
        self.renderer = Renderer(
            self.signer,
            settings.tracking_base_url,
            settings.reply_token_key.get_secret_value(),
            settings.reply_domain,
        )
        self.render_pool = TemplatePool()
        self.tracking_throttle = (
            TrackingThrottle(
                redis,
                per_token=settings.tracking_rate_per_token,
                per_address=settings.tracking_rate_per_address,
                window_seconds=settings.tracking_rate_window_seconds,
                open_window_seconds=settings.tracking_open_window_seconds,
            )
            if redis is not None
            else None
        )
        self.credentials = CredentialStore(
            vault,
            settings.esp_credentials_path,
            settings.tenant_credentials_path,
            settings.credentials_cache_seconds,
        )
        force = settings.force_sandbox
        self.force_sandbox = settings.environment == "dev" if force is None else force
        self.domains = DomainService(settings, pool, vault)
        self._plans_known: set[str] = set()
        self._send_slots = asyncio.Semaphore(settings.send_concurrency)

    async def close(self) -> None:
        await self.client.aclose()
        await self.render_pool.close()

    # ------------------------------------------------------------ accepting

    async def send_single(
        self, scope: TenantScope, req: SendEmailRequest, plan: str = DEFAULT_PLAN
    ) -> tuple[str, QuotaState | None]:
        content, options = await self._accepted_content(scope, req)
        recipient = Recipient(
            str(req.to), req.variables, req.contact_id, campaign_id=req.campaign_id
        )
        async with self.pool.acquire() as conn, conn.transaction():
            ids, now = await self._enqueue(conn, content, options, [recipient], None, 1, 0)
            # Counted last: the tenant's counter row stays locked only until the commit.
            quota = await self._charge_quota(conn, scope, plan, len(ids), now)
        return ids[0], quota

    async def send_bulk(
        self, scope: TenantScope, req: SendBulkRequest, plan: str = DEFAULT_PLAN
    ) -> tuple[str, int, int, QuotaState | None]:
        seen: set[str] = set()
        for i, r in enumerate(req.recipients):
            key = str(r.email).lower()
            if key in seen:
                raise ApiError(
                    "Each recipient may appear once per bulk send.",
                    code="validation_error",
                    details=[
                        {"field": f"body.recipients.{i}.email", "message": "duplicate recipient"}
                    ],
                )
            seen.add(key)
        if req.campaign_id and req.html is None and req.text is None:
            req = await self._with_campaign_content(scope, req)
        content, options = await self._accepted_content(scope, req)
        recipients = [
            Recipient(str(r.email), r.personalization, r.contact_id, campaign_id=req.campaign_id)
            for r in req.recipients
        ]
        batch: dict[str, Any] = {
            "id": new_id("bat"),
            "tenant_id": scope.tenant_id,
            "mode": scope.mode,
            "campaign_id": req.campaign_id,
            "total": len(recipients),
            "batch_size": req.batch_size,
            "delay_between_batches": req.delay_between_batches,
        }
        async with self.pool.acquire() as conn, conn.transaction():
            await repo.insert_batch(conn, batch)
            _, now = await self._enqueue(
                conn,
                content,
                options,
                recipients,
                batch["id"],
                req.batch_size,
                req.delay_between_batches,
            )
            # Whole or not at all: a bulk send passing the quota is refused entirely.
            quota = await self._charge_quota(conn, scope, plan, len(recipients), now)
        chunks = -(-len(recipients) // req.batch_size)
        return batch["id"], len(recipients), chunks, quota

    async def _accepted_content(
        self, scope: TenantScope, req: SendEmailRequest | SendBulkRequest
    ) -> tuple[dict[str, Any], SendOptions]:
        """The content row and send options of an API send: its sender (or the default one),
        its content checked as templates, a live sender's domain verified."""
        from_, reply_to = await self._sender(scope, req.from_, req.reply_to)
        content = self._content(
            scope.tenant_id, from_, req.subject or "", req.html, req.text, req.template_id, reply_to
        )
        await self.domains.require_verified_sender(scope, content["from_email"])
        options = SendOptions(
            scope,
            req.category,
            req.tags,
            req.metadata,
            req.tracking.track_opens,
            req.tracking.track_clicks,
        )
        return content, options

    async def accept_requested(
        self, conn: asyncpg.Connection, tenant_id: str, data: EmailRequested
    ) -> str | None:
        """The campaign runner's `email.requested`, in the consumer's inbox transaction."""
        existing = await repo.message_for_request(conn, tenant_id, data.request_id)
        if existing:
            return existing
        from_ = format_address(data.from_name, data.from_) if data.from_name else data.from_
        content = self._content(
            tenant_id,
            from_,
            data.subject or "",
            data.html,
            data.text,
            data.template_id,
            data.reply_to,
            literal=data.prerendered,
        )
        scope = TenantScope(tenant_id, data.mode)
        options = SendOptions(
            scope,
            data.category,
            data.tags,
            data.metadata,
            data.track_opens,
            data.track_clicks,
        )
        recipient = Recipient(
            data.to,
            data.variables,
            data.contact_id,
            data.request_id,
            data.campaign_id,
            data.step,
            # The runner sends the contact's tags as the message's tags.
            list(data.tags) if data.campaign_id and data.contact_id else None,
        )
        ids, _ = await self._enqueue(conn, content, options, [recipient], None, 1, 0)
        if ids:
            await self._charge_campaign_quota(conn, scope, ids[0])
        return ids[0] if ids else None

    # ------------------------------------------------------------ daily send quota

    async def _charge_quota(
        self, conn: asyncpg.Connection, scope: TenantScope, plan: str, n: int, now: datetime
    ) -> QuotaState | None:
        """Count `n` accepted emails on today's (UTC) quota of the principal's plan, or
        refuse the whole accept (429, the transaction rolls back). Test mode counts apart,
        against the same number: sandbox traffic never uses up live sending."""
        await self._learn_principal_plan(conn, scope.tenant_id, plan)
        limit = limits_for(plan).daily_sends
        if limit is None or n == 0:
            return None
        day = now.astimezone(UTC).date()
        reset = _next_midnight(now)
        count = await repo.take_daily_sends(conn, scope, day, n, limit)
        if count is None:
            left = max(0, limit - await repo.daily_sends(conn, scope, day))
            wait = max(1, math.ceil((reset - now).total_seconds()))
            QUOTA.labels("refused").inc()
            raise DailyQuotaExceeded(
                f"The {plan} plan allows {limit:,} emails per day; {left:,} left today"
                f" and this send has {n:,}. The quota resets at midnight UTC.",
                details=[
                    {
                        "field": "daily_sends",
                        "message": f"limit {limit}, remaining {left}, requested {n}",
                    }
                ],
                headers={
                    **QuotaState(limit, left, int(reset.timestamp())).headers(),
                    "Retry-After": str(wait),
                },
            )
        return QuotaState(limit, limit - count, int(reset.timestamp()))

    async def _learn_principal_plan(
        self, conn: asyncpg.Connection, tenant_id: str, plan: str
    ) -> None:
        """A tenant the plan read model has not met yet (created before delivery kept it)
        gets the plan the gateway signed, until an event says otherwise."""
        if tenant_id in self._plans_known:
            return
        await repo.learn_tenant_plan(
            conn, tenant_id, plan, _PRINCIPAL_PLAN_TIME, only_if_unknown=True
        )
        if len(self._plans_known) > 100_000:
            self._plans_known.clear()
        self._plans_known.add(tenant_id)

    async def _charge_campaign_quota(
        self, conn: asyncpg.Connection, scope: TenantScope, message_id: str
    ) -> None:
        """A campaign step (no principal: the plan read model's plan). Beyond today's quota
        it is deferred, visibly (`queued`, `last_error` daily_send_quota_exceeded, due at
        the UTC midnight of the first day with room, counted on that day); with no room in
        `quota_defer_days` the request is refused (dead-lettered, replayable)."""
        plan = await repo.tenant_plan(conn, scope.tenant_id) or DEFAULT_PLAN
        limit = limits_for(plan).daily_sends
        if limit is None:
            return
        now = await repo.transaction_time(conn)
        today = now.astimezone(UTC).date()
        if await repo.take_daily_sends(conn, scope, today, 1, limit) is not None:
            return
        horizon = self.settings.quota_defer_days
        for _ in range(3):  # a concurrent accept may fill the day found first
            day = await repo.first_day_with_room(
                conn, scope, today + timedelta(days=1), horizon, 1, limit
            )
            if day is None:
                break
            if await repo.take_daily_sends(conn, scope, day, 1, limit) is not None:
                due = datetime(day.year, day.month, day.day, tzinfo=UTC)
                await repo.defer_message(conn, message_id, due, "daily_send_quota_exceeded")
                QUOTA.labels("deferred").inc()
                return
        QUOTA.labels("campaign_refused").inc()
        raise DailyQuotaExceeded(
            f"The {plan} plan's daily send quota ({limit:,}) is used up for the next"
            f" {horizon + 1} days."
        )

    async def learn_plan(self, conn: asyncpg.Connection, event: Envelope) -> None:
        """Keep the plan read model (`tenant.created` from keys, `tenant.plan_changed` from
        keys or billing; any other producer is ignored)."""
        data = event.payload()
        if isinstance(data, TenantCreated):
            plan = data.plan
            allowed = event.source == "/services/keys"
        else:
            assert isinstance(data, TenantPlanChanged)
            plan = data.new_plan
            allowed = plan_change_allowed(event.source, plan)
        if not allowed:
            log.warning(
                "plan event from an unexpected producer ignored",
                extra={"source": event.source, "event_type": event.type},
            )
            return
        await repo.learn_tenant_plan(conn, event.tenant_id, plan, event.time)

    async def _with_campaign_content(
        self, scope: TenantScope, req: SendBulkRequest
    ) -> SendBulkRequest:
        """The bulk request with the campaign's content (read model of campaign.created /
        campaign.updated) filled in where the body gave nothing."""
        assert req.campaign_id is not None
        async with self.pool.acquire() as conn:
            row = await repo.campaign_content(conn, scope, req.campaign_id)
        if row is None:
            raise NotFound(
                "No campaign with this id.",
                code="campaign_not_found",
                details=[{"field": "body.campaign_id", "message": "no such campaign"}],
            )
        given = req.model_fields_set
        from_ = req.from_
        if from_ is None and row["from_email"]:
            name = row["from_name"]
            from_ = f"{name} <{row['from_email']}>" if name else row["from_email"]
        changes: dict[str, Any] = {
            "subject": req.subject or row["subject"],
            "html": row["html"],
            "text": row["text_body"],
            "from_": from_,
            "reply_to": req.reply_to or row["reply_to"],
        }
        if "tracking" not in given:
            changes["tracking"] = req.tracking.model_copy(
                update={"track_opens": row["track_opens"], "track_clicks": row["track_clicks"]}
            )
        if "category" not in given:
            changes["category"] = row["category"]
        if not changes["subject"]:
            raise ApiError(
                code="validation_error",
                details=[{"field": "body.subject", "message": "the campaign has no subject"}],
            )
        return req.model_copy(update=changes)

    async def learn_campaign(
        self, conn: asyncpg.Connection, event: Envelope, data: dict[str, Any]
    ) -> None:
        """Keep the campaign-content read model (campaign.created / campaign.updated)."""
        await repo.apply_campaign_content(conn, TenantScope.of(event), data, event.time)

    async def batch_report(self, scope: TenantScope, batch_id: str) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            row = await repo.get_batch(conn, scope, batch_id)
            if row is None:
                raise NotFound("No bulk send with this id.")
            counts = await repo.batch_status_counts(conn, batch_id)
        return {**dict(row), "counts": counts}

    # ------------------------------------------------------------ sender settings

    async def _sender(
        self, scope: TenantScope, from_: str | None, reply_to: str | None
    ) -> tuple[str, str | None]:
        """The sender of a send: its own `from`, else the tenant's default, else (test mode)
        the sandbox sender; a live send with neither is refused (before any other check)."""
        if from_ is not None:
            return str(from_), reply_to
        async with self.pool.acquire() as conn:
            row = await repo.sending_settings(conn, scope)
        effective = _effective_from(row, scope.mode)
        if effective is None:
            raise SenderRequired(
                "This send has no `from` and the tenant has no default sender.",
                details=[
                    {
                        "field": "default_from",
                        "message": "set it with PUT /api/v1/sending/settings, or send `from`",
                    }
                ],
            )
        default_reply_to = row["default_reply_to"] if row is not None else None
        return effective, reply_to or default_reply_to

    async def get_sending_settings(self, scope: TenantScope) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            row = await repo.sending_settings(conn, scope)
        return _settings_out(row, scope.mode)

    async def put_sending_settings(
        self, scope: TenantScope, values: SendingSettingsIn
    ) -> dict[str, Any]:
        data = values.model_dump(mode="json")
        if data.get("default_from"):
            # A live default sender must be at a verified domain, as every live send is.
            await self.domains.require_verified_sender(scope, data["default_from"])
        async with self.pool.acquire() as conn, conn.transaction():
            row = await repo.put_sending_settings(conn, scope, data)
            await outbox.enqueue(
                conn,
                _event(SendingSettingsUpdated(**data), scope, "sending/settings"),
            )
        return _settings_out(row, scope.mode)

    def _content(
        self,
        tenant_id: str,
        from_: str,
        subject: str,
        html: str | None,
        text: str | None,
        template_id: str | None,
        reply_to: str | None,
        literal: bool = False,
    ) -> dict[str, Any]:
        """The content row; `literal` content (already personalised by its producer) is sent
        verbatim, so it is not a template and is not checked as one."""
        for field, source in (
            () if literal else (("subject", subject), ("html", html), ("text", text))
        ):
            try:
                check_template(source, field)
            except ContentLimitExceeded as exc:
                raise TemplateLimit(
                    "The content exceeds a template limit.",
                    details=[{"field": f"body.{field}", "message": str(exc)}],
                ) from exc
            except ContentError as exc:
                raise TemplateInvalid(
                    "The content is not a valid template.",
                    details=[{"field": f"body.{field}", "message": str(exc)}],
                ) from exc
        return {
            "id": new_id("cnt"),
            "tenant_id": tenant_id,
            "from_email": str(from_),
            "subject": subject,
            "html": html,
            "text_body": text,
            "template_id": template_id,
            "reply_to": str(reply_to) if reply_to else None,
            "literal": literal,
        }

    async def _enqueue(
        self,
        conn: asyncpg.Connection,
        content: dict[str, Any],
        o: SendOptions,
        recipients: Sequence[Recipient],
        batch_id: str | None,
        chunk_size: int,
        delay: int,
    ) -> tuple[list[str], datetime]:
        """The messages' ids (none: the request was accepted before) and the transaction's
        time. An express send's accept is on its latency path: what it reads is one round
        trip (`repo.accept_context`), a single message one INSERT."""
        await repo.insert_content(conn, content)
        # Express for a small send due now from a tenant with a small backlog (a tenant
        # sending a flood of single emails fills its backlog and moves to the bulk lane, so
        # the express lane stays small); bulk for the rest.
        small = not delay and len(recipients) <= self.settings.express_max_recipients
        unknown = [r.to for r in recipients if r.contact_tags is None]
        # The transaction's timestamp is every message's `created_at`: a message due exactly
        # then is its work item's job; the sweeper takes it only if that is long overdue.
        now, backlogged, known_tags = await repo.accept_context(
            conn, o.scope, self.settings.express_max_backlog if small else None, unknown
        )
        lane: repo.Lane = "express" if small and not backlogged else "bulk"
        rows: list[repo.MessageRow] = []
        for i, r in enumerate(recipients):
            due = now + timedelta(seconds=delay * (i // chunk_size)) if delay else now
            rows.append(
                repo.MessageRow(
                    id=new_id("msg"),
                    tenant_id=o.scope.tenant_id,
                    mode=o.scope.mode,
                    content_id=content["id"],
                    batch_id=batch_id,
                    request_id=r.request_id,
                    campaign_id=r.campaign_id,
                    contact_id=r.contact_id,
                    step=r.step,
                    to_email=r.to,
                    variables=r.variables,
                    category=o.category,
                    tags=o.tags,
                    metadata=o.metadata,
                    track_opens=o.track_opens,
                    track_clicks=o.track_clicks,
                    status="queued",
                    next_attempt_at=due,
                    contact_tags=r.contact_tags
                    if r.contact_tags is not None
                    else known_tags.get(r.to.lower(), []),
                    lane=lane,
                )
            )
        if len(rows) == 1:  # one round trip (a COPY is two)
            if not await repo.insert_message(conn, rows[0]):
                return [], now
        else:
            await repo.copy_messages(conn, rows)
        ids = [row.id for row in rows]
        if lane == "express":
            # The express process claims them once this commits (NOTIFY); their SendBatch is
            # the bulk lane's takeover, should they still wait by then.
            await repo.wake_express(conn, ids)
            takeover = now + timedelta(seconds=self.settings.express_takeover_seconds)
            await schedule_sends(conn, o.scope, [(ids, takeover)], batch_id)
        else:
            # One SendBatch per chunk, scheduled for when the chunk is due. Commands go out
            # ahead of every waiting fact (outbox priority): sending starts before the
            # per-message `email.queued` facts of a large bulk send, or of the previous one,
            # are out.
            await schedule_sends(
                conn,
                o.scope,
                [
                    (ids[lo : lo + chunk_size], rows[lo].next_attempt_at if delay and lo else None)
                    for lo in range(0, len(ids), chunk_size)
                ],
                batch_id,
            )
        await outbox.enqueue_copy(conn, queued_events(o.scope, rows, now))
        return ids, now

    # ------------------------------------------------------------ sending

    async def dispatch(self, message_ids: Sequence[str]) -> int:
        """One `SendBatch` command: claim fairly across tenants, not just the
        listed messages (a large bulk's items ahead in the queue must not hold back another
        tenant's message: whichever item runs next claims it), and claim again while any
        listed message still waits. Each round claims at least one message, or stops."""
        sent = 0
        while True:
            # Claim only when a send slot is free: what waits stays in Postgres, where the
            # next claim orders it fairly, not in this process behind other batches.
            async with self._send_slots:
                async with self.pool.acquire() as conn:
                    rows = await repo.claim_fair(
                        conn,
                        self.settings.claim_limit,
                        self.settings.send_lease_seconds,
                        alone=self.settings.claim_limit_alone,
                        express_after=self.settings.express_takeover_seconds,
                    )
                if not rows:
                    return sent
                sent += len(rows)
                await self._send_claimed(rows)
            async with self.pool.acquire() as conn:
                if not await repo.waiting_among(conn, message_ids):
                    return sent

    async def send_express(self, message_ids: Sequence[str] | None = None) -> int:
        """One round of the express lane (`python -m services.delivery express`): claim the
        listed express messages (a NOTIFY's) or, without a list, any due express messages
        fairly across tenants (the lane's poll: retries, requeued claims), and send them.
        Returns how many it claimed. No bulk batch ever shares this process: a small send
        waits for nothing but itself."""
        lease = self.settings.send_lease_seconds
        async with self.pool.acquire() as conn:
            if message_ids is not None:
                rows = await repo.claim_listed(conn, message_ids, lease)
            else:
                rows = await repo.claim_express(conn, self.settings.express_claim_limit, lease)
        if rows:
            await self._send_claimed(rows)
        return len(rows)

    async def sweep(self, limit: int = 500) -> int:
        """Claims of vanished workers, and (a backstop) messages long overdue whose
        `SendBatch` was dead-lettered: retries and delayed chunks have their own command."""
        async with self.pool.acquire() as conn:
            async with conn.transaction():
                requeued: dict[TenantScope, list[str]] = defaultdict(list)
                for r in await repo.requeue_unsent_stale(conn):
                    requeued[_scope(r)].append(r["id"])
                for scope, ids in requeued.items():
                    await schedule_sends(
                        conn,
                        scope,
                        [(ids[lo : lo + 1000], None) for lo in range(0, len(ids), 1000)],
                    )
            async with conn.transaction():
                uncertain = await repo.fail_uncertain_stale(conn)
                if uncertain:
                    now = datetime.now(UTC)
                    await repo.copy_timeline(
                        conn,
                        [
                            repo.TimelineRow(
                                message_id=r["id"],
                                tenant_id=r["tenant_id"],
                                status="failed",
                                provider=r["provider"],
                                provider_message_id=None,
                                detail={"reason": "provider_outcome_unknown"},
                                occurred_at=now,
                            )
                            for r in uncertain
                        ],
                    )
                    await outbox.enqueue_many(
                        conn,
                        [
                            _event(
                                EmailFailed(
                                    **_email_fields(
                                        r,
                                        provider=r["provider"],
                                        reason="provider_outcome_unknown",
                                        occurred_at=now,
                                    )
                                ),
                                _scope(r),
                                r["id"],
                            )
                            for r in uncertain
                        ],
                    )
        async with self._send_slots:
            async with self.pool.acquire() as conn:
                rows = await repo.claim_due(
                    conn,
                    limit,
                    self.settings.send_lease_seconds,
                    self.settings.sweep_grace_seconds,
                )
            if rows:
                await self._send_claimed(rows)
        return len(rows)

    async def _send_claimed(self, rows: Sequence[asyncpg.Record]) -> None:
        by_tenant: dict[str, list[asyncpg.Record]] = defaultdict(list)
        for r in rows:
            by_tenant[r["tenant_id"]].append(r)
        # Fewest first: a tenant's single message is not sent after another's 499.
        for tenant_id, tenant_rows in sorted(by_tenant.items(), key=lambda kv: len(kv[1])):
            try:
                await self._send_tenant(tenant_id, tenant_rows)
            except Exception as exc:
                # Back to the queue with the error kept: never stuck in `sending`.
                log.exception("send failed unexpectedly", extra={"tenant_id": tenant_id})
                # One of our own dependencies down (Redis, Vault, Postgres) is no send attempt:
                # not counted, and retried soon, not on the provider backoff (found by `make
                # chaos`: every claim during a Redis or OpenBao restart doubled the delay, and
                # messages waited up to `retry_max_seconds` after the outage had ended).
                outage = dependency_unavailable(exc) or (
                    isinstance(exc, VaultError) and not isinstance(exc, VaultSecretNotFound)
                )
                # Only claims whose provider call had not started go back to the queue; the
                # others stay leased and are settled as outcome unknown (never resent).
                await self._settle(
                    tenant_id,
                    None,
                    retry=[
                        (
                            r,
                            self._dependency_backoff()
                            if outage
                            else self._backoff(None, r["attempts"], None),
                            f"internal: {type(exc).__name__}",
                        )
                        for r in tenant_rows
                    ],
                    count_attempt=not outage,
                    unstarted_only=True,
                )

    async def _send_tenant(self, tenant_id: str, rows: list[asyncpg.Record]) -> None:
        async with self.pool.acquire() as conn:
            suppressed, rules, caps, stored = await repo.send_policy(
                conn, tenant_id, [r["to_email"] for r in rows], [r["content_id"] for r in rows]
            )
        # One Content per stored content: its messages share it (and its slot template's cache
        # entry, `content._slot_content`).
        contents = {cid: Content(cid, *c) for cid, c in stored.items()}
        failed = [
            (r, f"suppressed: {suppressed[r['to_email'].lower()]}")
            for r in rows
            if r["to_email"].lower() in suppressed
        ]
        rows = [r for r in rows if r["to_email"].lower() not in suppressed]
        rows, deferred = await self._apply_caps(tenant_id, rows, caps, contents)
        rendered, not_rendered = await self._render_rows(rows, contents, failed)
        if failed or deferred or not_rendered:
            tomorrow = _seconds_to_next_utc_day()
            await self._settle(
                tenant_id,
                None,
                failed=failed,
                retry=[(r, tomorrow, "daily_cap_reached") for r in deferred]
                + [(r, 1.0, "render_deferred") for r in not_rendered],
                count_attempt=False,
            )
        routes: dict[tuple[str, str | None], list[tuple[asyncpg.Record, OutgoingEmail]]] = (
            defaultdict(list)
        )
        for r, m in rendered:
            routes[self._route(r, m, rules)].append((r, m))
        for (primary, secondary), items in routes.items():
            await self._send_routed(tenant_id, primary, secondary, items)

    async def _apply_caps(
        self,
        tenant_id: str,
        rows: list[asyncpg.Record],
        caps: Sequence[Mapping[str, Any]],
        contents: Mapping[str, Content],
    ) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        if not caps or self.redis is None:
            return rows, []
        daily = DailyCaps(self.redis)
        limits = {(c["scope"], c["value"]): c["daily_limit"] for c in caps}
        ok: list[asyncpg.Record] = []
        deferred: list[asyncpg.Record] = []
        for r in rows:
            mailbox = _address(contents[r["content_id"]].from_email)
            checks = [
                (s, v)
                for s, v in (("mailbox", mailbox), ("domain", mailbox.rpartition("@")[2]))
                if (s, v) in limits
            ]
            taken: list[tuple[str, str]] = []
            for scope, value in checks:
                if await daily.take(tenant_id, scope, value, 1, limits[(scope, value)]):
                    taken.append((scope, value))
                else:
                    for s, v in taken:
                        await daily.give_back(tenant_id, s, v, 1)
                    deferred.append(r)
                    break
            else:
                ok.append(r)
        return ok, deferred

    async def _render_rows(
        self,
        rows: list[asyncpg.Record],
        contents: Mapping[str, Content],
        failed: list[tuple[asyncpg.Record, str]],
    ) -> tuple[list[tuple[asyncpg.Record, OutgoingEmail]], list[asyncpg.Record]]:
        """Render every row (templates in one pool call); a row whose template fails or hits
        a limit goes to `failed` alone. Also returns rows not reached in time."""
        specs = [(contents[r["content_id"]], self._spec(r)) for r in rows]
        jobs = [(i, j) for i, (c, m) in enumerate(specs) if (j := Renderer.job(c, m)) is not None]
        results = await self.render_pool.render(
            [j for _, j in jobs], deadline=time.monotonic() + RENDER_BATCH_SECONDS
        )
        by_row = {i: res for (i, _), res in zip(jobs, results, strict=True)}
        rendered: list[tuple[asyncpg.Record, OutgoingEmail]] = []
        late: list[asyncpg.Record] = []
        for i, (r, (content, spec)) in enumerate(zip(rows, specs, strict=True)):
            result = by_row.get(i)
            if i in by_row and result is None:
                late.append(r)
                continue
            try:
                if isinstance(result, TemplateProblem):
                    raise content_error(result)
                rendered.append((r, self.renderer.render(content, spec, result)))
            except ContentError as exc:
                failed.append((r, str(exc)))
        return rendered, late

    @staticmethod
    def _spec(r: asyncpg.Record) -> MessageSpec:
        return MessageSpec(
            r["id"],
            r["tenant_id"],
            r["to_email"],
            r["category"],
            r["variables"] or {},
            tuple(r["tags"] or ()),
            r["metadata"] or {},
            r["track_opens"],
            r["track_clicks"],
        )

    def _route(
        self, r: asyncpg.Record, m: OutgoingEmail, rules: Sequence[Mapping[str, Any]]
    ) -> tuple[str, str | None]:
        if r["mode"] == "test" or self.force_sandbox:
            return "sandbox", None
        for rule in rules:
            if rule["category"] and rule["category"] != r["category"]:
                continue
            if rule["sending_domain"] and rule["sending_domain"].lower() != m.from_domain:
                continue
            return rule["primary_provider"], rule["secondary_provider"]
        default = self.settings.default_routes.get(r["category"]) or ["postmark"]
        return default[0], (default[1] if len(default) > 1 else None)

    async def _connector(self, provider: str, tenant_id: str) -> tuple[Connector, str]:
        owner, creds = (
            ("platform", {})
            if provider == "sandbox"
            else (await self.credentials.get(provider, tenant_id))
        )
        return build_connector(provider, creds, self.client, self.settings), owner

    def _breaker(self, provider: str, owner: str) -> CircuitBreaker | None:
        if self.redis is None or provider == "sandbox":
            return None
        return CircuitBreaker(
            self.redis,
            f"{provider}:{owner}",
            self.settings.circuit_failure_threshold,
            self.settings.circuit_open_seconds,
        )

    async def _send_routed(
        self,
        tenant_id: str,
        primary: str,
        secondary: str | None,
        items: list[tuple[asyncpg.Record, OutgoingEmail]],
    ) -> None:
        chosen: tuple[Connector, CircuitBreaker | None] | None = None
        for provider in (primary, secondary):
            if provider is None:
                continue
            connector, owner = await self._connector(provider, tenant_id)
            breaker = self._breaker(provider, owner)
            if breaker is None or await breaker.allow():
                chosen = (connector, breaker)
                break
        if chosen is None:
            wait = self.settings.circuit_open_seconds
            await self._settle(
                tenant_id,
                None,
                retry=[
                    (r, wait, f"circuit_open: {primary}" + (f", {secondary}" if secondary else ""))
                    for r, _ in items
                ],
                count_attempt=False,
            )
            return
        connector, breaker = chosen
        limit = connector.batch_limit
        rate = self.settings.provider_limits.get(connector.id)
        bucket = (
            TokenBucket(self.redis, connector.id, rate[0], rate[1])
            if rate and self.redis is not None and connector.id != "sandbox"
            else None
        )
        if bucket is not None:
            limit = min(limit, int(bucket.burst))
        for start in range(0, len(items), limit):
            part = items[start : start + limit]
            if bucket is not None:
                await bucket.acquire(len(part))
            await self._call(tenant_id, connector, breaker, part)

    async def _call(
        self,
        tenant_id: str,
        connector: Connector,
        breaker: CircuitBreaker | None,
        items: list[tuple[asyncpg.Record, OutgoingEmail]],
    ) -> None:
        ids = [r["id"] for r, _ in items]
        if connector.id == "smtp":  # the other providers sign with the key they hold
            items = [
                (r, dataclasses.replace(m, dkim=await self.domains.signer_for(tenant_id, m.from_)))
                for r, m in items
            ]
        async with self.pool.acquire() as conn:
            await repo.mark_call_started(conn, ids, connector.id)
        try:
            results = await connector.execute_action("send", {"messages": [m for _, m in items]})
        except Exception as exc:  # a connector bug must not strand the claim
            log.exception("connector raised", extra={"provider": connector.id})
            results = [
                SendResult(i, "retryable", reason=f"connector: {type(exc).__name__}") for i in ids
            ]
        by_id = {res.message_id: res for res in results}
        accepted, failed, retry = [], [], []
        unknown = False
        for r, m in items:
            res = by_id.get(r["id"]) or SendResult(r["id"], "retryable", reason="no result")
            if res.outcome == "accepted":
                accepted.append((r, m, res))
            elif (
                res.outcome in ("permanent", "unknown")
                or r["attempts"] >= self.settings.max_attempts
            ):
                failed.append((r, res.reason or "failed"))
                unknown = unknown or res.outcome == "unknown"
            else:
                delay = self._backoff(connector.id, r["attempts"], res.retry_after)
                retry.append((r, delay, res.reason or "retryable"))
        # The outcome is committed before anything else may fail: an error after the
        # provider answered must not put accepted messages back in the queue.
        await self._settle(tenant_id, connector, accepted=accepted, failed=failed, retry=retry)
        if breaker is not None:
            try:
                if accepted or not (retry or unknown):
                    await breaker.record_success()
                elif await breaker.record_failure():
                    log.warning("circuit opened", extra={"provider": connector.id})
            except Exception:  # the circuit's bookkeeping is advisory; the send is settled
                log.warning("circuit state not updated", extra={"provider": connector.id})

    def _dependency_backoff(self) -> float:
        """The wait before claiming again after a dependency of ours was down (jittered)."""
        return self.settings.dependency_retry_seconds * (1 + random.random() * 0.5)

    def _backoff(self, provider: str | None, attempt: int, retry_after: float | None) -> float:
        s = self.settings
        strategy = s.retry_strategies.get(provider or "", "exponential")
        n = max(1, attempt)
        base = s.retry_base_seconds * (n if strategy == "linear" else 2 ** (n - 1))
        delay = min(s.retry_max_seconds, max(base, retry_after or 0.0))
        return delay * (1 + random.random() * 0.1)  # jitter: workers do not retry in step

    async def _settle(
        self,
        tenant_id: str,
        connector: Connector | None,
        *,
        accepted: Sequence[tuple[asyncpg.Record, OutgoingEmail, SendResult]] = (),
        failed: Sequence[tuple[asyncpg.Record, str]] = (),
        retry: Sequence[tuple[asyncpg.Record, float, str]] = (),
        count_attempt: bool = True,
        unstarted_only: bool = False,
    ) -> None:
        """Record the outcome of one provider call (or decision) in one transaction."""
        provider = connector.id if connector else None
        now = datetime.now(UTC)
        timeline: list[repo.TimelineRow] = []
        # email.sent / email.failed per message, stamped from one template per mode: a batch
        # settles up to 1,000 messages at once (`stamp_events`, one outbox COPY).
        sent: dict[Mode, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        fails: dict[Mode, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
        simulated: list[NormalizedEvent] = []
        # A sent message's timeline entry is its row (`mark_sent`: `sent_at`), not a
        # `message_events` row: 1,000 inserts and foreign-key checks fewer per provider call.
        for r, m, res in accepted:
            fields = _email_fields(
                r,
                provider_message_id=res.provider_message_id,
                message_id_header=m.headers.get("Message-ID"),
                from_email=m.from_,
                subject=m.subject,
                request_id=r["request_id"],
            )
            sent[r["mode"]].append((r["id"], fields))
            if isinstance(connector, SandboxConnector):
                simulated.append(connector.simulate(m))
        for r, reason in failed:
            timeline.append(
                repo.TimelineRow(
                    r["id"], tenant_id, "failed", provider, None, {"reason": reason}, now
                )
            )
            fails[r["mode"]].append((r["id"], _email_fields(r, reason=reason)))
        events: list[Iterator[dict[str, Any]]] = []
        for mode, items in sent.items():
            template = EmailSent(message_id="-", to="-", provider=provider or "", occurred_at=now)
            events.append(stamp_events(_event(template, TenantScope(tenant_id, mode)), items))
        for mode, items in fails.items():
            failure = EmailFailed(
                message_id="-", to="-", provider=provider, reason="-", occurred_at=now
            )
            events.append(stamp_events(_event(failure, TenantScope(tenant_id, mode)), items))
        async with self.pool.acquire() as conn, conn.transaction():
            if accepted:
                await repo.mark_sent(
                    conn,
                    [r["id"] for r, _, _ in accepted],
                    [res.provider_message_id for _, _, res in accepted],
                    provider or "",
                    now,
                )
            if failed:
                await repo.mark_failed(
                    conn, [r["id"] for r, _ in failed], [reason for _, reason in failed], provider
                )
            if retry:
                await repo.mark_retry(
                    conn,
                    [r["id"] for r, _, _ in retry],
                    [d for _, d, _ in retry],
                    [x for _, _, x in retry],
                    count_attempt=count_attempt,
                    unstarted_only=unstarted_only,
                )
                # Each retry's SendBatch, scheduled for when it is due (whole seconds: the
                # jittered delays of one batch share a few commands).
                at = await repo.transaction_time(conn)
                # An express message's is its bulk-lane takeover: the express process claims
                # it when due (it polls), the workers only if it still waits by then.
                takeover = self.settings.express_takeover_seconds
                due: dict[tuple[int, Mode], list[str]] = defaultdict(list)
                for r, d, _ in retry:
                    later = takeover if r["lane"] == "express" else 0.0
                    due[(math.ceil(d + later), r["mode"])].append(r["id"])
                for (seconds, mode), ids in due.items():
                    await schedule_sends(
                        conn, TenantScope(tenant_id, mode), [(ids, at + timedelta(seconds=seconds))]
                    )
            await repo.copy_timeline(conn, timeline)
            await outbox.enqueue_copy(conn, itertools.chain.from_iterable(events))
            for ev in simulated:
                await self._apply_event(conn, "sandbox", ev)

    # ------------------------------------------------------------ provider events

    async def provider_webhook(self, provider: str, request: WebhookRequest) -> int:
        if provider not in PROVIDERS or provider in ("smtp", "sandbox"):
            raise NotFound(f"No ESP webhook for provider {provider!r}.", code="unknown_provider")
        connector, _ = await self._connector(provider, None)  # type: ignore[arg-type]
        try:
            events = await connector.on_webhook(request)
            await self._refuse_replay(provider, connector, request)
        except WebhookRejected as exc:
            log.warning("esp webhook rejected", extra={"provider": provider, "error": str(exc)})
            raise WebhookUnauthorized("The webhook could not be verified.") from exc
        applied = 0
        async with self.pool.acquire() as conn:
            for ev in events:
                async with conn.transaction():
                    applied += await self._apply_event(conn, provider, ev)
        return applied

    async def _refuse_replay(
        self, provider: str, connector: Connector, request: WebhookRequest
    ) -> None:
        """A verified token seen before (within its tolerance) with another body is a
        replay with altered data: refused. The identical body again is a provider retry."""
        replay = connector.replay_token(request)
        if replay is None or self.redis is None:
            return
        token, seconds = replay
        key = f"pm:delivery:hook-token:{provider}:{hashlib.sha256(token.encode()).hexdigest()}"
        body = hashlib.sha256(request.body).hexdigest()
        if await self.redis.set(key, body, nx=True, ex=seconds):
            return
        seen = await self.redis.get(key)
        if seen is None or (seen.decode() if isinstance(seen, bytes) else seen) != body:
            raise WebhookRejected(f"{provider} webhook: token already used (replay)")

    async def _apply_event(
        self, conn: asyncpg.Connection, provider: str, ev: NormalizedEvent
    ) -> int:
        if not await repo.claim_provider_event(conn, provider, ev.event_key):
            return 0
        row = await repo.message_by_id(conn, ev.message_id) if ev.message_id else None
        if row is None and ev.provider_message_id:
            row = await repo.message_by_provider_id(
                conn, provider, ev.provider_message_id, ev.recipient
            )
        if row is None:
            log.info("esp event for an unknown message", extra={"provider": provider})
            return 0
        occurred = ev.occurred_at or datetime.now(UTC)
        tenant_id = row["tenant_id"]
        detail: dict[str, Any] = {"source": provider}
        data: EventData
        base = _email_fields(row, occurred_at=occurred)
        if ev.status == "delivered":
            data = EmailDelivered(**base, provider=provider)
        elif ev.status == "bounced":
            data = EmailBounced(**base, bounce_type=ev.bounce_type or "soft", reason=ev.reason)
            detail.update(bounce_type=ev.bounce_type, reason=ev.reason)
            if ev.bounce_type == "hard":
                await repo.add_suppression(
                    conn, tenant_id, row["to_email"], "hard_bounce", row["id"]
                )
        elif ev.status == "complained":
            data = EmailComplained(**base, feedback_type=ev.reason)
            await repo.add_suppression(conn, tenant_id, row["to_email"], "complaint", row["id"])
        elif ev.status == "unsubscribed":
            # "inbox": the recipient asked by mail (inbox_feedback.received).
            data = EmailUnsubscribed(**base, method="reply" if provider == "inbox" else "provider")
            await repo.add_suppression(conn, tenant_id, row["to_email"], "unsubscribe", row["id"])
        elif ev.status == "opened":
            opens = await repo.count_open(conn, row["id"])
            data = EmailOpened(**base, unique=opens == 1, open_count=opens)
        elif ev.status == "clicked":
            unique = await repo.count_click(conn, row["id"], ev.url or "")
            data = EmailClicked(**base, url=ev.url or "", unique=unique)
            detail["url"] = ev.url
        else:  # "replied" is the inbox's fact (apply_inbox_event), never a connector's
            return 0
        await repo.copy_timeline(
            conn,
            [
                repo.TimelineRow(
                    message_id=row["id"],
                    tenant_id=tenant_id,
                    status=ev.status,
                    provider=provider,
                    provider_message_id=ev.provider_message_id,
                    detail=detail,
                    occurred_at=occurred,
                )
            ],
        )
        await repo.advance_status(conn, row["id"], ev.status)
        await outbox.enqueue(conn, _event(data, _scope(row), row["id"]))
        return 1

    async def apply_inbox_event(self, conn: asyncpg.Connection, event: Envelope) -> int:
        """The inbox's facts about one of our messages: a human reply (timeline and status;
        the inbox published `email.replied` itself), and a bounce (RFC 3464 DSN) or an
        unsubscribe request that arrived by mail, applied as an ESP report is."""
        data = event.payload()
        if not isinstance(data, EmailReplied | InboxFeedbackReceived):
            return 0
        row = await repo.message_by_id(conn, data.message_id)
        if row is None or row["tenant_id"] != event.tenant_id:
            log.info("inbox event for an unknown message", extra={"type": event.type})
            return 0
        if isinstance(data, EmailReplied):
            key = f"reply:{data.inbox_message_id or event.id}"
            if not await repo.claim_provider_event(conn, "inbox", key):
                return 0
            detail = {"source": "inbox", "thread_id": data.thread_id}
            occurred = data.occurred_at or event.time
            await repo.copy_timeline(
                conn,
                [
                    repo.TimelineRow(
                        row["id"], row["tenant_id"], "replied", "inbox", None, detail, occurred
                    )
                ],
            )
            await repo.advance_status(conn, row["id"], "replied")
            return 1
        ev = NormalizedEvent(
            "bounced" if data.kind == "bounce" else "unsubscribed",
            f"{data.kind}:{data.inbox_message_id}",
            message_id=data.message_id,
            bounce_type=data.bounce_type,
            reason=data.reason,
        )
        return await self._apply_event(conn, "inbox", ev)

    # ------------------------------------------------------------ tracking

    def _verify(self, token: str, kind: Kind) -> tuple[str, str | None]:
        try:
            t = self.signer.verify(token, kind)
        except InvalidToken as exc:
            raise InvalidTokenError("This link is not valid.") from exc
        return t.message_id, t.url

    async def track_open(self, token: str, user_agent: str | None, ip: str | None) -> None:
        message_id, _ = self._verify(token, "o")
        if await self._admitted("o", token, message_id, ip):
            await self._track(message_id, "opened", None, user_agent, ip)

    async def track_click(self, token: str, user_agent: str | None, ip: str | None) -> str:
        message_id, url = self._verify(token, "c")
        assert url is not None
        if await self._admitted("c", token, message_id, ip):
            await self._track(message_id, "clicked", url, user_agent, ip)
        return url

    async def _admitted(self, kind: Kind, token: str, message_id: str, ip: str | None) -> bool:
        # Throttled or coalesced hits still get their pixel/redirect, only no event.
        throttle = self.tracking_throttle
        return throttle is None or await throttle.admit(kind, token, message_id, ip)

    async def _track(
        self, message_id: str, status: str, url: str | None, ua: str | None, ip: str | None
    ) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await repo.message_by_id(conn, message_id)
            if row is None:
                raise InvalidTokenError("This link is not valid.")
            now = datetime.now(UTC)
            base = _email_fields(row, occurred_at=now, user_agent=ua, ip=ip)
            data: EventData
            if status == "opened":
                opens = await repo.count_open(conn, message_id)
                data = EmailOpened(**base, unique=opens == 1, open_count=opens)
                detail: dict[str, Any] = {"user_agent": ua}
            else:
                unique = await repo.count_click(conn, message_id, url or "")
                data = EmailClicked(**base, url=url or "", unique=unique)
                detail = {"url": url, "user_agent": ua}
            await repo.copy_timeline(
                conn,
                [
                    repo.TimelineRow(
                        message_id=message_id,
                        tenant_id=row["tenant_id"],
                        status=status,
                        provider=None,
                        provider_message_id=None,
                        detail=detail,
                        occurred_at=now,
                    )
                ],
            )
            await repo.advance_status(conn, message_id, status)
            await outbox.enqueue(conn, _event(data, _scope(row), message_id))

    async def check_unsubscribe(self, token: str) -> str:
        message_id, _ = self._verify(token, "u")
        async with self.pool.acquire() as conn:
            row = await repo.message_by_id(conn, message_id)
        if row is None:
            raise InvalidTokenError("This link is not valid.")
        return str(row["to_email"])

    async def unsubscribe(self, token: str, method: str) -> bool:
        """Suppress the message's recipient; True the first time (one event per occurrence)."""
        message_id, _ = self._verify(token, "u")
        async with self.pool.acquire() as conn, conn.transaction():
            row = await repo.message_by_id(conn, message_id)
            if row is None:
                raise InvalidTokenError("This link is not valid.")
            if not await repo.add_suppression(
                conn, row["tenant_id"], row["to_email"], "unsubscribe", message_id
            ):
                return False
            now = datetime.now(UTC)
            await repo.copy_timeline(
                conn,
                [
                    repo.TimelineRow(
                        message_id=message_id,
                        tenant_id=row["tenant_id"],
                        status="unsubscribed",
                        provider=None,
                        provider_message_id=None,
                        detail={"method": method},
                        occurred_at=now,
                    )
                ],
            )
            await repo.advance_status(conn, message_id, "unsubscribed")
            await outbox.enqueue(
                conn,
                _event(
                    EmailUnsubscribed(**_email_fields(row, occurred_at=now), method=method),
                    _scope(row),
                    message_id,
                ),
            )
        return True

    # ------------------------------------------------------------ contact tags

    async def learn_contacts(self, conn: asyncpg.Connection, events: list[Envelope]) -> None:
        """Keep the recipient-tags read model (contact.* events, in the inbox transaction of
        their batch, applied in arrival order; a later event of a contact wins)."""
        rows = []
        for event in events:
            data = event.payload().model_dump(mode="json")
            tags = [] if event.type == "contact.deleted" else list(data.get("contact_tags") or [])
            rows.append(
                repo.ContactTagsRow(
                    tenant_id=event.tenant_id,
                    mode=event.mode,
                    email=str(data["email"]),
                    contact_id=str(data["contact_id"]),
                    tags=tags,
                    event_time=event.time,
                )
            )
        await repo.apply_contact_tags(conn, rows)

    # ------------------------------------------------------------ reading

    async def get_email(self, scope: TenantScope, message_id: str) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            row = await repo.get_message(conn, scope, message_id)
            if row is None:
                raise NotFound("No email with this id.")
            events = await repo.timeline(conn, message_id)
            unique_clicks = await repo.unique_clicks(conn, message_id)
        out = _summary(row)
        out["message_id_header"] = message_id_for(row["id"], row["from_email"])
        out["opens"] = {"total": row["open_count"], "unique": min(1, row["open_count"])}
        out["clicks"] = {"total": row["click_count"], "unique": unique_clicks}
        # `queued` is the message's creation: not stored as a row (a bulk send would write
        # 10,000 of them in its accept transaction).
        queued = {
            "status": "queued",
            "occurred_at": row["created_at"],
            "provider": None,
            "provider_message_id": None,
            "details": {},
        }
        out["timeline"] = [queued, *_timeline(row, events)]
        return out

    async def list_emails(
        self, scope: TenantScope, params: ListParams, **filters: Any
    ) -> Page[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await repo.list_messages(conn, scope, params, **filters)
        return params.page(rows, _summary)

    # ------------------------------------------------------------ policy management

    async def list_suppressions(
        self, tenant_id: str, params: ListParams, **filters: Any
    ) -> Page[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            rows = await repo.list_suppressions(conn, tenant_id, params, **filters)
        return params.page(rows, dict, row_id=lambda r: r["email"])

    async def suppress(self, tenant_id: str, email: str) -> None:
        async with self.pool.acquire() as conn:
            await repo.add_suppression(conn, tenant_id, email, "manual", None)

    async def unsuppress(self, tenant_id: str, email: str) -> None:
        async with self.pool.acquire() as conn:
            if not await repo.delete_suppression(conn, tenant_id, email):
                raise NotFound("This address is not suppressed.")

    async def routing_rules(self, tenant_id: str) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            return [dict(r) for r in await repo.routing_rules(conn, tenant_id)]

    async def add_routing_rule(self, tenant_id: str, rule: RoutingRuleIn) -> dict[str, Any]:
        row = {"id": new_id("rr"), "tenant_id": tenant_id, **rule.model_dump()}
        if row["sending_domain"]:
            row["sending_domain"] = row["sending_domain"].lower()
        async with self.pool.acquire() as conn:
            await repo.insert_routing_rule(conn, row)
        row.pop("tenant_id")
        return row

    async def delete_routing_rule(self, tenant_id: str, rule_id: str) -> None:
        async with self.pool.acquire() as conn:
            if not await repo.delete_routing_rule(conn, tenant_id, rule_id):
                raise NotFound("No routing rule with this id.")

    async def sending_caps(self, tenant_id: str) -> list[dict[str, Any]]:
        async with self.pool.acquire() as conn:
            return [dict(r) for r in await repo.sending_caps(conn, tenant_id)]

    async def set_sending_cap(self, tenant_id: str, cap: SendingCapIn) -> None:
        async with self.pool.acquire() as conn:
            await repo.upsert_sending_cap(conn, tenant_id, cap.scope, cap.value, cap.daily_limit)


def _summary(r: Any) -> dict[str, Any]:
    return {
        "id": r["id"],
        "to": r["to_email"],
        "from_": r["from_email"],
        "subject": r["subject"],
        "status": r["status"],
        "category": r["category"],
        "mode": r["mode"],
        "campaign_id": r["campaign_id"],
        "contact_id": r["contact_id"],
        "batch_id": r["batch_id"],
        "provider": r["provider"],
        "provider_message_id": r["provider_message_id"],
        "attempts": r["attempts"],
        "last_error": r["last_error"],
        "created_at": r["created_at"],
        "updated_at": r["updated_at"],
    }


def _timeline(row: Any, events: Sequence[Any]) -> list[dict[str, Any]]:
    """A message's timeline after `queued`: its `message_events` rows (in `occurred_at`
    order) and its `sent` entry, read from the row (`sent_at`, migration 000315) where the
    events' order puts it: after the entries before it, ahead of those at or after it (a
    `sent` row was written before them). Messages sent before 000315 have a `sent` row."""
    entries = [
        {
            "status": e["status"],
            "occurred_at": e["occurred_at"],
            "provider": e["provider"],
            "provider_message_id": e["provider_message_id"],
            "details": e["detail"] or {},
        }
        for e in events
    ]
    sent_at = row["sent_at"]
    if sent_at is not None:
        at = sum(1 for e in entries if e["occurred_at"] < sent_at)
        sent = {
            "status": "sent",
            "occurred_at": sent_at,
            "provider": row["provider"],
            "provider_message_id": row["provider_message_id"],
            "details": {},
        }
        entries.insert(at, sent)
    return entries


def _effective_from(row: Any, mode: str) -> str | None:
    if row is not None and row["default_from"]:
        name = row["default_from_name"]
        return f"{name} <{row['default_from']}>" if name else str(row["default_from"])
    return SANDBOX_SENDER if mode == "test" else None


def _settings_out(row: Any, mode: str) -> dict[str, Any]:
    return {
        "default_from": row["default_from"] if row else None,
        "default_from_name": row["default_from_name"] if row else None,
        "default_reply_to": row["default_reply_to"] if row else None,
        "effective_from": _effective_from(row, mode),
        "updated_at": row["updated_at"] if row else None,
    }


def _address(from_email: str) -> str:
    from email.utils import parseaddr

    return parseaddr(from_email)[1].lower()


def _seconds_to_next_utc_day() -> float:
    now = datetime.now(UTC)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (tomorrow - now).total_seconds()
