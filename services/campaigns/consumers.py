"""What the campaigns service does when delivery's `email.*` facts arrive.

- `campaigns.analytics`: every email fact goes into the `email_events` read model (one row
  per event id, so redeliveries and replays count once; counts are computed from the facts,
  so arrival order does not matter); a campaign's changed counters publish
  `analytics.updated`, at most once a minute per campaign.
- `campaigns.engagement`: replies stop the contact's pending sequence steps; unsubscribes,
  hard bounces and complaints move the contact's status (and publish `contact.updated`).

- `campaigns.imports` (`contact_import.requested`, no inbox): runs import jobs, chunk by chunk.
- `campaigns.sender`: `sending_settings.updated` into the `sender_defaults` read model (the
  default sender of campaigns without from_email).
- `campaigns.domains`: `domain.*` into the `sender_domains` read model (a live campaign
  starts only from a verified sending domain).

All use the inbox: the handler's writes and the dedup mark commit together.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

import asyncpg

from libs.common import outbox
from libs.common.bus import EventBus, PermanentError
from libs.common.events import AnalyticsUpdated, ContactUpdated, Envelope, make_event
from libs.common.resources import Resources
from services.campaigns import repository as repo
from services.campaigns import service

log = logging.getLogger(__name__)

ANALYTICS_TYPES = [
    "email.queued",
    "email.sent",
    "email.delivered",
    "email.opened",
    "email.clicked",
    "email.replied",
    "email.bounced",
    "email.complained",
    "email.unsubscribed",
    "email.failed",
]
OVERVIEW_TYPES = [t.removeprefix("email.") for t in ANALYTICS_TYPES if t != "email.queued"]
ENGAGEMENT_TYPES = ["email.replied", "email.unsubscribed", "email.bounced", "email.complained"]
# Suppression strength: a contact only moves up (active < bounced < unsubscribed < complained).
SUPPRESSION = {
    "email.bounced": ("bounced", 1),
    "email.unsubscribed": ("unsubscribed", 2),
    "email.complained": ("complained", 3),
}
_DETAIL_FIELDS = (
    "url",
    "bounce_type",
    "reason",
    "feedback_type",
    "method",
    "provider",
    "reply_snippet",
    "user_agent",
)


def _uuid(value: Any) -> UUID | None:
    if not value:
        return None
    try:
        return UUID(str(value))
    except ValueError:
        return None


async def record_email_event(event: Envelope, conn: asyncpg.Connection | None) -> None:
    """Add an email fact to the analytics read model."""
    assert conn is not None
    data = event.payload().model_dump(mode="json", by_alias=True)
    if not data.get("message_id"):
        raise PermanentError(f"{event.type} without message_id")
    occurred = event.payload().occurred_at or event.time  # type: ignore[attr-defined]
    # The mode is the envelope's: delivery's email.* data carries none (issue 15 §7).
    mode = event.mode
    campaign_id = _uuid(data.get("campaign_id"))
    inserted = await repo.insert_email_event(
        conn,
        {
            "event_id": event.id,
            "tenant_id": event.tenant_id,
            "mode": mode,
            "event_type": event.type,
            "message_id": str(data["message_id"]),
            "campaign_id": _uuid(data.get("campaign_id")),
            "contact_id": _uuid(data.get("contact_id")),
            "step": data.get("step"),
            "recipient": data.get("to"),
            "occurred_at": occurred,
            "detail": {k: data[k] for k in _DETAIL_FIELDS if data.get(k) is not None},
        },
    )
    if inserted and campaign_id is not None and event.type != "email.queued":
        await _notify_analytics(conn, event.tenant_id, campaign_id)


async def _notify_analytics(conn: asyncpg.Connection, tenant_id: str, campaign_id: UUID) -> None:
    """analytics.updated for a campaign whose counters just changed, at most once a minute
    (a change within the minute is reported with the next change after it)."""
    campaign = await repo.claim_analytics_notice(conn, tenant_id, campaign_id)
    if campaign is None:
        return
    overview = dict.fromkeys(OVERVIEW_TYPES, 0)
    for r in await repo.campaign_event_counts(conn, tenant_id, campaign_id):
        name = r["event_type"].removeprefix("email.")
        if name in overview:
            overview[name] += r["uniq"]
    await outbox.enqueue(
        conn,
        make_event(
            AnalyticsUpdated(
                campaign_id=str(campaign_id), name=campaign["name"], overview=overview
            ),
            tenant_id=tenant_id,
            source="/services/campaigns",
            subject=f"campaigns/{campaign_id}",
            mode=campaign["mode"],
        ),
    )


async def apply_engagement(event: Envelope, conn: asyncpg.Connection | None) -> None:
    """Stop sequences on reply; suppress contacts on unsubscribe, hard bounce, complaint."""
    assert conn is not None
    data = event.payload().model_dump(mode="json", by_alias=True)
    contact_id = _uuid(data.get("contact_id"))
    email = data.get("to")
    occurred = event.payload().occurred_at or event.time  # type: ignore[attr-defined]
    contact_ids = (
        [contact_id]
        if contact_id is not None
        else (await repo.contact_ids_by_email(conn, event.tenant_id, email) if email else [])
    )
    if event.type == "email.replied":
        for cid in contact_ids:
            await repo.mark_replied(
                conn, event.tenant_id, cid, _uuid(data.get("campaign_id")), occurred
            )
        return
    if event.type == "email.bounced" and data.get("bounce_type") != "hard":
        return  # a soft bounce is retried by delivery; the address stays usable
    status, rank = SUPPRESSION[event.type]
    changed = await repo.suppress_contacts(
        conn,
        event.tenant_id,
        status,
        rank,
        contact_id=contact_id,
        email=None if contact_id else email,
    )
    for row in changed:
        await outbox.enqueue(
            conn,
            make_event(
                ContactUpdated(
                    contact_id=str(row["id"]),
                    email=row["email"],
                    changed=["status"],
                    contact_tags=list(row["tags"]),
                ),
                tenant_id=event.tenant_id,
                source="/services/campaigns",
                subject=f"contacts/{row['id']}",
                mode=event.mode,
            ),
        )


async def record_sender_defaults(event: Envelope, conn: asyncpg.Connection | None) -> None:
    """Keep the tenant's default sender (delivery's sending settings) for campaigns without
    from_email."""
    assert conn is not None
    data = event.payload().model_dump(mode="json")
    await repo.apply_sender_defaults(conn, event.tenant_id, event.mode, data, event.time)


DOMAIN_TYPES = [
    "domain.verified",
    "domain.verification_failed",
    "domain.health_changed",
    "domain.deleted",
]


async def record_domain_state(event: Envelope, conn: asyncpg.Connection | None) -> None:
    """Keep which sending domains the tenant has verified (delivery's domain.* facts): a live
    campaign starts only from a verified domain."""
    assert conn is not None
    data = event.payload().model_dump(mode="json")
    verified = event.type == "domain.verified" or (
        event.type == "domain.health_changed" and data.get("status") == "verified"
    )
    await repo.apply_domain_state(conn, event.tenant_id, data["name"], verified, event.time)


def setup(bus: EventBus, resources: Resources) -> None:
    @bus.subscribe("imports", ["contact_import.requested"], inbox=False)
    async def on_import_requested(event: Envelope, _conn: asyncpg.Connection | None) -> None:
        """Run an import job (idempotent by the job's state: a redelivered item finds it done
        or running)."""
        data = event.payload().model_dump(mode="json")
        await service.run_import(resources.pool, UUID(data["import_id"]))

    bus.subscribe("analytics", ANALYTICS_TYPES)(record_email_event)
    bus.subscribe("sender", ["sending_settings.updated"])(record_sender_defaults)
    bus.subscribe("domains", DOMAIN_TYPES)(record_domain_state)
    bus.subscribe("engagement", ENGAGEMENT_TYPES)(apply_engagement)
