"""Event handlers of the billing service: apply the Stripe events the webhook endpoint (or
the reconciler) stored, one `stripe_event.received` work item each (queue `billing.stripe`)."""

from __future__ import annotations

import asyncpg

from libs.common.bus import EventBus, PermanentError
from libs.common.events import Envelope, StripeEventReceived
from services.billing.service import BillingService, UnknownStripeEvent


def setup(bus: EventBus, service: BillingService) -> None:
    # No transaction from the bus: the handler reads Stripe first, then records the inbox
    # mark together with its writes (see BillingService.process_event).
    @bus.on("stripe", StripeEventReceived, inbox=False)
    async def apply_stripe_event(
        data: StripeEventReceived, event: Envelope, _conn: asyncpg.Connection | None
    ) -> None:
        """Apply a stored Stripe event from Stripe's current state (once)."""
        try:
            await service.process_event(data.stripe_event_id, envelope=event)
        except UnknownStripeEvent as exc:
            raise PermanentError(f"stripe event {exc} is not stored") from exc
