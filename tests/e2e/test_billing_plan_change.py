"""A plan bought through Stripe reaches the gateway's rate limits: the owner opens a Checkout
Session through the gateway, pays on (fake) Stripe, Stripe's signed webhook reaches billing
through the gateway's `/hooks/stripe`, billing publishes `tenant.plan_changed`, the keys
worker stores the plan and every gateway replica lifts the key's limit from 60 to 300/min."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import ServiceProcess, free_port
from tests.integration.billing.conftest import LIVE_WHSEC, BillingStack
from tests.integration.billing.conftest import billing as billing
from tests.integration.billing.conftest import billing_env as billing_env
from tests.integration.billing.conftest import billing_vault as billing_vault
from tests.integration.billing.conftest import fake_stripe as fake_stripe
from tests.integration.keys.platform_stack import Platform, bearer, create_key, signup
from tests.integration.keys.platform_stack import keys_vault as keys_vault
from tests.integration.keys.platform_stack import platform as platform_fixture

platform = platform_fixture


@pytest.fixture(scope="module")
def billing_gateway(platform: Platform, billing: BillingStack) -> Iterator[ServiceProcess]:
    """A gateway replica whose billing upstream is the real billing service; Stripe posts
    its webhooks to it, as in production."""
    gw = ServiceProcess(
        "gateway", "api", {**platform.gateway_env, "PM_BILLING_URL": billing.api.url}, free_port()
    )
    try:
        gw.wait_ready(60)
        billing.fake.add_endpoint(f"{gw.url}/hooks/stripe", LIVE_WHSEC, "live")
        yield gw
    finally:
        # The session's fake Stripe outlives this module: stop it retrying a dead endpoint.
        billing.fake.remove_endpoint(f"{gw.url}/hooks/stripe")
        gw.close()


async def test_checkout_through_the_gateway_lifts_the_rate_limit(
    platform: Platform, billing: BillingStack, billing_gateway: ServiceProcess, unique: str
) -> None:
    gw = billing_gateway.url
    async with httpx.AsyncClient(timeout=20) as client:
        owner = await signup(client, gw, unique)
        dashboard = bearer(owner["access_token"])
        key = (await create_key(client, gw, owner["access_token"], ["manage_contacts"]))["key"]
        before = await client.get(f"{gw}/api/v1/contacts", headers=bearer(key))
        assert before.headers["X-RateLimit-Limit"] == "60"

        # An integration key cannot buy a plan; the owner's dashboard session can.
        refused = await client.post(
            f"{gw}/api/v1/billing/checkout-sessions", json={"plan_id": "pro"}, headers=bearer(key)
        )
        assert refused.status_code == 403
        session = await client.post(
            f"{gw}/api/v1/billing/checkout-sessions", json={"plan_id": "pro"}, headers=dashboard
        )
        assert session.status_code == 201, session.text
        session_id = session.json()["data"]["id"]
        stored = billing.fake.modes["live"].sessions[session_id]
        assert stored["metadata"]["tenant_id"] == owner["tenant"]["id"]

        billing.fake.complete_checkout(session_id)

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            resp = await client.get(f"{gw}/api/v1/contacts", headers=bearer(key))
            if resp.headers.get("X-RateLimit-Limit") == "300":
                break
            await asyncio.sleep(0.2)
        assert resp.headers["X-RateLimit-Limit"] == "300", "the paid plan never reached the gateway"
        other = await client.get(f"{platform.gateways[0].url}/api/v1/contacts", headers=bearer(key))
        assert other.headers["X-RateLimit-Limit"] == "300"

        completed = next(
            e
            for e in billing.fake.events("live", "checkout.session.completed")
            if e["data"]["object"]["id"] == session_id
        )
        via_gateway = [
            d for d in billing.fake.deliveries_of(completed["id"]) if d.endpoint.url.startswith(gw)
        ]
        assert via_gateway and via_gateway[0].statuses[-1] == 200

        view = await client.get(f"{gw}/api/v1/billing/subscription", headers=dashboard)
        assert view.status_code == 200
        assert view.json()["data"]["plan"] == "pro"
        assert view.json()["data"]["subscription"]["status"] == "active"
