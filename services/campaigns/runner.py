"""The campaign runner: turns due recipient steps into `email.requested` events for delivery.

Each transaction claims one runnable campaign (`FOR UPDATE SKIP LOCKED`, so several runners
share the work and never the same campaign at once), then a batch of its due recipient steps
(also locked). For each step it renders the content, logs the send (primary key campaign,
contact, step), enqueues the event in the outbox and moves the recipient on: all in one
commit. A runner killed mid-batch rolls the whole batch back, so a restart neither skips nor
repeats a recipient step.

The campaign's sending window (timezone, days, hours), daily cap and random spacing decide
how many steps a batch may take and when the campaign is looked at next (`next_run_at`).
Pausing updates the campaign row under its lock, so it waits for at most the batch in
flight; after that no new send is claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
from prometheus_client import Counter

from libs.common import outbox
from libs.common.events import (
    CampaignCompleted,
    CampaignSent,
    CampaignStarted,
    EmailRequested,
    Envelope,
    make_event,
    new_event_id,
    stamp_events,
)
from services.campaigns import repository as repo
from services.campaigns.repository import RecipientAdvance, SendRecord
from services.campaigns.scheduling import Window, spacing_delay
from services.campaigns.templating import (
    CompiledContent,
    TemplateProblem,
    contact_context,
    render_many,
)

log = logging.getLogger(__name__)

SOURCE = "/services/campaigns"
STEPS = Counter("pm_campaign_steps_total", "Recipient steps the runner handled", ["outcome"])


def request_id_for(campaign_id: UUID, contact_id: UUID, step: int) -> str:
    """Stable per recipient step, so delivery can deduplicate a send request too."""
    return f"cmp_{campaign_id.hex}_{contact_id.hex}_{step}"


class CampaignRunner:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        batch_size: int = 500,
        idle_seconds: float = 0.5,
        render_seconds: float = 10.0,
    ):
        self.pool = pool
        self.batch_size = batch_size
        self.idle_seconds = idle_seconds
        # Rendering a batch holds the campaign's lock: steps not rendered by then wait for
        # the next batch (a template at its time limit costs seconds per recipient).
        self.render_seconds = render_seconds
        # Steps are frozen when a campaign starts, so compiled content can be kept.
        self._compiled: OrderedDict[UUID, list[CompiledContent]] = OrderedDict()

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop`; sleeps `idle_seconds` when no campaign is due."""
        backoff = 0.5
        while not stop.is_set():
            try:
                claimed = await self.run_once()
                backoff = 0.5
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("campaign runner: database error, retrying", extra={"error": str(exc)})
                claimed = False
                await _wait(stop, backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if not claimed:
                await _wait(stop, self.idle_seconds)

    async def run_once(self, now: datetime | None = None) -> bool:
        """One transaction on one due campaign; False when no campaign was due."""
        now = now or datetime.now(UTC)
        async with self.pool.acquire() as conn, conn.transaction():
            campaign = await repo.claim_runnable_campaign(conn, now)
            if campaign is None:
                return False
            await self._advance(conn, campaign, now)
            return True

    async def drain(self, now: datetime | None = None) -> None:
        """Run until no campaign is due at `now` (default: the clock; tests, benchmarks)."""
        while await self.run_once(now):
            pass

    async def _advance(self, conn: asyncpg.Connection, campaign: Any, now: datetime) -> None:
        cid: UUID = campaign["id"]
        if campaign["status"] == "scheduled":
            await repo.update_campaign(conn, cid, {"status": "running", "started_at": now})
            await outbox.enqueue(
                conn,
                self._event(
                    campaign,
                    CampaignStarted(
                        campaign_id=str(cid),
                        name=campaign["name"],
                        recipients=campaign["recipient_count"],
                    ),
                ),
            )
        window = Window.from_json(campaign["schedule"])
        opens = window.next_open(now)
        if opens > now:
            await repo.set_next_run(conn, cid, opens)
            return
        limit = self.batch_size
        day = window.local_day(now)
        if campaign["daily_cap"]:
            left = campaign["daily_cap"] - await repo.sent_on_day(conn, cid, day)
            if left <= 0:
                await repo.set_next_run(conn, cid, window.next_open(window.next_local_day(now)))
                return
            limit = min(limit, left)
        spaced = campaign["spacing_max_seconds"] > 0
        if spaced:
            limit = 1
        rows = await repo.claim_due_recipients(conn, cid, now, limit)
        if not rows:
            due = await repo.next_pending_due(conn, cid)
            if due is None:
                await repo.update_campaign(conn, cid, {"status": "completed", "completed_at": now})
                await outbox.enqueue(
                    conn,
                    self._event(
                        campaign, CampaignCompleted(campaign_id=str(cid), name=campaign["name"])
                    ),
                )
                self._compiled.pop(cid, None)
            else:
                await repo.set_next_run(conn, cid, max(due, now))
            return
        sent = await self._send(conn, campaign, rows, now)
        if sent:
            await repo.add_sent_on_day(conn, cid, day, sent)
        if not await repo.first_steps_pending(conn, cid) and await repo.mark_campaign_sent(
            conn, cid
        ):
            await outbox.enqueue(
                conn,
                self._event(
                    campaign,
                    CampaignSent(
                        campaign_id=str(cid),
                        name=campaign["name"],
                        recipients=campaign["recipient_count"],
                    ),
                ),
            )
        delay = spacing_delay(campaign["spacing_min_seconds"], campaign["spacing_max_seconds"])
        # Without spacing, come straight back: more steps may be due.
        await repo.set_next_run(
            conn, cid, now + timedelta(seconds=delay) if sent and spaced else now
        )

    async def _send(
        self, conn: asyncpg.Connection, campaign: Any, rows: list[Any], now: datetime
    ) -> int:
        cid: UUID = campaign["id"]
        steps: list[dict[str, Any]] = campaign["steps"]
        compiled = self._content(cid, steps)
        settings = campaign["settings"]
        # analytics_enabled: false turns open and click tracking off.
        tracking = settings.get("analytics_enabled", True)
        sent: list[tuple[UUID, int, str, str]] = []  # contact, step, request id, email
        advances: list[RecipientAdvance] = []
        # One validated email.requested per batch: each recipient's event is stamped from it
        # (`stamp_events`: a fresh id and the recipient's fields), not a pydantic model and
        # envelope per recipient; `enqueue_copy` writes the stamped dicts as they are.
        template = _requested(
            EmailRequested(
                request_id="",
                to="",
                from_=campaign["from_email"],
                from_name=campaign["from_name"],
                reply_to=campaign["reply_to"],
                campaign_id=str(cid),
                category=settings.get("category", "marketing"),
                track_opens=tracking and settings.get("track_opens", True),
                track_clicks=tracking and settings.get("track_clicks", True),
                mode=campaign["mode"],
                prerendered=True,
            ),
            campaign["tenant_id"],
            f"campaigns/{cid}",
        )
        subject = f"campaigns/{cid}"
        items: list[tuple[str, dict[str, Any]]] = []
        live = [r for r in rows if r["email"] is not None and r["contact_status"] == "active"]
        rendered = await render_many(
            [
                compiled[r["next_step"] - 1].job(contact_context(dict(r), r["personalization"]))
                for r in live
            ],
            deadline=time.monotonic() + self.render_seconds,
        )
        contents = dict(zip((r["contact_id"] for r in live), rendered, strict=True))
        for r in rows:
            contact_id: UUID = r["contact_id"]
            number: int = r["next_step"]
            if r["email"] is None or r["contact_status"] != "active":
                reason = (
                    "contact_deleted" if r["email"] is None else f"contact_{r['contact_status']}"
                )
                advances.append(RecipientAdvance(contact_id, number, now, "stopped", reason, False))
                STEPS.labels("stopped").inc()
                continue
            content = contents[contact_id]
            if content is None:
                continue  # not rendered in time: stays due, taken by the next batch
            if isinstance(content, TemplateProblem):
                advances.append(
                    RecipientAdvance(
                        contact_id, number, now, "failed", content.message[:500], False
                    )
                )
                STEPS.labels("failed").inc()
                continue
            request_id = request_id_for(cid, contact_id, number)
            items.append(
                (
                    subject,
                    {
                        "request_id": request_id,
                        "to": r["email"],
                        "subject": content.subject,
                        "html": content.html,
                        "text": content.text,
                        "contact_id": str(contact_id),
                        "step": number,
                        "tags": list(r["tags"] or []),
                    },
                )
            )
            sent.append((contact_id, number, request_id, r["email"]))
            if number < len(steps):
                due = now + timedelta(days=float(steps[number]["delay_days"]))
                advances.append(
                    RecipientAdvance(contact_id, number + 1, due, "pending", None, True)
                )
            else:
                advances.append(RecipientAdvance(contact_id, number, now, "done", None, True))
        events = list(stamp_events(template, items))
        sends = [
            SendRecord(contact_id, number, request_id, event["id"], email)
            for (contact_id, number, request_id, email), event in zip(sent, events, strict=True)
        ]
        await repo.record_sends(conn, cid, sends, advances, now)
        # One COPY for the batch's events (the same rows as INSERTs; a fraction of the cost).
        await outbox.enqueue_copy(conn, events)
        STEPS.labels("sent").inc(len(sends))
        return len(sends)

    def _content(self, cid: UUID, steps: list[dict[str, Any]]) -> list[CompiledContent]:
        compiled = self._compiled.get(cid)
        if compiled is None:
            compiled = [CompiledContent(s["subject"], s.get("html"), s.get("text")) for s in steps]
            self._compiled[cid] = compiled
            while len(self._compiled) > 256:
                self._compiled.popitem(last=False)
        return compiled

    @staticmethod
    def _event(campaign: Any, data: Any) -> Any:
        return make_event(
            data,
            tenant_id=campaign["tenant_id"],
            source=SOURCE,
            subject=f"campaigns/{campaign['id']}",
            mode=campaign["mode"],
        )


def _requested(data: EmailRequested, tenant_id: str, subject: str) -> Envelope:
    return make_event(data, tenant_id=tenant_id, source=SOURCE, subject=subject, mode=data.mode)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


__all__ = ["CampaignRunner", "new_event_id", "request_id_for"]
