"""Send lanes (issue 13): a small send from a tenant with a small backlog is accepted into the
express lane, which the `express` process claims apart from every bulk batch; the workers'
bulk lane takes an express message only once it has waited `express_takeover_seconds`.

In process (the service against the real Postgres): which sends are express, which claim
takes what. As deployed (real `api|relay|worker|express` processes on the real broker): with
both lanes racing for every express message, each recipient gets exactly one provider
request and the bulk drains; with the express process down, the workers send its messages.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import asyncpg
import httpx
import pytest

from libs.common.bus import dlq_depth
from libs.common.vault import Vault, make_client
from services.delivery import repository as repo
from tests.fakes.dns_server import FakeDns
from tests.integration.delivery.conftest import Harness, write_credentials
from tests.integration.delivery.test_worker_kill import (
    _env,
    _headers,
    _post_bulk,
    _sender_domain,
    _verify_sender_domain,
)
from tests.integration.deploy.conftest import grace_period
from tests.principals import bind_principal


async def _lanes(h: Harness, ids: list[str]) -> dict[str, str]:
    async with h.service.pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, lane FROM messages WHERE id = ANY($1::text[])", ids)
    return {r["id"]: r["lane"] for r in rows}


async def _status(h: Harness, message_id: str) -> str:
    async with h.service.pool.acquire() as conn:
        status: str = await conn.fetchval("SELECT status FROM messages WHERE id = $1", message_id)
    return status


def _requests_to(fakes: dict[str, Any], to: str) -> int:
    """Provider requests for `to`, every fake ESP's."""
    return sum(Counter(f.recipients())[to] for f in fakes.values())


async def test_a_small_send_goes_express_and_only_the_express_claim_takes_it_at_once(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    h = harness
    to = f"x-{h.tenant}@example.com"
    message_id = await h.send(to=to, variables={"name": "X"})
    assert await _lanes(h, [message_id]) == {message_id: "express"}

    # The workers' fair claim leaves it to the express lane (rolled back: other tests'
    # leftovers in this shared database stay as they were).
    async with h.service.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            claimed = await repo.claim_fair(
                conn, 1000, 60, express_after=h.service.settings.express_takeover_seconds
            )
        finally:
            await tx.rollback()
    assert message_id not in {c["id"] for c in claimed}

    # What the accept's NOTIFY names, claimed by id.
    assert await h.service.send_express([message_id]) == 1
    assert await _status(h, message_id) == "sent"
    assert _requests_to(reset_fakes, to) == 1
    assert await h.service.send_express([message_id]) == 0  # nothing left to claim
    # Its work item, due at the takeover: nothing left to claim, nothing sent again.
    await h.service.dispatch([message_id])
    assert _requests_to(reset_fakes, to) == 1


async def test_the_express_poll_claims_what_no_notify_named(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    """A retry due, a requeued claim: the express process's poll claims due express
    messages from the express index."""
    h = harness
    to = f"poll-{h.tenant}@example.com"
    message_id = await h.send(to=to, variables={"name": "P"})
    while await h.service.send_express():
        pass
    assert await _status(h, message_id) == "sent"
    assert _requests_to(reset_fakes, to) == 1


@pytest.mark.parametrize("harness", [{"express_max_backlog": 3}], indirect=True)
async def test_larger_sends_and_a_tenant_with_a_backlog_go_to_the_bulk_lane(
    harness: Harness,
) -> None:
    h = harness

    async def bulk(n: int) -> list[str]:
        r = await h.client.post(
            "/api/v1/emails/send-bulk",
            headers=h.headers(plan="unlimited"),
            json={
                "from": "team@acme.example.com",
                "subject": "Bulk",
                "text": "t",
                "recipients": [{"email": f"b{i}-{n}@example.com"} for i in range(n)],
            },
        )
        assert r.status_code == 202, r.text
        async with h.service.pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id FROM messages WHERE batch_id = $1", r.json()["data"]["batch_id"]
            )
        return [row["id"] for row in rows]

    large = await bulk(h.service.settings.express_max_recipients + 1)
    assert set((await _lanes(h, large)).values()) == {"bulk"}
    # Its 11 queued messages are a backlog of 3 or more: the next single send waits in the
    # bulk lane too, behind the tenant's own mail, where the fair claim orders it.
    single = await h.send(to="after-backlog@example.com", variables={"name": "A"})
    assert (await _lanes(h, [single]))[single] == "bulk"

    # The express claim reads no bulk message.
    async with h.service.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            claimed = await repo.claim_express(conn, 1000, 60)
        finally:
            await tx.rollback()
    assert not {c["id"] for c in claimed} & {*large, single}
    await h.drain()


@pytest.mark.parametrize("harness", [{"express_max_recipients": 0}], indirect=True)
async def test_the_express_lane_off_sends_everything_through_the_workers(harness: Harness) -> None:
    h = harness
    message_id = await h.send(to="off@example.com", variables={"name": "O"})
    assert await _lanes(h, [message_id]) == {message_id: "bulk"}
    await h.service.dispatch([message_id])
    assert await _status(h, message_id) == "sent"


async def test_the_workers_take_over_an_express_message_that_waited(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    h = harness
    to = f"late-{h.tenant}@example.com"
    message_id = await h.send(to=to, variables={"name": "L"})
    assert await _lanes(h, [message_id]) == {message_id: "express"}
    # Its work item, run before the takeover: the workers leave it to the express lane.
    await h.service.dispatch([message_id])
    assert await _status(h, message_id) == "queued"
    # Waited longer than the takeover (the express process down): the workers send it.
    async with h.service.pool.acquire() as conn:
        await conn.execute(
            "UPDATE messages SET next_attempt_at = now() - make_interval(secs => $2) WHERE id = $1",
            message_id,
            h.service.settings.express_takeover_seconds + 1,
        )
    await h.service.dispatch([message_id])
    assert await _status(h, message_id) == "sent"
    assert _requests_to(reset_fakes, to) == 1


# ---------------------------------------------------------------- as deployed

BULK = 2_000
SMALL = 40


async def _send_singles(api_url: str, tenant: str, tag: str) -> list[str]:
    hooks = {"request": [bind_principal]}
    ids: list[str] = []
    async with httpx.AsyncClient(base_url=api_url, timeout=60, event_hooks=hooks) as client:
        for i in range(SMALL):
            r = await client.post(
                "/api/v1/emails/send",
                headers=_headers(tenant),
                json={
                    "to": f"{tag}{i}@small.example.org",
                    "from": f"hi@{_sender_domain(tenant)}",
                    "subject": "Hi",
                    "text": "Hello",
                },
            )
            assert r.status_code == 202, r.text
            ids.append(r.json()["data"]["message_id"])
    return ids


async def _settled(
    conn: asyncpg.Connection, tenants: list[str], procs: list[Any]
) -> dict[str, int]:
    """Wait until no message of `tenants` is queued or sending; their statuses counted."""
    counts: dict[str, int] = {}
    for _ in range(1500):  # a hang fails with the state, not the suite's timeout
        rows = await conn.fetch(
            "SELECT status, count(*) AS n FROM delivery.messages WHERE tenant_id = ANY($1)"
            " GROUP BY status",
            tenants,
        )
        counts = {r["status"]: r["n"] for r in rows}
        if not {"queued", "sending"} & counts.keys():
            return counts
        for p in procs:
            assert p.proc.poll() is None, p.logs()
        await asyncio.sleep(0.1)
    raise AssertionError(f"not settled: {counts}\n" + "\n".join(p.logs() for p in procs))


async def _pipeline(
    processes: Any,
    env: dict[str, str],
    fakes: dict[str, Any],
    creds_path: str,
    vault_dev: Any,
    dns: FakeDns,
    tenants: list[str],
    kinds: tuple[str, ...],
) -> list[Any]:
    vault = Vault(make_client(vault_dev.addr, token=vault_dev.token))
    for tenant in tenants:
        await write_credentials(vault, creds_path, fakes, tenant)
    procs = [processes(kind, **env) for kind in kinds]
    for p in procs:
        await asyncio.to_thread(p.wait_ready, 60.0)
    for tenant in tenants:
        await _verify_sender_domain(procs[0].url, tenant, dns)
    return procs


@pytest.mark.slow
async def test_both_lanes_racing_send_each_message_once_and_the_bulk_drains(
    processes: Any,
    reset_fakes: dict[str, Any],
    creds_path: str,
    vault_dev: Any,
    amqp_url: str,
    test_database: str,
    unique: str,
    fake_dns: FakeDns,
) -> None:
    """A 2,000-recipient bulk of one tenant and 40 single sends of another, with the express
    process running beside the worker and the takeover at 0: the worker's fair claim competes
    with the express lane for every express message from the moment it is accepted."""
    from tests.conftest import service_dsn

    big, small = f"t_{unique}", f"t_{unique}s"
    env = {
        **_env(reset_fakes, creds_path, vault_dev, fake_dns),
        "PM_DEFAULT_ROUTES": json.dumps({"marketing": ["mailgun"], "transactional": ["mailgun"]}),
        "PM_CLAIM_LIMIT": "100",
        "PM_EXPRESS_TAKEOVER_SECONDS": "0",
    }
    procs = await _pipeline(
        processes,
        env,
        reset_fakes,
        creds_path,
        vault_dev,
        fake_dns,
        [big, small],
        ("api", "relay", "worker", "express"),
    )
    api = procs[0]
    recipients = [
        {"email": f"r{i}@example.com", "personalization": {"name": "R"}} for i in range(BULK)
    ]
    batch_id, singles = await asyncio.gather(
        _post_bulk(api.url, big, recipients, 100), _send_singles(api.url, small, "s")
    )

    conn = await asyncpg.connect(service_dsn("delivery"))
    try:
        counts = await _settled(conn, [big, small], procs)
        lanes = dict(
            await conn.fetch(
                "SELECT lane, count(*) FROM delivery.messages WHERE tenant_id = $1 GROUP BY lane",
                small,
            )
        )
        bulk_lanes = await conn.fetch(
            "SELECT DISTINCT lane FROM delivery.messages WHERE batch_id = $1", batch_id
        )
        timeline = await conn.fetchval(
            "SELECT count(*) FROM delivery.messages"
            " WHERE tenant_id = ANY($1) AND sent_at IS NOT NULL",
            [big, small],
        )
    finally:
        await conn.close()
    assert counts == {"sent": BULK + SMALL}  # the bulk drained, nothing failed
    assert lanes == {"express": SMALL}
    assert [r["lane"] for r in bulk_lanes] == ["bulk"]
    sent = Counter(reset_fakes["mailgun"].recipients())
    expected = {r["email"] for r in recipients} | {f"s{i}@small.example.org" for i in range(SMALL)}
    assert set(sent) == expected and set(sent.values()) == {1}  # each exactly once, none lost
    assert timeline == BULK + SMALL  # each recorded sent once (`sent_at`)
    assert len(singles) == SMALL
    assert await dlq_depth(amqp_url, "delivery.send") == 0
    # SIGTERM (a rollout): the express process stops its claim loops and exits cleanly
    # within its Deployment's grace period.
    express = procs[3]
    express.proc.terminate()
    code = await asyncio.to_thread(express.proc.wait, grace_period("delivery", "express"))
    assert code == 0, express.logs()


@pytest.mark.slow
async def test_with_the_express_process_down_the_workers_send_its_messages(
    processes: Any,
    reset_fakes: dict[str, Any],
    creds_path: str,
    vault_dev: Any,
    test_database: str,
    unique: str,
    fake_dns: FakeDns,
) -> None:
    """No express process: each express message's SendBatch (due at the takeover) has the
    worker send it. Nothing is stranded by a lane nobody runs."""
    from tests.conftest import service_dsn

    small = f"t_{unique}"
    env = {
        **_env(reset_fakes, creds_path, vault_dev, fake_dns),
        "PM_DEFAULT_ROUTES": json.dumps({"marketing": ["mailgun"], "transactional": ["mailgun"]}),
        "PM_EXPRESS_TAKEOVER_SECONDS": "1",
    }
    procs = await _pipeline(
        processes,
        env,
        reset_fakes,
        creds_path,
        vault_dev,
        fake_dns,
        [small],
        ("api", "relay", "worker"),
    )
    await _send_singles(procs[0].url, small, "d")
    conn = await asyncpg.connect(service_dsn("delivery"))
    try:
        counts = await _settled(conn, [small], procs)
        lanes = await conn.fetch(
            "SELECT DISTINCT lane FROM delivery.messages WHERE tenant_id = $1", small
        )
    finally:
        await conn.close()
    assert counts == {"sent": SMALL}
    assert [r["lane"] for r in lanes] == ["express"]
    sent = Counter(reset_fakes["mailgun"].recipients())
    assert set(sent) == {f"d{i}@small.example.org" for i in range(SMALL)}
    assert set(sent.values()) == {1}
