"""Infrastructure health alerts (seed 000): delivery's `domain.*` facts reach the webhooks a
tenant subscribed, signed, in either payload version; other tenants get nothing."""

from __future__ import annotations

from typing import Any

import orjson
from standardwebhooks import Webhook

from libs.common.events import DomainHealthChanged, DomainRecordChange, DomainVerified
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.integration.webhooks.conftest import event


async def test_domain_health_changed_reaches_a_subscribed_webhook(
    api: Any, make_engine: Any, publish: Any, base_settings: Any, unique: str
) -> None:
    with WebhookReceiver() as alerts, WebhookReceiver() as legacy, WebhookReceiver() as other:
        ep = await api.create(unique, url=alerts.url, events=["domain.health_changed"])
        old = await api.create(
            unique, url=legacy.url, events=["domain.*"], payload_version="2026-11-21"
        )
        await api.create(f"{unique}-b", url=other.url, events=["domain.*"])
        await make_engine(base_settings)
        change = DomainRecordChange(
            purpose="spf", host="mail.example.com", previous="verified", current="failed"
        )
        health = DomainHealthChanged(
            domain_id="dom_1", name="mail.example.com", status="failed", changes=[change]
        )
        await publish(
            event(DomainVerified(domain_id="dom_1", name="mail.example.com"), unique),
            event(health, unique),
        )
        (got,) = await alerts.until(1)
        body = Webhook(ep["secret"]).verify(got.body, got.headers)
        assert body["type"] == "domain.health_changed"
        domain = body["data"]["domain"]
        assert domain["id"] == "dom_1" and domain["status"] == "failed"
        assert domain["changes"] == [change.model_dump()]

        flat = [orjson.loads(r.body) for r in await legacy.until(2)]
        assert sorted(p["type"] for p in flat) == ["domain.health_changed", "domain.verified"]
        Webhook(old["secret"]).verify(legacy.snapshot()[0].body, legacy.snapshot()[0].headers)
        assert {p["data"]["domain_id"] for p in flat} == {"dom_1"}
        assert other.count == 0
