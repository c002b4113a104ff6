"""The campaign runner against the real database and bus: sequences that stop on reply,
sending windows, daily caps, spacing, pause, suppressed contacts, and a runner killed with
SIGKILL mid-campaign whose restart neither skips nor repeats a recipient step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import httpx

from libs.common.events import EmailReplied, EmailUnsubscribed, Envelope, make_event
from services.campaigns.runner import CampaignRunner
from tests.conftest import ServiceProcess
from tests.integration.campaigns.conftest import eventually, publish

CAMPAIGNS = "/api/v1/campaigns"


async def seed(
    api: httpx.AsyncClient, auth: dict[str, str], n: int, tag: str
) -> list[dict[str, Any]]:
    rows = [
        {"email": f"{tag}-{i}@example.org", "first_name": f"Name{i}", "tags": [tag]}
        for i in range(n)
    ]
    r = await api.post("/api/v1/contacts/import", json=rows, headers=auth, timeout=60)
    assert r.json()["data"]["created"] == n
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {
            "tag": tag,
            "limit": 500,
            **({"cursor": cursor} if cursor else {}),
        }
        page = (await api.get("/api/v1/contacts", params=params, headers=auth)).json()
        out += page["data"]
        cursor = page["meta"]["pagination"].get("next_cursor")
        if not cursor:
            return out


async def start(api: httpx.AsyncClient, auth: dict[str, str], **body: Any) -> str:
    base: dict[str, Any] = {
        "name": "Sequence",
        "from_email": "founder@penguin.example",
        "subject": "Idea for {{ company | default('your team') }}, {{ first_name }}",
        "content": {"text": "Hi {{ first_name }}", "html": "<p>Hi {{ first_name }}</p>"},
        "follow_ups": [{"delay_days": 2, "content": {"text": "Following up, {{ first_name }}"}}],
    }
    base.update(body)
    r = await api.post(CAMPAIGNS, json=base, headers=auth)
    assert r.status_code == 201, r.text
    cid = r.json()["data"]["id"]
    r = await api.post(f"{CAMPAIGNS}/{cid}/start", headers=auth)
    assert r.status_code == 200, r.text
    return str(cid)


async def requested(pool: asyncpg.Pool, campaign_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT payload FROM outbox WHERE event_type = 'email.requested'"
        " AND payload->'data'->>'campaign_id' = $1 ORDER BY created_at",
        campaign_id,
    )
    return [r["payload"] for r in rows]


async def status_of(api: httpx.AsyncClient, auth: dict[str, str], cid: str) -> str:
    return str((await api.get(f"{CAMPAIGNS}/{cid}", headers=auth)).json()["data"]["status"])


async def test_two_step_sequence_goes_only_to_contacts_who_did_not_reply(
    api: httpx.AsyncClient,
    auth: dict[str, str],
    tenant: str,
    campaigns_pool: asyncpg.Pool,
    amqp_url: str,
    worker: ServiceProcess,
) -> None:
    contacts = await seed(api, auth, 6, "seq")
    cid = await start(api, auth, recipients={"tags": ["seq"]})
    runner = CampaignRunner(campaigns_pool)
    t0 = datetime.now(UTC)
    await runner.drain(t0)

    step1 = await requested(campaigns_pool, cid)
    assert sorted(e["data"]["to"] for e in step1) == sorted(c["email"] for c in contacts)
    first = step1[0]
    assert first["tenant_id"] == tenant and first["data"]["step"] == 1
    assert first["data"]["from"] == "founder@penguin.example" and first["data"]["mode"] == "live"
    by_email = {c["email"]: c for c in contacts}
    name = by_email[first["data"]["to"]]["first_name"]
    assert first["data"]["subject"] == f"Idea for your team, {name}"
    assert first["data"]["html"] == f"<p>Hi {name}</p>"
    # Rendered here, so delivery must not evaluate contact data as a template again.
    assert first["data"]["prerendered"] is True
    # Stamped from one model per batch: each event is exactly what its own model would write
    # (every field, aliases, types), its send logged under its id.
    for event in step1:
        envelope = Envelope.model_validate(event)
        assert envelope.payload().model_dump(mode="json", by_alias=True) == event["data"]
        assert envelope.subject == f"campaigns/{cid}" and envelope.type == "email.requested"
    logged = await campaigns_pool.fetch(
        "SELECT event_id::text AS id FROM campaign_sends WHERE campaign_id = $1", UUID(cid)
    )
    assert sorted(r["id"] for r in logged) == sorted(e["id"] for e in step1)

    # Two contacts reply to step 1 (as delivery reports it on pm.events).
    repliers = [c["id"] for c in contacts[:2]]
    await publish(
        amqp_url,
        *[
            make_event(
                EmailReplied(
                    message_id=f"msg-{c}",
                    to=by_id["email"],
                    campaign_id=cid,
                    contact_id=c,
                    step=1,
                ),
                tenant_id=tenant,
                source="/services/delivery",
            )
            for c in repliers
            for by_id in [next(x for x in contacts if x["id"] == c)]
        ],
    )

    async def replied() -> bool:
        n = await campaigns_pool.fetchval(
            "SELECT count(*) FROM campaign_recipients WHERE campaign_id = $1 AND state = 'replied'",
            UUID(cid),
        )
        return bool(n == 2)

    await eventually(replied, timeout=30)

    # Not yet due: nothing more is sent before the delay.
    await runner.drain(t0 + timedelta(days=1))
    assert len(await requested(campaigns_pool, cid)) == 6
    await runner.drain(t0 + timedelta(days=2, seconds=1))
    events = await requested(campaigns_pool, cid)
    step2 = [e for e in events if e["data"]["step"] == 2]
    assert sorted(e["data"]["contact_id"] for e in step2) == sorted(c["id"] for c in contacts[2:])
    assert step2[0]["data"]["subject"].startswith("Re: Idea for your team, ")
    assert await status_of(api, auth, cid) == "completed"
    done = await campaigns_pool.fetchval(
        "SELECT count(*) FROM outbox WHERE event_type = 'campaign.completed'"
        " AND payload->'data'->>'campaign_id' = $1",
        cid,
    )
    assert done == 1

    stats = (await api.get(f"/api/v1/analytics/campaigns/{cid}", headers=auth)).json()["data"]
    assert stats["requested"] == 10
    assert stats["recipients"]["replied"] == 2 and stats["recipients"]["done"] == 4


async def test_window_cap_and_spacing(
    api: httpx.AsyncClient, auth: dict[str, str], campaigns_pool: asyncpg.Pool
) -> None:
    await seed(api, auth, 5, "win")
    cid = await start(
        api,
        auth,
        recipients={"tags": ["win"]},
        follow_ups=[],
        schedule={"timezone": "Europe/Paris", "days": ["mon"], "start_hour": 9, "end_hour": 17},
        daily_cap=3,
    )
    runner = CampaignRunner(campaigns_pool)
    sunday = datetime(2030, 1, 6, 12, 0, tzinfo=UTC)  # Sunday
    await runner.drain(sunday)
    assert await requested(campaigns_pool, cid) == []
    next_run = await campaigns_pool.fetchval(
        "SELECT next_run_at FROM campaigns WHERE id = $1", UUID(cid)
    )
    assert next_run == datetime(2030, 1, 7, 8, 0, tzinfo=UTC)  # Monday 09:00 Paris

    monday = datetime(2030, 1, 7, 9, 30, tzinfo=UTC)
    await runner.drain(monday)
    assert len(await requested(campaigns_pool, cid)) == 3  # the daily cap
    next_run = await campaigns_pool.fetchval(
        "SELECT next_run_at FROM campaigns WHERE id = $1", UUID(cid)
    )
    assert next_run == datetime(2030, 1, 14, 8, 0, tzinfo=UTC)  # next Monday's window
    await runner.drain(datetime(2030, 1, 14, 8, 0, tzinfo=UTC))
    assert len(await requested(campaigns_pool, cid)) == 5
    await runner.drain(datetime(2030, 1, 14, 8, 1, tzinfo=UTC))
    assert await status_of(api, auth, cid) == "completed"

    await seed(api, auth, 3, "spaced")
    cid = await start(
        api,
        auth,
        recipients={"tags": ["spaced"]},
        follow_ups=[],
        spacing={"min_seconds": 60, "max_seconds": 120},
    )
    now = datetime.now(UTC)
    await runner.drain(now)
    assert len(await requested(campaigns_pool, cid)) == 1  # one send, then wait
    gap = await campaigns_pool.fetchval(
        "SELECT next_run_at FROM campaigns WHERE id = $1", UUID(cid)
    )
    assert timedelta(seconds=60) <= gap - now <= timedelta(seconds=120)
    await runner.drain(gap)
    assert len(await requested(campaigns_pool, cid)) == 2


async def test_pause_stops_sends_and_resume_continues(
    api: httpx.AsyncClient, auth: dict[str, str], campaigns_pool: asyncpg.Pool
) -> None:
    await seed(api, auth, 4, "pause")
    cid = await start(api, auth, recipients={"tags": ["pause"]}, follow_ups=[])
    assert (await api.post(f"{CAMPAIGNS}/{cid}/pause", headers=auth)).status_code == 200
    runner = CampaignRunner(campaigns_pool)
    await runner.drain(datetime.now(UTC) + timedelta(minutes=5))
    assert await requested(campaigns_pool, cid) == []
    assert (await api.post(f"{CAMPAIGNS}/{cid}/resume", headers=auth)).status_code == 200
    await runner.drain()
    assert len(await requested(campaigns_pool, cid)) == 4


async def test_unsubscribed_between_steps_gets_no_follow_up(
    api: httpx.AsyncClient,
    auth: dict[str, str],
    tenant: str,
    campaigns_pool: asyncpg.Pool,
    amqp_url: str,
    worker: ServiceProcess,
) -> None:
    contacts = await seed(api, auth, 3, "unsub")
    cid = await start(api, auth, recipients={"tags": ["unsub"]})
    runner = CampaignRunner(campaigns_pool)
    t0 = datetime.now(UTC)
    await runner.drain(t0)
    gone = contacts[0]
    await publish(
        amqp_url,
        make_event(
            EmailUnsubscribed(
                message_id="m-u", to=gone["email"], campaign_id=cid, contact_id=gone["id"], step=1
            ),
            tenant_id=tenant,
            source="/services/delivery",
        ),
    )

    async def unsubscribed() -> bool:
        r = await api.get(f"/api/v1/contacts/{gone['id']}", headers=auth)
        return bool(r.json()["data"]["status"] == "unsubscribed")

    await eventually(unsubscribed, timeout=30)
    await runner.drain(t0 + timedelta(days=3))
    step2 = [e for e in await requested(campaigns_pool, cid) if e["data"]["step"] == 2]
    assert sorted(e["data"]["contact_id"] for e in step2) == sorted(c["id"] for c in contacts[1:])
    reason = await campaigns_pool.fetchval(
        "SELECT stop_reason FROM campaign_recipients WHERE campaign_id = $1 AND contact_id = $2",
        UUID(cid),
        UUID(gone["id"]),
    )
    assert reason == "contact_unsubscribed"


async def test_runner_killed_mid_campaign_sends_every_step_exactly_once(
    api: httpx.AsyncClient,
    auth: dict[str, str],
    campaigns_pool: asyncpg.Pool,
    processes: Any,
) -> None:
    n = 3000
    await seed(api, auth, n, "kill")
    # Step 2 falls due ~1.7 s after step 1, so both steps run through the kill and restart.
    cid = await start(
        api,
        auth,
        recipients={"tags": ["kill"]},
        follow_ups=[{"delay_days": 0.00002, "content": {"text": "again {{ first_name }}"}}],
    )
    env = {"PM_RUNNER_BATCH_SIZE": "25", "PM_RUNNER_IDLE_SECONDS": "0.1"}
    first = processes("runner", **env)
    first.wait_ready(60)

    async def some_sent() -> int:
        count: int = await campaigns_pool.fetchval(
            "SELECT count(*) FROM campaign_sends WHERE campaign_id = $1", UUID(cid)
        )
        return count if count >= 500 else 0

    sent_before = await eventually(some_sent, timeout=60, interval=0.01)
    first.kill()  # SIGKILL: no graceful shutdown, a batch may be mid-transaction
    after_kill = await campaigns_pool.fetchval(
        "SELECT count(*) FROM campaign_sends WHERE campaign_id = $1", UUID(cid)
    )
    assert sent_before <= after_kill < 2 * n  # really stopped mid-campaign

    second = processes("runner", **env)
    second.wait_ready(60)

    async def completed() -> bool:
        return await status_of(api, auth, cid) == "completed"

    await eventually(completed, timeout=120, interval=0.5)
    second.terminate()
    sends = await campaigns_pool.fetch(
        "SELECT contact_id, step FROM campaign_sends WHERE campaign_id = $1", UUID(cid)
    )
    assert len(sends) == 2 * n
    assert len({(s["contact_id"], s["step"]) for s in sends}) == 2 * n
    events = await requested(campaigns_pool, cid)
    keys = [(e["data"]["contact_id"], e["data"]["step"]) for e in events]
    assert len(keys) == 2 * n and len(set(keys)) == 2 * n
    assert {e["data"]["request_id"] for e in events} == {
        f"cmp_{UUID(cid).hex}_{UUID(c).hex}_{s}" for c, s in keys
    }
