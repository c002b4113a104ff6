"""Event handlers of delivery's worker: campaign send requests in, and the send work items.

- `delivery.requests` (`email.requested`, inbox): the campaign runner's sends join the same
  pipeline as the API's, in the inbox transaction (a redelivered request is a no-op).
- `delivery.contacts` (`contact.*`, inbox, in batches): the recipient-tags read model, so
  every email.* event carries `contact_tags` (webhook filters by contact tag).
- `delivery.campaigns` (`campaign.created` / `campaign.updated`, inbox): the campaign-content
  read model of `send-bulk` with a `campaign_id`.
- `delivery.plans` (`tenant.created` / `tenant.plan_changed`, inbox): the plan read model
  (daily send quota of campaign sends); only keys' and billing's plan facts count.
- `delivery.inbox` (`email.replied`, `inbox_feedback.received`, inbox): the inbox's facts
  about a message: replies in its timeline and status, bounces (DSN) and unsubscribe
  requests by mail applied as ESP reports are.
- `delivery.send` (the private `SendBatch` command, no inbox): a wake-up to send. It claims
  fairly across tenants (`DeliveryService.dispatch`), and again while any of its listed
  messages still waits. Idempotent by message state: a redelivered command finds nothing
  of its own to claim.
"""

from __future__ import annotations

import asyncpg

from libs.common.bus import EventBus, PermanentError
from libs.common.events import EmailRequested, Envelope
from services.delivery.commands import SendBatch
from services.delivery.service import DailyQuotaExceeded, DeliveryService, TemplateInvalid


def setup(bus: EventBus, service: DeliveryService) -> None:
    @bus.on("requests", EmailRequested)
    async def on_email_requested(
        data: EmailRequested, event: Envelope, conn: asyncpg.Connection | None
    ) -> None:
        """Accept a campaign send request into the send pipeline."""
        assert conn is not None
        try:
            await service.accept_requested(conn, event.tenant_id, data)
        except TemplateInvalid as exc:
            raise PermanentError(f"template_invalid: {exc.message}") from exc
        except DailyQuotaExceeded as exc:
            # No room in the deferral horizon: kept in the DLQ, replayable once there is.
            raise PermanentError(f"daily_send_quota_exceeded: {exc.message}") from exc

    @bus.subscribe("plans", ["tenant.created", "tenant.plan_changed"])
    async def on_plan(event: Envelope, conn: asyncpg.Connection | None) -> None:
        """Learn the tenant's plan: the daily send quota of its campaign sends."""
        assert conn is not None
        await service.learn_plan(conn, event)

    # In batches: a 50,000-contact import publishes 50,000 contact.created at once; one
    # inbox transaction per batch, not per contact.
    @bus.subscribe_batch("contacts", ["contact.created", "contact.updated", "contact.deleted"])
    async def on_contacts(events: list[Envelope], conn: asyncpg.Connection | None) -> None:
        """Learn the contacts' tags: email.* events carry their recipient's tags."""
        assert conn is not None
        await service.learn_contacts(conn, events)

    @bus.subscribe("campaigns", ["campaign.created", "campaign.updated"])
    async def on_campaign(event: Envelope, conn: asyncpg.Connection | None) -> None:
        """Learn the campaign's content: send-bulk with a campaign_id sends it."""
        assert conn is not None
        await service.learn_campaign(conn, event, event.payload().model_dump(mode="json"))

    @bus.subscribe("inbox", ["email.replied", "inbox_feedback.received"])
    async def on_inbox_event(event: Envelope, conn: asyncpg.Connection | None) -> None:
        """Apply a reply, a bounce or an unsubscribe request the inbox received."""
        assert conn is not None
        await service.apply_inbox_event(conn, event)

    @bus.handle_command(SendBatch)
    async def on_send_batch(command: SendBatch) -> None:
        """Send the queued messages of one send batch."""
        await service.dispatch(command.message_ids)
