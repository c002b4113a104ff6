"""Stripe webhooks as Stripe really sends them: forged or stale signatures, the same event
twice, updates out of order, a webhook that never arrives, and billing down while Stripe
retries. Each ends with billing's state equal to Stripe's current state."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
import uuid

import asyncpg
import httpx

from tests.conftest import REPO, ServiceProcess
from tests.fakes.stripe import sign_payload
from tests.integration.billing.conftest import (
    LIVE_WHSEC,
    TEST_WHSEC,
    BillingStack,
    eventually,
    plan_events,
    principal_headers,
    processed,
    subscribed,
)
from tests.principals import BIND_HOOKS


def _event(event_id: str, created: int | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "object": "event",
            "created": created or int(time.time()),
            "type": "customer.created",
            "livemode": True,
            "data": {"object": {"id": f"cus_{uuid.uuid4().hex[:10]}", "object": "customer"}},
        }
    ).encode()


async def test_bad_signature_or_old_timestamp_is_400_and_nothing_is_stored(
    billing: BillingStack, billing_pool: asyncpg.Pool
) -> None:
    event_id = f"evt_{uuid.uuid4().hex}"
    payload = _event(event_id)
    now = int(time.time())
    attempts = {
        "wrong secret": sign_payload(payload, "whsec_not_ours", now),
        "old timestamp": sign_payload(payload, LIVE_WHSEC, now - 301),
        "future timestamp": sign_payload(payload, LIVE_WHSEC, now + 3600).replace("v1=", "v1=0"),
        "no v1": f"t={now}",
        "garbage": "nonsense",
    }
    async with httpx.AsyncClient(timeout=10, event_hooks=BIND_HOOKS) as client:
        for why, signature in attempts.items():
            resp = await client.post(
                billing.hook_url, content=payload, headers={"Stripe-Signature": signature}
            )
            assert resp.status_code == 400, why
            assert resp.json()["error"]["code"] == "invalid_stripe_signature", why
        missing = await client.post(billing.hook_url, content=payload)
        assert missing.status_code == 400
        # A body changed after signing.
        tampered = await client.post(
            billing.hook_url,
            content=payload.replace(b"customer.created", b"customer.deleted"),
            headers={"Stripe-Signature": sign_payload(payload, LIVE_WHSEC)},
        )
        assert tampered.status_code == 400
        not_json = await client.post(
            billing.hook_url,
            content=b"not json",
            headers={"Stripe-Signature": sign_payload(b"not json", LIVE_WHSEC)},
        )
        assert not_json.status_code == 400
        assert not_json.json()["error"]["code"] == "invalid_stripe_event"
        too_big = await client.post(
            billing.hook_url, content=b"x" * 1_100_000, headers={"Stripe-Signature": "t=1"}
        )
        assert too_big.status_code == 413
    assert (
        await billing_pool.fetchval("SELECT count(*) FROM stripe_events WHERE id = $1", event_id)
        == 0
    )

    # Within the tolerance, signed with the test-mode endpoint secret: stored as test mode.
    async with httpx.AsyncClient(timeout=10, event_hooks=BIND_HOOKS) as client:
        ok = await client.post(
            billing.hook_url,
            content=payload,
            headers={"Stripe-Signature": sign_payload(payload, TEST_WHSEC, now - 200)},
        )
    assert ok.status_code == 200, ok.text
    assert (
        await billing_pool.fetchval("SELECT mode FROM stripe_events WHERE id = $1", event_id)
        == "test"
    )


async def test_same_event_delivered_twice_is_processed_once(
    billing: BillingStack, billing_pool: asyncpg.Pool
) -> None:
    tenant = f"ten_{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(timeout=20, event_hooks=BIND_HOOKS) as client:
        sub_id = await subscribed(client, billing, billing_pool, tenant)
        billing.fake.duplicate_next(1)
        billing.fake.update_subscription(sub_id, price="price_enterprise")
        event = billing.fake.events("live", "customer.subscription.updated")[-1]

        async def both_delivered() -> bool:
            return sum(d.delivered for d in billing.fake.deliveries_of(event["id"])) == 2

        await eventually(both_delivered, "two deliveries of the same event")
        await eventually(lambda: processed(billing_pool, event["id"]), "event processed")
        # And a third time, by hand, exactly as Stripe's retry would send it.
        payload = billing.fake.deliveries_of(event["id"])[0].payload
        resp = await client.post(
            billing.hook_url,
            content=payload,
            headers={"Stripe-Signature": sign_payload(payload, LIVE_WHSEC)},
        )
        assert resp.json()["data"] == {"received": True, "event_id": event["id"], "duplicate": True}

    assert (
        await billing_pool.fetchval("SELECT count(*) FROM stripe_events WHERE id = $1", event["id"])
        == 1
    )
    work_items = await billing_pool.fetchval(
        "SELECT count(*) FROM outbox WHERE event_type = 'stripe_event.received'"
        " AND payload->'data'->>'stripe_event_id' = $1",
        event["id"],
    )
    assert work_items == 1
    assert [e["new_plan"] for e in await plan_events(billing_pool, tenant)] == ["pro", "enterprise"]


async def test_updates_delivered_in_reverse_order_end_in_stripes_current_state(
    billing: BillingStack, billing_pool: asyncpg.Pool
) -> None:
    tenant = f"ten_{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(timeout=20, event_hooks=BIND_HOOKS) as client:
        sub_id = await subscribed(client, billing, billing_pool, tenant)
    fake = billing.fake
    fake.hold()
    try:
        fake.update_subscription(sub_id, price="price_enterprise")
        fake.update_subscription(sub_id, cancel_at_period_end=True)
        fake.update_subscription(sub_id, price="price_starter")
    finally:
        fake.release(order="reverse")
    updates = [
        e
        for e in fake.events("live", "customer.subscription.updated")
        if e["data"]["object"]["id"] == sub_id
    ]
    assert len(updates) == 3
    for e in updates:
        await eventually(functools.partial(processed, billing_pool, e["id"]), "update processed")
    # The snapshots, applied in the order received, would end on the first (enterprise).
    assert updates[0]["data"]["object"]["items"]["data"][0]["price"]["id"] == "price_enterprise"

    current = fake.subscription(sub_id)
    row = await billing_pool.fetchrow(
        "SELECT plan_id, price_id, status, cancel_at_period_end FROM subscriptions"
        " WHERE stripe_subscription_id = $1",
        sub_id,
    )
    assert dict(row) == {
        "plan_id": "starter",
        "price_id": current["items"]["data"][0]["price"]["id"],
        "status": current["status"],
        "cancel_at_period_end": current["cancel_at_period_end"],
    }
    assert (
        await billing_pool.fetchval("SELECT plan FROM tenant_config WHERE tenant_id = $1", tenant)
        == "starter"
    )
    # Never a detour through enterprise: every read saw the final state.
    assert [e["new_plan"] for e in await plan_events(billing_pool, tenant)] == ["pro", "starter"]


async def test_lost_webhook_is_applied_by_the_next_reconciliation(
    billing: BillingStack, billing_pool: asyncpg.Pool
) -> None:
    tenant = f"ten_{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(timeout=20, event_hooks=BIND_HOOKS) as client:
        sub_id = await subscribed(client, billing, billing_pool, tenant)
    billing.fake.drop_next(1, "customer.subscription.updated")
    billing.fake.update_subscription(sub_id, price="price_enterprise")
    lost = billing.fake.events("live", "customer.subscription.updated")[-1]
    assert billing.fake.deliveries_of(lost["id"]) == []
    assert (
        await billing_pool.fetchval(
            "SELECT plan_id FROM subscriptions WHERE stripe_subscription_id = $1", sub_id
        )
        == "pro"
    )

    # The ops command, exactly as the reconciler process runs it.
    result = subprocess.run(
        [sys.executable, "-m", "services.billing", "reconcile-once", "live"],
        env=billing.env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])[0]
    assert report["mode"] == "live"
    missed = [d for d in report["drift"] if d["object_id"] == lost["id"]]
    assert missed and missed[0]["kind"] == "missed_event"
    assert missed[0]["detail"]["outcome"] == "applied"

    event = await processed(billing_pool, lost["id"])
    assert event is not None and event["source"] == "reconciliation"
    assert (
        await billing_pool.fetchval(
            "SELECT plan_id FROM subscriptions WHERE stripe_subscription_id = $1", sub_id
        )
        == "enterprise"
    )
    assert [e["new_plan"] for e in await plan_events(billing_pool, tenant)] == ["pro", "enterprise"]
    drift_rows = await billing_pool.fetchval(
        "SELECT count(*) FROM reconciliation_drift WHERE run_id = $1 AND object_id = $2",
        report["run_id"],
        lost["id"],
    )
    assert drift_rows == 1


async def test_payment_failure_keeps_the_plan_until_stripe_cancels(
    billing: BillingStack, billing_pool: asyncpg.Pool
) -> None:
    tenant = f"ten_{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(timeout=20, event_hooks=BIND_HOOKS) as client:
        sub_id = await subscribed(client, billing, billing_pool, tenant)
    invoice = billing.fake.renew(sub_id, paid=False)

    async def failed_recorded() -> asyncpg.Record | None:
        return await billing_pool.fetchrow(
            "SELECT status, amount_paid FROM payments WHERE stripe_invoice_id = $1"
            " AND status = 'failed'",
            invoice["id"],
        )

    await eventually(failed_recorded, "failed payment recorded")

    async def past_due() -> bool:
        status = await billing_pool.fetchval(
            "SELECT status FROM subscriptions WHERE stripe_subscription_id = $1", sub_id
        )
        return bool(status == "past_due")

    await eventually(past_due, "subscription past_due")
    assert (
        await billing_pool.fetchval("SELECT plan FROM tenant_config WHERE tenant_id = $1", tenant)
        == "pro"
    )

    billing.fake.cancel_subscription(sub_id)

    async def downgraded() -> bool:
        plan = await billing_pool.fetchval(
            "SELECT plan FROM tenant_config WHERE tenant_id = $1", tenant
        )
        return bool(plan == "starter")

    await eventually(downgraded, "plan back to starter after cancellation")
    async with httpx.AsyncClient(timeout=20, event_hooks=BIND_HOOKS) as client:
        url = f"{billing.api.url}/api/v1/billing/payments?limit=1"
        first = (await client.get(url, headers=principal_headers(tenant))).json()
        assert len(first["data"]) == 1 and first["meta"]["pagination"]["has_more"]
        cursor = first["meta"]["pagination"]["next_cursor"]
        second = (
            await client.get(f"{url}&cursor={cursor}", headers=principal_headers(tenant))
        ).json()
        pages = first["data"] + second["data"]
        # Both invoices, once each (two created in the same second still page apart).
        assert sorted(p["status"] for p in pages) == ["failed", "paid"]
        assert invoice["id"] in {p["id"] for p in pages}
        assert second["meta"]["pagination"]["has_more"] is False
    changes = await plan_events(billing_pool, tenant)
    assert [(e["old_plan"], e["new_plan"]) for e in changes] == [(None, "pro"), ("pro", "starter")]


async def test_billing_down_while_stripe_retries_then_processed(
    billing: BillingStack, billing_pool: asyncpg.Pool
) -> None:
    tenant = f"ten_{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(timeout=20, event_hooks=BIND_HOOKS) as client:
        sub_id = await subscribed(client, billing, billing_pool, tenant)
    port = billing.api.port
    assert billing.api.terminate() == 0  # graceful stop
    try:
        billing.fake.update_subscription(sub_id, cancel_at_period_end=True)
        event = billing.fake.events("live", "customer.subscription.updated")[-1]

        async def refused_twice() -> bool:
            return sum(len(d.statuses) for d in billing.fake.deliveries_of(event["id"])) >= 2

        await eventually(refused_twice, "Stripe's retries while billing is down")
        assert not any(d.delivered for d in billing.fake.deliveries_of(event["id"]))
    finally:
        billing.api.close()
        billing.api = ServiceProcess("billing", "api", billing.env, port)
        billing.api.wait_ready(60)

    await eventually(
        lambda: processed(billing_pool, event["id"]), "event processed after restart", 60
    )
    assert (
        await billing_pool.fetchval(
            "SELECT cancel_at_period_end FROM subscriptions WHERE stripe_subscription_id = $1",
            sub_id,
        )
        is True
    )
    statuses = billing.fake.deliveries_of(event["id"])[0].statuses
    assert statuses[-1] == 200 and all(s != 200 for s in statuses[:-1])
    assert os.path.exists(billing.api.log_path)
