"""A live campaign starts only from a sending domain its tenant verified, as campaigns learn
from delivery's domain.* facts (a read model; never delivery's tables); test mode is exempt."""

from __future__ import annotations

import asyncpg
import httpx

from libs.common.events import DomainHealthChanged, make_event
from services.campaigns.consumers import record_domain_state
from tests.integration.campaigns.conftest import principal_headers, verify_domains
from tests.integration.campaigns.test_campaigns_api import URL, campaign_body, make_contacts


async def test_live_campaign_needs_a_verified_sender_domain(
    api: httpx.AsyncClient, campaigns_pool: asyncpg.Pool, unique: str
) -> None:
    tenant = f"t_dom_{unique}"
    live, test = principal_headers(tenant), principal_headers(tenant, mode="test")
    for headers in (live, test):
        await make_contacts(api, headers, 2, "lead")
    body = campaign_body(from_email="sales@news.acme-bank.example", follow_ups=[], schedule=None)

    cid = (await api.post(URL, json=body, headers=live)).json()["data"]["id"]
    refused = await api.post(f"{URL}/{cid}/start", headers=live)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "sender_domain_not_verified"
    assert "news.acme-bank.example" in refused.json()["error"]["message"]

    # Test mode is exempt.
    test_cid = (await api.post(URL, json=body, headers=test)).json()["data"]["id"]
    assert (await api.post(f"{URL}/{test_cid}/start", headers=test)).status_code == 200

    # The parent domain verified (domain.verified) covers the subdomain sender...
    await verify_domains(campaigns_pool, tenant, "acme-bank.example")
    # ... and an older fact arriving late does not undo it.
    stale = make_event(
        DomainHealthChanged(domain_id="dom_x", name="acme-bank.example", status="failed"),
        tenant_id=tenant,
        source="/services/delivery",
    )
    stale = stale.model_copy(update={"time": stale.time.replace(year=2020)})
    async with campaigns_pool.acquire() as conn, conn.transaction():
        await record_domain_state(stale, conn)
    started = await api.post(f"{URL}/{cid}/start", headers=live)
    assert started.status_code == 200, started.text

    # Another tenant's verification counts for nothing.
    other = principal_headers(f"t_other_{unique}")
    await make_contacts(api, other, 1, "lead")
    ocid = (await api.post(URL, json=body, headers=other)).json()["data"]["id"]
    assert (await api.post(f"{URL}/{ocid}/start", headers=other)).status_code == 422
