"""Domain logic of the billing service: Checkout and portal sessions, the subscription and
payments a tenant sees, Stripe webhooks (verify, store once, hand to the worker), applying
Stripe events, the tenant's effective plan (`tenant.plan_changed`), and reconciliation.

Stripe is the source of truth. An event only says *that* something changed: before applying
it, the worker reads the object's current state from the Stripe API, and a state read
earlier never overwrites one read later (`synced_at`), so late, duplicated or reordered
events converge on Stripe's current state.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import Counter, Gauge

from libs.common import outbox
from libs.common.events import Envelope, StripeEventReceived, TenantPlanChanged, make_event
from libs.common.http import (
    ApiError,
    BadRequest,
    Conflict,
    ErrorDetail,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
    register_error_code,
)
from libs.common.inbox import claim_event
from libs.common.pagination import ListParams, Page
from services.billing import repository as repo
from services.billing.catalog import (
    GOOD_STANDING,
    PLANS,
    SubscriptionState,
    effective_plan,
    plan_for_price,
)
from services.billing.settings import BillingSettings, Mode
from services.billing.stripe_api import (
    StripeApi,
    StripeFailure,
    StripeNotConfigured,
    StripeObjectMissing,
    StripeRejected,
    StripeUnavailable,
    verify_webhook,
)

log = logging.getLogger(__name__)

SOURCE = "/services/billing"
CONSUMER = "billing.stripe"  # the worker's queue; also its inbox name
# Events the worker acts on; others are stored and marked ignored.
HANDLED_EVENT_TYPES = (
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
)
# The envelope of an event no tenant can be named for yet (attribution happens later).
PLATFORM_TENANT = "platform"

register_error_code(
    "subscription_exists",
    409,
    "The tenant already has a subscription in good standing; change plans in the portal.",
)
register_error_code(
    "billing_account_not_found", 404, "The tenant has no Stripe customer yet (no checkout)."
)
register_error_code(
    "billing_not_configured", 503, "Stripe credentials are not configured for this mode."
)
register_error_code(
    "payment_provider_unavailable", 503, "Stripe could not be reached or failed; retry later."
)
register_error_code("payment_provider_error", 502, "Stripe refused the request.")
register_error_code(
    "invalid_stripe_signature",
    400,
    "The Stripe-Signature header is missing, invalid, or older than the tolerance (300 s).",
)
register_error_code("invalid_stripe_event", 400, "The signed payload is not a Stripe event.")

EVENTS = Counter(
    "pm_billing_stripe_events_total", "Stripe events by source and outcome", ["source", "outcome"]
)
DRIFT = Counter(
    "pm_billing_drift_corrected_total",
    "Differences from Stripe the reconciler corrected",
    ["mode", "kind"],
)
PLAN_CHANGES = Counter("pm_billing_plan_changes_total", "tenant.plan_changed published", ["plan"])
LAST_RECONCILE = Gauge(
    "pm_billing_reconcile_last_success_timestamp_seconds",
    "When the last reconciliation run completed",
    ["mode"],
)


class UnknownStripeEvent(Exception):
    """A work item names a Stripe event that is not stored (cannot happen through the outbox)."""


@dataclass
class Fetched:
    """Current Stripe state of what an event is about, read before applying it."""

    outcome: str = "applied"
    subscription: dict[str, Any] | None = None
    invoice: dict[str, Any] | None = None
    session: dict[str, Any] | None = None


@dataclass
class ReconcileReport:
    run_id: int
    mode: str
    events_listed: int = 0
    events_applied: int = 0
    subscriptions_checked: int = 0
    drift: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "events_listed": self.events_listed,
            "events_applied": self.events_applied,
            "subscriptions_checked": self.subscriptions_checked,
            "drift_corrected": len(self.drift),
            "drift": self.drift,
        }


def _ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


def _id_of(value: Any) -> str | None:
    """An expandable Stripe field: an id, or the expanded object."""
    if isinstance(value, Mapping):
        return str(value.get("id")) if value.get("id") else None
    return str(value) if value else None


def _metadata(obj: Mapping[str, Any] | None) -> dict[str, str]:
    meta = (obj or {}).get("metadata") or {}
    return {str(k): str(v) for k, v in meta.items()}


def _invoice_subscription(invoice: Mapping[str, Any]) -> str | None:
    details = ((invoice.get("parent") or {}).get("subscription_details")) or {}
    # API versions before 2025-03-31 had `invoice.subscription`.
    return _id_of(details.get("subscription")) or _id_of(invoice.get("subscription"))


def _provider_error(exc: StripeFailure) -> ApiError:
    if isinstance(exc, StripeNotConfigured):
        return ServiceUnavailable(code="billing_not_configured", headers={"Retry-After": "60"})
    if isinstance(exc, StripeUnavailable):
        return ServiceUnavailable(code="payment_provider_unavailable", headers={"Retry-After": "5"})
    return ApiError(code="payment_provider_error")


class BillingService:
    def __init__(self, settings: BillingSettings, pool: asyncpg.Pool, stripe_api: StripeApi):
        self.settings = settings
        self.pool = pool
        self.stripe = stripe_api

    # ================================================================ dashboard API

    def plans(self, mode: Mode) -> list[dict[str, Any]]:
        prices = self.settings.prices(mode)
        return [
            {
                "id": p.id,
                "name": p.name,
                "monthly_amount": p.monthly_amount,
                "currency": p.currency,
                "requests_per_minute": p.requests_per_minute,
                "purchasable": p.id in prices,
            }
            for p in PLANS.values()
        ]

    async def create_checkout_session(
        self, tenant_id: str, mode: Mode, plan_id: str
    ) -> dict[str, Any]:
        price = self.settings.prices(mode).get(plan_id)
        if price is None:
            raise ValidationFailed(
                details=[ErrorDetail(field="body.plan_id", message="plan is not for sale")]
            )
        subs = await repo.tenant_subscriptions(self.pool, tenant_id, mode)
        if any(s["status"] in GOOD_STANDING for s in subs):
            raise Conflict(
                "The tenant already has a subscription; change plans in the customer portal.",
                code="subscription_exists",
            )
        base = self.settings.dashboard_url.rstrip("/")
        try:
            customer = await self._ensure_customer(tenant_id, mode)
            session = await self.stripe.create_checkout_session(
                mode,
                customer=customer,
                price=price,
                tenant_id=tenant_id,
                plan_id=plan_id,
                success_url=base + self.settings.checkout_success_path,
                cancel_url=base + self.settings.checkout_cancel_path,
            )
        except StripeFailure as exc:
            log.warning("checkout session not created", extra={"error": str(exc)})
            raise _provider_error(exc) from exc
        return {
            "id": session["id"],
            "url": session["url"],
            "plan_id": plan_id,
            "expires_at": _ts(session.get("expires_at")),
        }

    async def _ensure_customer(self, tenant_id: str, mode: Mode) -> str:
        existing = await repo.customer_of_tenant(self.pool, tenant_id, mode)
        if existing:
            return existing
        # Stripe replays the same customer for the same key (24 h): two concurrent first
        # checkouts of a tenant make one customer.
        customer = await self.stripe.create_customer(
            mode, tenant_id, idempotency_key=f"pm-billing-customer-{mode}-{tenant_id}"
        )
        return await repo.insert_customer(self.pool, tenant_id, mode, customer["id"])

    async def create_portal_session(self, tenant_id: str, mode: Mode) -> dict[str, Any]:
        customer = await repo.customer_of_tenant(self.pool, tenant_id, mode)
        if customer is None:
            raise NotFound(
                "No billing account yet: start with a checkout session.",
                code="billing_account_not_found",
            )
        return_url = self.settings.dashboard_url.rstrip("/") + self.settings.portal_return_path
        try:
            session = await self.stripe.create_portal_session(
                mode, customer=customer, return_url=return_url
            )
        except StripeFailure as exc:
            log.warning("portal session not created", extra={"error": str(exc)})
            raise _provider_error(exc) from exc
        return {"url": session["url"], "return_url": return_url}

    async def subscription_view(self, tenant_id: str, mode: Mode) -> dict[str, Any]:
        rows = await repo.tenant_subscriptions(self.pool, tenant_id, mode)
        plan, sub_id = effective_plan(
            (
                SubscriptionState(
                    r["stripe_subscription_id"], r["plan_id"], r["status"], r["stripe_created_at"]
                )
                for r in rows
            ),
            self.settings.default_plan,
        )
        shown = next((r for r in rows if r["stripe_subscription_id"] == sub_id), None)
        shown = shown or (rows[0] if rows else None)
        return {
            "plan": plan,
            "mode": mode,
            "subscription": None
            if shown is None
            else {
                "id": shown["stripe_subscription_id"],
                "plan_id": shown["plan_id"],
                "status": shown["status"],
                "current_period_end": shown["current_period_end"],
                "cancel_at_period_end": shown["cancel_at_period_end"],
                "canceled_at": shown["canceled_at"],
                "created_at": shown["stripe_created_at"],
            },
        }

    async def payments(
        self,
        tenant_id: str,
        mode: Mode,
        params: ListParams,
        *,
        status: str | None = None,
        subscription_id: str | None = None,
    ) -> Page[dict[str, Any]]:
        rows = await repo.list_payments(
            self.pool, tenant_id, mode, params, status=status, subscription_id=subscription_id
        )
        return params.page(
            rows,
            _payment_out,
            sort_value=lambda r: r["stripe_created_at"],
            row_id=lambda r: r["stripe_invoice_id"],
        )

    # ================================================================ webhooks

    async def receive_webhook(self, payload: bytes, signature: str | None) -> tuple[str, bool]:
        """Verify, store once, queue for the worker. Returns (event id, newly stored)."""
        secrets = self.settings.webhook_secrets()
        if not secrets:
            # 503: Stripe keeps retrying until the secret is configured.
            raise ServiceUnavailable(code="billing_not_configured")
        try:
            verified = verify_webhook(
                payload, signature, secrets, self.settings.stripe_webhook_tolerance_seconds
            )
        except ValueError as exc:
            raise BadRequest(code="invalid_stripe_event") from exc
        if verified is None:
            EVENTS.labels("webhook", "bad_signature").inc()
            raise BadRequest(code="invalid_stripe_signature")
        mode, event = verified
        if not _is_event(event):
            raise BadRequest(code="invalid_stripe_event")
        async with self.pool.acquire() as conn, conn.transaction():
            stored = await self._store_event(conn, event, mode, "webhook", enqueue=True)
        EVENTS.labels("webhook", "stored" if stored else "duplicate").inc()
        return str(event["id"]), stored

    async def _store_event(
        self,
        conn: asyncpg.Connection,
        event: Mapping[str, Any],
        mode: Mode,
        source: str,
        *,
        enqueue: bool,
    ) -> bool:
        obj = event["data"]["object"]
        stored = await repo.insert_event(
            conn,
            event_id=str(event["id"]),
            mode=mode,
            type_=str(event["type"]),
            object_id=_id_of(obj.get("id")),
            created_at=_ts(event["created"]) or datetime.now(UTC),
            payload=dict(event),
            source=source,
        )
        if stored and enqueue:
            await outbox.enqueue(
                conn,
                make_event(
                    StripeEventReceived(
                        stripe_event_id=str(event["id"]),
                        stripe_event_type=str(event["type"]),
                        mode=mode,
                    ),
                    tenant_id=_metadata(obj).get("tenant_id") or PLATFORM_TENANT,
                    source=SOURCE,
                    subject=str(event["id"]),
                ),
            )
        return stored

    # ================================================================ applying events

    async def process_event(self, event_id: str, *, envelope: Envelope | None = None) -> str:
        """Apply a stored Stripe event once; returns its outcome (applied, ignored,
        unattributed, object_missing, duplicate). Stripe failures raise (retried)."""
        row = await repo.get_event(self.pool, event_id)
        if row is None:
            raise UnknownStripeEvent(event_id)
        if row["processed_at"] is not None:
            return "duplicate"
        mode: Mode = row["mode"]
        started = await repo.db_now(self.pool)
        # Read Stripe outside the transaction: no lock is held across a network call.
        fetched = await self._fetch(mode, row["type"], row["object_id"])
        async with self.pool.acquire() as conn, conn.transaction():
            if envelope is not None and not await claim_event(conn, CONSUMER, envelope):
                return "duplicate"
            locked = await repo.lock_event(conn, event_id)
            if locked is None or locked["processed_at"] is not None:
                return "duplicate"
            outcome = fetched.outcome
            if outcome == "applied":
                outcome = await self._apply(conn, mode, fetched, started, reason=row["type"])
            await repo.mark_event_processed(conn, event_id, outcome)
        EVENTS.labels(row["source"], outcome).inc()
        log.info(
            "stripe event processed",
            extra={"stripe_event_id": event_id, "stripe_type": row["type"], "outcome": outcome},
        )
        return outcome

    async def _fetch(self, mode: Mode, type_: str, object_id: str | None) -> Fetched:
        if type_ not in HANDLED_EVENT_TYPES or not object_id:
            return Fetched(outcome="ignored")
        try:
            if type_ == "checkout.session.completed":
                session = await self.stripe.checkout_session(mode, object_id)
                sub_id = _id_of(session.get("subscription"))
                if session.get("mode") != "subscription" or not sub_id:
                    return Fetched(outcome="ignored")
                sub = await self.stripe.subscription(mode, sub_id)
                return Fetched(session=session, subscription=sub)
            if type_.startswith("customer.subscription."):
                return Fetched(subscription=await self.stripe.subscription(mode, object_id))
            invoice = await self.stripe.invoice(mode, object_id)
            sub_id = _invoice_subscription(invoice)
            current = await self.stripe.subscription(mode, sub_id) if sub_id else None
            return Fetched(invoice=invoice, subscription=current)
        except StripeObjectMissing:
            return Fetched(outcome="object_missing")
        except StripeRejected as exc:
            # Wrong key, or a bug: retried through the delay queues, then dead-lettered.
            log.error("stripe refused a read", extra={"error": str(exc), "stripe_type": type_})
            raise

    async def _apply(
        self,
        conn: asyncpg.Connection,
        mode: Mode,
        fetched: Fetched,
        synced_at: datetime,
        *,
        reason: str,
    ) -> str:
        sub, invoice, session = fetched.subscription, fetched.invoice, fetched.session
        anchor = sub or invoice or session or {}
        customer = _id_of(anchor.get("customer")) or _id_of((session or {}).get("customer"))
        tenant_id = await self._tenant_for(conn, mode, customer, sub, invoice, session)
        if tenant_id is None or customer is None:
            log.warning(
                "stripe object not attributable to a tenant",
                extra={"stripe_customer": customer, "stripe_object": anchor.get("id")},
            )
            return "unattributed"
        if session is not None:
            await repo.insert_customer(conn, tenant_id, mode, customer)
        applied = False
        if sub is not None:
            applied |= await repo.upsert_subscription(
                conn, self._subscription_row(tenant_id, mode, sub, synced_at)
            )
        if invoice is not None:
            applied |= await repo.upsert_payment(
                conn, _payment_row(tenant_id, mode, invoice, synced_at)
            )
        await self._recompute_plan(conn, tenant_id, mode, reason)
        return "applied" if applied else "superseded"

    async def _tenant_for(
        self,
        conn: asyncpg.Connection,
        mode: Mode,
        customer: str | None,
        *objects: Mapping[str, Any] | None,
    ) -> str | None:
        # Our own customer record first: we created the customer for that tenant.
        known = await repo.tenant_of_customer(conn, customer, mode) if customer else None
        claimed = next(
            (
                meta.get("tenant_id") or (o or {}).get("client_reference_id")
                for o in objects
                if o is not None
                for meta in [_metadata(o)]
                if meta.get("tenant_id") or (o or {}).get("client_reference_id")
            ),
            None,
        )
        if known and claimed and known != claimed:
            log.warning(
                "stripe metadata names another tenant than the customer record; using the record",
                extra={"stripe_customer": customer},
            )
        if known or claimed:
            return known or claimed
        for obj in objects:
            if obj and obj.get("object") == "subscription":
                existing = await repo.get_subscription(conn, str(obj["id"]))
                if existing is not None:
                    return str(existing["tenant_id"])
        return None

    def _subscription_row(
        self, tenant_id: str, mode: Mode, sub: Mapping[str, Any], synced_at: datetime
    ) -> dict[str, Any]:
        items = ((sub.get("items") or {}).get("data")) or []
        item = items[0] if items else {}
        price_id = _id_of(item.get("price"))
        plan_id = plan_for_price(self.settings.prices(mode), price_id)
        if plan_id is None:
            log.warning("subscription on a price outside the catalog", extra={"price": price_id})
        period_end = item.get("current_period_end") or sub.get("current_period_end")
        return {
            "stripe_subscription_id": str(sub["id"]),
            "tenant_id": tenant_id,
            "mode": mode,
            "stripe_customer_id": _id_of(sub.get("customer")) or "",
            "plan_id": plan_id,
            "price_id": price_id,
            "status": str(sub.get("status")),
            "current_period_end": _ts(period_end),
            "cancel_at_period_end": bool(sub.get("cancel_at_period_end")),
            "canceled_at": _ts(sub.get("canceled_at")),
            "stripe_created_at": _ts(sub.get("created")) or synced_at,
            "synced_at": synced_at,
        }

    async def _recompute_plan(
        self, conn: asyncpg.Connection, tenant_id: str, mode: Mode, reason: str
    ) -> str | None:
        """Publish `tenant.plan_changed` when the tenant's effective plan moved. Test-mode
        subscriptions never change the tenant's plan (they are sandbox data)."""
        if mode != "live":
            return None
        await repo.lock_tenant(conn, tenant_id)
        rows = await repo.tenant_subscriptions(conn, tenant_id, "live")
        plan, sub_id = effective_plan(
            (
                SubscriptionState(
                    r["stripe_subscription_id"], r["plan_id"], r["status"], r["stripe_created_at"]
                )
                for r in rows
            ),
            self.settings.default_plan,
        )
        current = await repo.tenant_config(conn, tenant_id)
        if current is not None and (current["plan"], current["stripe_subscription_id"]) == (
            plan,
            sub_id,
        ):
            return None
        await repo.set_tenant_config(conn, tenant_id, plan, sub_id)
        old = current["plan"] if current is not None else None
        if old == plan:
            return None
        await outbox.enqueue(
            conn,
            make_event(
                TenantPlanChanged(old_plan=old, new_plan=plan, reason=reason),
                tenant_id=tenant_id,
                source=SOURCE,
                subject=sub_id,
            ),
        )
        PLAN_CHANGES.labels(plan).inc()
        log.info(
            "tenant plan changed",
            extra={"event_tenant": tenant_id, "old_plan": old, "new_plan": plan, "reason": reason},
        )
        return plan

    # ================================================================ reconciliation

    async def reconcile(self, mode: Mode) -> ReconcileReport | None:
        """One reconciliation run of `mode`; None when not configured or another runs."""
        if not self.stripe.configured(mode):
            return None
        async with self.pool.acquire() as lock_conn:
            if not await repo.try_reconcile_lock(lock_conn, mode):
                log.info("another reconciler is running", extra={"mode": mode})
                return None
            try:
                return await self._reconcile_locked(mode)
            finally:
                await repo.reconcile_unlock(lock_conn, mode)

    async def _reconcile_locked(self, mode: Mode) -> ReconcileReport:
        report = ReconcileReport(await repo.start_run(self.pool, mode), mode)
        error: str | None = None
        try:
            await self._reconcile_events(report)
            await self._reconcile_subscriptions(report)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"[:500]
            raise
        finally:
            await repo.finish_run(
                self.pool,
                report.run_id,
                events_listed=report.events_listed,
                events_applied=report.events_applied,
                subscriptions_checked=report.subscriptions_checked,
                drift_corrected=len(report.drift),
                error=error,
            )
        LAST_RECONCILE.labels(mode).set_to_current_time()
        log.info("reconciliation finished", extra=report.as_dict() | {"drift": len(report.drift)})
        return report

    async def _drift(
        self,
        report: ReconcileReport,
        kind: str,
        object_id: str,
        tenant_id: str | None,
        detail: dict[str, Any],
    ) -> None:
        mode = report.mode
        await repo.add_drift(self.pool, report.run_id, mode, kind, object_id, tenant_id, detail)
        DRIFT.labels(mode, kind).inc()
        report.drift.append(
            {"kind": kind, "object_id": object_id, "tenant_id": tenant_id, "detail": detail}
        )
        log.warning(
            "billing drift corrected",
            extra={"mode": mode, "kind": kind, "object_id": object_id, "event_tenant": tenant_id},
        )

    async def _reconcile_events(self, report: ReconcileReport) -> None:
        mode: Mode = report.mode  # type: ignore[assignment]
        cursor = await repo.reconcile_cursor(self.pool, mode)
        now = await repo.db_now(self.pool)
        if cursor is None:
            since = int(now.timestamp()) - self.settings.reconcile_initial_lookback_seconds
        else:
            since = int(cursor.timestamp()) - self.settings.reconcile_overlap_seconds
        listed = [e async for e in self.stripe.events_since(mode, since, list(HANDLED_EVENT_TYPES))]
        report.events_listed = len(listed)
        # Oldest first, as they happened; each is read afresh from Stripe anyway.
        for event in sorted(listed, key=lambda e: (int(e["created"]), str(e["id"]))):
            if not _is_event(event):
                continue
            async with self.pool.acquire() as conn, conn.transaction():
                stored = await self._store_event(conn, event, mode, "reconciliation", enqueue=False)
            if not stored:
                continue
            outcome = await self.process_event(str(event["id"]))
            report.events_applied += 1
            await self._drift(
                report,
                "missed_event",
                str(event["id"]),
                None,
                {"type": event["type"], "outcome": outcome},
            )
        for event_id in await repo.stale_unprocessed_events(
            self.pool, mode, self.settings.reconcile_stale_event_seconds
        ):
            outcome = await self.process_event(event_id)
            report.events_applied += 1
            await self._drift(report, "stale_event", event_id, None, {"outcome": outcome})
        if listed:
            newest = max(int(e["created"]) for e in listed)
            await repo.set_reconcile_cursor(self.pool, mode, datetime.fromtimestamp(newest, UTC))
        elif cursor is None:
            await repo.set_reconcile_cursor(self.pool, mode, now)

    async def _reconcile_subscriptions(self, report: ReconcileReport) -> None:
        mode: Mode = report.mode  # type: ignore[assignment]
        # Reads made after this instant win over the listing (see `synced_at`).
        started = await repo.db_now(self.pool)
        local = await repo.local_subscriptions(self.pool, mode)
        async for sub in self.stripe.all_subscriptions(mode):
            report.subscriptions_checked += 1
            sub_id = str(sub["id"])
            before = local.get(sub_id)
            expected = self._subscription_row(
                before["tenant_id"] if before else "", mode, sub, started
            )
            if before is not None and _same_state(before, expected):
                continue
            async with self.pool.acquire() as conn, conn.transaction():
                outcome = await self._apply(
                    conn, mode, Fetched(subscription=sub), started, reason="reconciliation"
                )
            if outcome != "applied":
                continue
            after = await repo.get_subscription(self.pool, sub_id)
            await self._drift(
                report,
                "subscription_state",
                sub_id,
                after["tenant_id"] if after else None,
                {
                    "before": _state_summary(before),
                    "after": _state_summary(after),
                },
            )


# ---------------------------------------------------------------- helpers of this module

_COMPARED = ("status", "plan_id", "price_id", "current_period_end", "cancel_at_period_end")


def _same_state(row: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    return all(row[k] == expected[k] for k in _COMPARED)


def _state_summary(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: (row[k].isoformat() if isinstance(row[k], datetime) else row[k]) for k in _COMPARED}


def _is_event(event: Any) -> bool:
    return (
        isinstance(event, Mapping)
        and isinstance(event.get("id"), str)
        and event["id"].startswith("evt_")
        and isinstance(event.get("type"), str)
        and isinstance(event.get("created"), int)
        and isinstance(event.get("data"), Mapping)
        and isinstance(event["data"].get("object"), Mapping)
    )


def _payment_row(
    tenant_id: str, mode: Mode, invoice: Mapping[str, Any], synced_at: datetime
) -> dict[str, Any]:
    invoice_status = str(invoice.get("status") or "draft")
    failed = (
        invoice_status == "open"
        and bool(invoice.get("attempted"))
        and int(invoice.get("amount_remaining") or 0) > 0
    )
    transitions = invoice.get("status_transitions") or {}
    return {
        "stripe_invoice_id": str(invoice["id"]),
        "tenant_id": tenant_id,
        "mode": mode,
        "stripe_customer_id": _id_of(invoice.get("customer")) or "",
        "stripe_subscription_id": _invoice_subscription(invoice),
        "status": "failed" if failed else invoice_status,
        "invoice_status": invoice_status,
        "amount_due": int(invoice.get("amount_due") or 0),
        "amount_paid": int(invoice.get("amount_paid") or 0),
        "currency": str(invoice.get("currency") or "usd"),
        "attempt_count": int(invoice.get("attempt_count") or 0),
        "next_payment_attempt": _ts(invoice.get("next_payment_attempt")),
        "hosted_invoice_url": invoice.get("hosted_invoice_url"),
        "period_start": _ts(invoice.get("period_start")),
        "period_end": _ts(invoice.get("period_end")),
        "paid_at": _ts(transitions.get("paid_at")),
        "stripe_created_at": _ts(invoice.get("created")) or synced_at,
        "synced_at": synced_at,
    }


def _payment_out(r: Any) -> dict[str, Any]:
    return {
        "id": r["stripe_invoice_id"],
        "subscription_id": r["stripe_subscription_id"],
        "status": r["status"],
        "amount_due": r["amount_due"],
        "amount_paid": r["amount_paid"],
        "currency": r["currency"],
        "attempt_count": r["attempt_count"],
        "next_payment_attempt": r["next_payment_attempt"],
        "hosted_invoice_url": r["hosted_invoice_url"],
        "period_start": r["period_start"],
        "period_end": r["period_end"],
        "paid_at": r["paid_at"],
        "created_at": r["stripe_created_at"],
    }
