"""The send pipeline as deployed: real `python -m services.delivery api|relay|worker` processes
on the real broker. A worker is SIGKILLed in the middle of a 10,000-recipient bulk send while
provider requests are in flight; a second worker finishes. Every recipient gets exactly one
provider request (the fake ESP's log), and every message ends sent or, for the requests in
flight at the kill, failed as `provider_outcome_unknown` (the provider got them; we never
resend what it may have accepted)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import asyncpg
import httpx
import pytest

from libs.common.bus import dlq_depth
from libs.common.principal import Principal
from libs.common.vault import Vault, make_client
from tests.fakes.dns_server import FakeDns
from tests.integration.delivery.conftest import write_credentials
from tests.principals import bind_principal, unbound_principal

N = 10_000
BATCH = 250  # 40 work items
PREFETCH = 4  # work items a worker handles at once
ANSWERED_BEFORE_KILL = 12  # Mailgun calls answered before the fake starts holding


def _env(fakes: dict[str, Any], creds_path: str, vault_dev: Any, dns: FakeDns) -> dict[str, str]:
    return {
        "PM_DNS_RESOLVERS": dns.address,
        "PM_VAULT_ADDR": vault_dev.addr,
        "PM_VAULT_TOKEN": vault_dev.token,
        "PM_TRACKING_SIGNING_KEY": "test-tracking-key-0123456789abcdef-0123456789",
        "PM_TRACKING_BASE_URL": "http://track.test",
        "PM_ESP_CREDENTIALS_PATH": f"{creds_path}/platform",
        "PM_TENANT_CREDENTIALS_PATH": creds_path,
        "PM_FORCE_SANDBOX": "false",
        "PM_MAILGUN_BASE_URL": fakes["mailgun"].url,
        "PM_POSTMARK_BASE_URL": fakes["postmark"].url,
        # The fake is not rate limited; the seed's 300/s would only make the test slow.
        "PM_PROVIDER_LIMITS": json.dumps({"mailgun": [1_000_000, 1_000_000]}),
        "PM_CONSUMER_PREFETCH": str(PREFETCH),
        # One claim (one provider call) per work item in flight, as the assertions count:
        # a claim takes a work item's worth, and every work item held may send at once.
        "PM_SEND_CONCURRENCY": str(PREFETCH),
        "PM_CLAIM_LIMIT": str(BATCH),
        # Also when the tenant is alone in the queue (run on its own, it is: a claim would
        # then take 1,000, all 10,000 would be sent in the answered calls and none held).
        "PM_CLAIM_LIMIT_ALONE": str(BATCH),
        "PM_SEND_LEASE_SECONDS": "3",
        "PM_SWEEP_INTERVAL_SECONDS": "0.5",
    }


async def _counts(conn: asyncpg.Connection, batch_id: str) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT status || CASE WHEN status = 'sending' AND call_started_at IS NOT NULL"
        " THEN '+started' ELSE '' END AS s, count(*) AS n FROM delivery.messages"
        " WHERE batch_id = $1 GROUP BY 1",
        batch_id,
    )
    return {r["s"]: r["n"] for r in rows}


async def _until_held(
    mailgun: Any, worker: Any, conn: asyncpg.Connection, batch_id: str, seconds: float = 60
) -> None:
    """Until the fake provider holds one call per work item the worker may handle at once;
    fails with the batch's state when it does not come to that."""
    deadline = asyncio.get_running_loop().time() + seconds
    while mailgun.held < PREFETCH:
        assert worker.proc.poll() is None, worker.logs()
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"{mailgun.held} provider calls held, not {PREFETCH}:"
                f" {await _counts(conn, batch_id)}"
            )
        await asyncio.sleep(0.05)


def _headers(tenant: str) -> dict[str, str]:
    principal = Principal(
        tenant_id=tenant,
        subject_type="api_key",
        subject_id="key_bulk",
        scopes=["send_email", "manage_domains"],
        plan="pro",
        mode="live",
    )
    return {"X-PM-Principal": unbound_principal(principal, "delivery")}


def _sender_domain(tenant: str) -> str:
    return f"w{tenant.removeprefix('t_')}.example.com"


async def _verify_sender_domain(api_url: str, tenant: str, dns: FakeDns) -> None:
    """Live bulk sends need a verified sender domain: create it, publish, verify."""
    hooks = {"request": [bind_principal]}
    async with httpx.AsyncClient(base_url=api_url, timeout=60, event_hooks=hooks) as client:
        created = await client.post(
            "/api/v1/domains", json={"name": _sender_domain(tenant)}, headers=_headers(tenant)
        )
        assert created.status_code == 201, created.text
        domain = created.json()["data"]
        for record in domain["records"]:
            dns.set(record["host"], record["type"], record["value"])
        verified = await client.post(
            f"/api/v1/domains/{domain['id']}/verify", headers=_headers(tenant)
        )
        assert verified.json()["data"]["status"] == "verified", verified.text


async def _post_bulk(
    api_url: str, tenant: str, recipients: list[dict[str, Any]], batch: int
) -> str:
    """A bulk send through the real delivery API, as the gateway would forward it."""
    hooks = {"request": [bind_principal]}
    async with httpx.AsyncClient(base_url=api_url, timeout=60, event_hooks=hooks) as client:
        r = await client.post(
            "/api/v1/emails/send-bulk",
            headers=_headers(tenant),
            json={
                "from": f"news@{_sender_domain(tenant)}",
                "subject": "Hello {{ name }}",
                "html": "<p>Hi {{ name }}</p>",
                "category": "marketing",
                "recipients": recipients,
                "batch_size": batch,
            },
        )
    assert r.status_code == 202, r.text
    return str(r.json()["data"]["batch_id"])


@pytest.mark.slow
async def _start_pipeline(
    processes: Any,
    env: dict[str, str],
    fakes: Any,
    creds_path: str,
    vault_dev: Any,
    tenant: str,
    dns: FakeDns,
) -> tuple[Any, Any, Any]:
    """Tenant credentials in Vault, then a delivery api, relay and first worker, ready."""
    vault = Vault(make_client(vault_dev.addr, token=vault_dev.token))
    await write_credentials(vault, creds_path, fakes, tenant)
    api, relay, worker = (
        processes("api", **env),
        processes("relay", **env),
        processes("worker", **env),
    )
    for p in (api, relay, worker):
        await asyncio.to_thread(p.wait_ready)
    await _verify_sender_domain(api.url, tenant, dns)
    return api, relay, worker


async def test_worker_killed_mid_bulk_send_each_recipient_gets_one_request(
    processes: Any,
    reset_fakes: dict[str, Any],
    creds_path: str,
    vault_dev: Any,
    amqp_url: str,
    test_database: str,
    unique: str,
    fake_dns: FakeDns,
) -> None:
    from tests.conftest import service_dsn

    tenant = f"t_{unique}"
    env = _env(reset_fakes, creds_path, vault_dev, fake_dns)
    api, _relay, first = await _start_pipeline(
        processes, env, reset_fakes, creds_path, vault_dev, tenant, fake_dns
    )
    mailgun = reset_fakes["mailgun"]

    mailgun.hold_after(ANSWERED_BEFORE_KILL)
    recipients = [
        {"email": f"r{i}@example.com", "personalization": {"name": f"R{i}"}} for i in range(N)
    ]
    batch_id = await _post_bulk(api.url, tenant, recipients, BATCH)

    conn = await asyncpg.connect(service_dsn("delivery"))
    try:
        # Freeze: every work item the worker holds is a provider call the fake is holding.
        # Nothing can move then, so the kill lands with requests in flight, not in between.
        await _until_held(mailgun, first, conn, batch_id)
        in_flight = {x for req in mailgun.requests()[ANSWERED_BEFORE_KILL:] for x in req.recipients}
        counts = await _counts(conn, batch_id)
        assert counts.get("sending+started") == len(in_flight) == PREFETCH * BATCH, counts
        assert counts.get("sent") == ANSWERED_BEFORE_KILL * BATCH, counts
        first.kill()  # SIGKILL: no drain; claims leased, work items unacked
        mailgun.hold.set()

        second = processes("worker", **env)
        await asyncio.to_thread(second.wait_ready)
        for _ in range(1500):  # a hang fails with the state, not the suite's timeout
            counts = await _counts(conn, batch_id)
            if not {"queued", "sending", "sending+started"} & counts.keys():
                break
            assert second.proc.poll() is None, second.logs()
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"not settled: {counts}\n{second.logs()}")

        sent = Counter(mailgun.recipients())
        assert len(sent) == N and set(sent.values()) == {1}  # each exactly once, none lost
        assert counts == {"sent": N - len(in_flight), "failed": len(in_flight)}
        unknown = await conn.fetch(
            "SELECT to_email, last_error FROM delivery.messages WHERE batch_id = $1"
            " AND status = 'failed'",
            batch_id,
        )
        assert {r["to_email"] for r in unknown} == in_flight
        assert {r["last_error"] for r in unknown} == {"provider_outcome_unknown"}
        # Every message's facts reached the outbox, and the relay published them all.
        facts = await conn.fetch(
            "SELECT event_type, count(*) AS n, count(published_at) AS published"
            " FROM delivery.outbox WHERE tenant_id = $1 GROUP BY 1",
            tenant,
        )
    finally:
        await conn.close()
    by_type = {r["event_type"]: (r["n"], r["published"]) for r in facts}
    assert by_type["email.queued"][0] == N
    assert by_type["email.sent"][0] == N - len(in_flight)
    assert by_type["email.failed"][0] == len(in_flight)
    assert await dlq_depth(amqp_url, "delivery.send") == 0


@pytest.mark.slow
async def test_worker_sigterm_mid_bulk_send_finishes_in_flight_and_loses_nothing(
    processes: Any,
    reset_fakes: dict[str, Any],
    creds_path: str,
    vault_dev: Any,
    amqp_url: str,
    test_database: str,
    unique: str,
    fake_dns: FakeDns,
) -> None:
    """SIGTERM (a rollout, a scale-down) while provider calls are in flight: the worker stops
    fetching, lets its in-flight calls finish and records them, exits 0 within the grace
    period of its Deployment; the next worker sends the rest. Nothing is lost, nothing is
    sent twice, and, unlike SIGKILL, nothing ends as `provider_outcome_unknown`."""
    from tests.conftest import service_dsn
    from tests.integration.deploy.conftest import grace_period

    n, batch = 2_000, 100
    tenant = f"t_{unique}"
    env = {
        **_env(reset_fakes, creds_path, vault_dev, fake_dns),
        "PM_CLAIM_LIMIT": str(batch),
        "PM_CLAIM_LIMIT_ALONE": str(batch),
    }
    api, _relay, first = await _start_pipeline(
        processes, env, reset_fakes, creds_path, vault_dev, tenant, fake_dns
    )
    mailgun = reset_fakes["mailgun"]

    mailgun.hold_after(2)
    recipients = [
        {"email": f"t{i}@example.com", "personalization": {"name": f"T{i}"}} for i in range(n)
    ]
    batch_id = await _post_bulk(api.url, tenant, recipients, batch)

    conn = await asyncpg.connect(service_dsn("delivery"))
    try:
        # The worker's every work item is an in-flight call.
        await _until_held(mailgun, first, conn, batch_id)
        first.proc.terminate()
        await asyncio.sleep(0.5)  # SIGTERM lands while the calls are still held
        mailgun.hold.set()  # the provider answers: the in-flight calls complete
        code = await asyncio.to_thread(first.proc.wait, grace_period("delivery", "worker"))
        assert code == 0, first.logs()
        after_first = await _counts(conn, batch_id)
        assert "sending" not in after_first and "sending+started" not in after_first, after_first
        assert after_first.get("sent") == (2 + PREFETCH) * batch, after_first

        second = processes("worker", **env)
        await asyncio.to_thread(second.wait_ready)
        for _ in range(1500):
            counts = await _counts(conn, batch_id)
            if counts == {"sent": n}:
                break
            assert second.proc.poll() is None, second.logs()
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"not settled: {counts}\n{second.logs()}")
    finally:
        await conn.close()
    sent = Counter(mailgun.recipients())
    assert len(sent) == n and set(sent.values()) == {1}
    assert await dlq_depth(amqp_url, "delivery.send") == 0
