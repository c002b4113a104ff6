"""Checkout to plan: the dashboard asks for a Checkout Session, the customer pays on Stripe,
Stripe's webhooks reach billing, and the tenant's subscription, payment and plan follow
(`tenant.plan_changed` published on the bus)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aio_pika
import asyncpg
import httpx

from libs.common.events import parse_event
from tests.integration.billing.conftest import (
    BillingStack,
    checkout,
    eventually,
    plan_events,
    principal_headers,
    subscribed,
)
from tests.principals import BIND_HOOKS


async def test_checkout_completed_links_subscription_and_changes_plan(
    billing: BillingStack, billing_pool: asyncpg.Pool, amqp_url: str
) -> None:
    tenant = f"ten_{uuid.uuid4().hex[:12]}"
    connection = await aio_pika.connect(amqp_url)
    async with connection, httpx.AsyncClient(timeout=20, event_hooks=BIND_HOOKS) as client:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "pm.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "tenant.plan_changed")

        session = await checkout(client, billing, tenant, "pro")
        assert session["url"].startswith(billing.fake.url + "/c/pay/cs_live_")
        stored = billing.fake.modes["live"].sessions[session["id"]]
        assert stored["mode"] == "subscription"
        assert stored["metadata"] == {"tenant_id": tenant, "plan_id": "pro"}
        assert stored["_line_items"] == [{"price": "price_pro", "quantity": 1}]
        assert stored["success_url"] == (
            "http://dashboard.test/dashboard/settings/billing?checkout=success"
        )
        assert stored["cancel_url"].endswith("checkout=canceled")

        sub_id = billing.fake.complete_checkout(session["id"])["subscription"]

        async def plan_published() -> dict[str, object] | None:
            msg = await queue.get(no_ack=True, fail=False)
            if msg is None:
                return None
            event = parse_event(msg.body)
            return event.data if event.tenant_id == tenant else None

        published = await eventually(plan_published, "tenant.plan_changed on the bus")
        assert published["new_plan"] == "pro"
        assert published["old_plan"] is None

        row = await billing_pool.fetchrow(
            "SELECT tenant_id, plan_id, status, mode FROM subscriptions"
            " WHERE stripe_subscription_id = $1",
            sub_id,
        )
        assert dict(row) == {
            "tenant_id": tenant,
            "plan_id": "pro",
            "status": "active",
            "mode": "live",
        }
        config = await billing_pool.fetchrow(
            "SELECT plan, stripe_subscription_id FROM tenant_config WHERE tenant_id = $1", tenant
        )
        assert dict(config) == {"plan": "pro", "stripe_subscription_id": sub_id}

        async def paid() -> list[dict[str, Any]] | None:
            resp = await client.get(
                f"{billing.api.url}/api/v1/billing/payments", headers=principal_headers(tenant)
            )
            return resp.json()["data"] or None

        payments = await eventually(paid, "the first invoice recorded")
        assert len(payments) == 1
        assert payments[0]["status"] == "paid"
        assert payments[0]["amount_paid"] == 9900
        assert payments[0]["subscription_id"] == sub_id
        # Filters and sorting of the payments list (docs/pagination.md).
        base = f"{billing.api.url}/api/v1/billing/payments"
        for query, expected in (
            (f"?status=paid&subscription_id={sub_id}&order=asc", 1),
            ("?status=void", 0),
            ("?subscription_id=sub_other", 0),
            ("?limit=1&offset=1", 0),
        ):
            listed = await client.get(base + query, headers=principal_headers(tenant))
            assert listed.status_code == 200 and len(listed.json()["data"]) == expected, query
        refused = await client.get(base + "?sort_by=amount_paid", headers=principal_headers(tenant))
        assert refused.status_code == 422
        assert refused.json()["error"]["details"][0]["field"] == "query.sort_by"

        view = await client.get(
            f"{billing.api.url}/api/v1/billing/subscription", headers=principal_headers(tenant)
        )
        data = view.json()["data"]
        assert data["plan"] == "pro"
        assert data["subscription"]["id"] == sub_id
        assert data["subscription"]["status"] == "active"
        assert data["subscription"]["current_period_end"] is not None

    # Three events (subscription created, checkout completed, invoice paid): one change.
    assert [e["new_plan"] for e in await plan_events(billing_pool, tenant)] == ["pro"]


async def test_tenants_see_only_their_own_billing(
    billing: BillingStack, billing_pool: asyncpg.Pool
) -> None:
    owner, other = (f"ten_{uuid.uuid4().hex[:12]}" for _ in range(2))
    async with httpx.AsyncClient(timeout=20, event_hooks=BIND_HOOKS) as client:
        await subscribed(client, billing, billing_pool, owner)
        view = await client.get(
            f"{billing.api.url}/api/v1/billing/subscription", headers=principal_headers(other)
        )
        assert view.json()["data"] == {"plan": "starter", "mode": "live", "subscription": None}
        payments = await client.get(
            f"{billing.api.url}/api/v1/billing/payments", headers=principal_headers(other)
        )
        assert payments.json()["data"] == []
        # Test mode is another Stripe account's data: the live subscription is not there.
        sandbox = await client.get(
            f"{billing.api.url}/api/v1/billing/subscription",
            headers=principal_headers(owner, mode="test"),
        )
        assert sandbox.json()["data"]["subscription"] is None


async def test_portal_and_guards(billing: BillingStack, billing_pool: asyncpg.Pool) -> None:
    tenant = f"ten_{uuid.uuid4().hex[:12]}"
    url = billing.api.url
    async with httpx.AsyncClient(timeout=20, event_hooks=BIND_HOOKS) as client:
        no_principal = await client.get(f"{url}/api/v1/billing/subscription")
        assert no_principal.status_code == 401
        assert no_principal.json()["error"]["code"] == "principal_missing"
        as_key = await client.post(
            f"{url}/api/v1/billing/checkout-sessions",
            json={"plan_id": "pro"},
            headers=principal_headers(tenant, subject_type="api_key"),
        )
        assert as_key.status_code == 403
        assert as_key.json()["error"]["code"] == "forbidden"

        portal = await client.post(
            f"{url}/api/v1/billing/portal-sessions", headers=principal_headers(tenant)
        )
        assert portal.status_code == 404
        assert portal.json()["error"]["code"] == "billing_account_not_found"

        bad_plan = await client.post(
            f"{url}/api/v1/billing/checkout-sessions",
            json={"plan_id": "platinum"},
            headers=principal_headers(tenant),
        )
        assert bad_plan.status_code == 422
        assert bad_plan.json()["error"]["details"][0]["field"] == "body.plan_id"
        broken = await client.post(
            f"{url}/api/v1/billing/checkout-sessions",
            content=b"{",
            headers={**principal_headers(tenant), "content-type": "application/json"},
        )
        assert broken.status_code == 400
        assert broken.json()["error"]["code"] == "invalid_json"
        bad_cursor = await client.get(
            f"{url}/api/v1/billing/payments?cursor=%%%", headers=principal_headers(tenant)
        )
        assert bad_cursor.status_code == 400
        assert bad_cursor.json()["error"]["code"] == "invalid_cursor"

        # Stripe failing: a clear 503, nothing half-done to the tenant.
        billing.fake.fail_next(500)
        down = await client.post(
            f"{url}/api/v1/billing/checkout-sessions",
            json={"plan_id": "pro"},
            headers=principal_headers(tenant),
        )
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "payment_provider_unavailable"
        assert down.headers["retry-after"]

        await subscribed(client, billing, billing_pool, tenant)
        again = await client.post(
            f"{url}/api/v1/billing/checkout-sessions",
            json={"plan_id": "enterprise"},
            headers=principal_headers(tenant),
        )
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "subscription_exists"

        portal = await client.post(
            f"{url}/api/v1/billing/portal-sessions", headers=principal_headers(tenant)
        )
        assert portal.status_code == 201, portal.text
        assert portal.json()["data"]["url"].startswith(billing.fake.url + "/p/session/bps_")
        customer = await billing_pool.fetchval(
            "SELECT stripe_customer_id FROM customers WHERE tenant_id = $1", tenant
        )
        assert billing.fake.modes["live"].portal_sessions
        assert any(
            p["customer"] == customer for p in billing.fake.modes["live"].portal_sessions.values()
        )
        assert json.dumps(portal.json()).find("sk_live") == -1
