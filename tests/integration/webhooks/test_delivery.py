"""The delivery engine end to end: events published on `pm.events`, the real engine consuming
them, real local receivers, Postgres, RabbitMQ delay queues and Vault-held secrets."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import orjson
from standardwebhooks import Webhook

from libs.common.events import CampaignStarted
from services.webhooks.service import delivery_id_for
from services.webhooks.signatures import legacy_signature
from tests.fakes.webhook_receiver import (
    Received,
    Reply,
    WebhookReceiver,
    always,
    fail_then_succeed,
)
from tests.integration.common.amqp_tools import eventually
from tests.integration.webhooks.conftest import event, opened


async def _delivery(api: Any, tenant: str, endpoint_id: str, delivery_id: str) -> dict[str, Any]:
    r = await api.client.get(
        f"/api/v1/webhooks/{endpoint_id}/deliveries/{delivery_id}", headers=api.as_tenant(tenant)
    )
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def test_opened_event_reaches_subscribed_endpoint_signed_and_skips_others(
    api, make_engine, publish, base_settings, unique
) -> None:
    with (
        WebhookReceiver() as subscribed,
        WebhookReceiver() as other_type,
        WebhookReceiver() as filtered_out,
        WebhookReceiver() as tagged,
        WebhookReceiver() as legacy,
    ):
        ep = await api.create(unique, url=subscribed.url, events=["email.opened"])
        assert ep["payload_version"] == "2026-12-01"  # the default from now on
        old = await api.create(
            unique, url=legacy.url, events=["email.*"], payload_version="2026-11-21",
            filters={"contact_tags": ["eu"]},
        )  # fmt: skip
        await api.create(unique, url=other_type.url, events=["email.clicked", "campaign.*"])
        await api.create(
            unique,
            url=filtered_out.url,
            events=["email.*"],
            filters={"campaign_ids": ["cmp_other"]},
        )
        tag_ep = await api.create(
            unique, url=tagged.url, events=["*"], filters={"contact_tags": ["vip"]}
        )
        await make_engine(base_settings)
        ev = opened(unique, 1, campaign_id="cmp_1", contact_tags=["vip", "eu"])
        # Another tenant's event never reaches this tenant's endpoints.
        await publish(ev, opened(f"{unique}-other", 2))
        (got,) = await subscribed.until(1)
        await tagged.until(1)

        body = got.body
        verified = Webhook(ep["secret"]).verify(body, got.headers)
        assert verified["type"] == "email.opened"
        assert set(verified) == {"id", "type", "created", "data"}
        assert verified["id"] == got.headers["webhook-id"] == delivery_id_for(ep["id"], ev.id)
        # 2026-12-01: seed 004's shape, the email nested, engagement in data.analytics.
        assert verified["data"]["email"]["id"] == "em_1"
        assert verified["data"]["email"]["campaign_id"] == "cmp_1"
        assert set(verified["data"]) == {"email", "analytics"}
        # 2026-11-21: the flat catalog data, filters working the same.
        (flat,) = await legacy.until(1)
        flat_body = Webhook(old["secret"]).verify(flat.body, flat.headers)
        assert flat_body["data"]["message_id"] == "em_1"
        assert flat_body["data"]["contact_tags"] == ["vip", "eu"]
        assert got.headers["x-penguinmails-signature"] == legacy_signature(ep["secret"], body)
        # The tag-filtered endpoint's copy has its own id and its own secret.
        tag_got = tagged.snapshot()[0]
        Webhook(tag_ep["secret"]).verify(tag_got.body, tag_got.headers)
        assert tag_got.headers["webhook-id"] == delivery_id_for(tag_ep["id"], ev.id)

        # A campaign event afterwards reaches `other_type`: proof the engine has moved past
        # the email event, so the endpoints that got nothing really were not matched.
        await publish(event(CampaignStarted(campaign_id="cmp_9"), unique))
        await other_type.until(1)
        assert orjson.loads(other_type.snapshot()[0].body)["type"] == "campaign.started"
        assert subscribed.count == 1
        assert filtered_out.count == 0
        # `*` includes campaign.*, but campaign events carry no contact tags: no match.
        assert tagged.count == 1


async def test_failing_three_times_then_success_takes_four_attempts_on_schedule(
    api, make_engine, publish, base_settings, unique
) -> None:
    schedule = [0.4, 0.8, 1.6, 3.2]
    with WebhookReceiver(fail_then_succeed(3, status=500)) as rx:
        ep = await api.create(unique, url=rx.url, events=["email.opened"], retry_schedule=schedule)
        await make_engine(base_settings)
        ev = opened(unique)
        await publish(ev)
        got = await rx.until(4)
        msg_id = delivery_id_for(ep["id"], ev.id)
        assert {r.headers["webhook-id"] for r in got} == {msg_id}
        gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
        # Each wait is at least its scheduled delay, and they double like the schedule.
        assert all(gap >= delay * 0.9 for gap, delay in zip(gaps, schedule, strict=False))
        assert gaps[0] < gaps[1] < gaps[2]

        async def succeeded() -> dict[str, Any] | None:
            d = await _delivery(api, unique, ep["id"], msg_id)
            return d if d["status"] == "succeeded" else None

        delivery = await eventually(succeeded)
        log = delivery["attempt_log"]
        assert [a["attempt"] for a in log] == [1, 2, 3, 4]
        assert [a["status_code"] for a in log] == [500, 500, 500, 200]
        assert all(a["response_ms"] is not None for a in log)
        assert rx.count == 4


async def test_retry_after_is_honoured(api, make_engine, publish, base_settings, unique) -> None:
    script = lambda r: Reply(503, headers={"Retry-After": "2"}) if r.index == 0 else Reply(200)  # noqa: E731
    with WebhookReceiver(script) as rx:
        await api.create(unique, url=rx.url, events=["email.opened"], retry_schedule=[0.1])
        await make_engine(base_settings)
        await publish(opened(unique))
        first, second = await rx.until(2)
        assert second.at - first.at >= 2 * 0.9  # the schedule said 0.1 s; the receiver 2 s


async def test_hanging_receiver_times_out_and_retries_while_others_flow(
    api, make_engine, publish, base_settings, unique, wh_pool
) -> None:
    settings = base_settings.model_copy(
        update={"webhooks_attempt_timeout_seconds": 1.5, "webhooks_endpoint_concurrency": 2}
    )
    with WebhookReceiver(always(hang=True)) as hanging, WebhookReceiver() as healthy:
        slow = await api.create(unique, url=hanging.url, events=["email.*"], retry_schedule=[0.2])
        await api.create(unique, url=healthy.url, events=["email.*"])
        await make_engine(settings)
        n = 40
        await publish(*(opened(unique, i) for i in range(n)))
        # All of them reach the healthy endpoint while the hanging one holds its 2 slots.
        await healthy.until(n)
        assert hanging.count <= 2 * 2  # only its own slots: no more than 2 in flight at once

        async def timed_out_and_retried() -> bool:
            rows = await wh_pool.fetch(
                "SELECT a.error, d.attempts, d.status FROM attempts a JOIN deliveries d"
                " ON d.id = a.delivery_id WHERE a.endpoint_id = $1",
                slow["id"],
            )
            return any(r["error"] and r["error"].startswith("timeout") for r in rows) and any(
                r["attempts"] >= 2 for r in rows
            )

        await eventually(timed_out_and_retried, timeout=60)


async def test_gone_disables_endpoint_with_notice_and_reenabling_resumes(
    api, make_engine, publish, base_settings, unique, wh_pool
) -> None:
    replies: dict[str, int] = {"status": 410}
    with WebhookReceiver(lambda r: Reply(replies["status"])) as rx:
        ep = await api.create(unique, url=rx.url, events=["email.opened"])
        await make_engine(base_settings)
        await publish(opened(unique, 1))
        await rx.until(1)
        headers = api.as_tenant(unique)

        async def disabled() -> dict[str, Any] | None:
            r = await api.client.get(f"/api/v1/webhooks/{ep['id']}", headers=headers)
            data: dict[str, Any] = r.json()["data"]
            return data if not data["enabled"] else None

        state = await eventually(disabled)
        assert "410" in state["disabled_reason"]
        notice = await wh_pool.fetchrow(
            "SELECT payload FROM outbox WHERE event_type = 'webhook.endpoint_disabled'"
            " AND payload->'data'->>'endpoint_id' = $1",
            ep["id"],
        )
        assert notice is not None and notice["payload"]["tenant_id"] == unique
        stats = (await api.client.get(f"/api/v1/webhooks/{ep['id']}/stats", headers=headers)).json()
        assert stats["data"]["health"] == "failing"

        with WebhookReceiver() as witness:
            # A second endpoint receiving em_2 proves its fan-out is done (the disabled one
            # was skipped) before the first is enabled again.
            await api.create(unique, url=witness.url, events=["email.opened"])
            await publish(opened(unique, 2))  # disabled: not delivered
            await witness.until(1)
        replies["status"] = 200
        r = await api.client.put(
            f"/api/v1/webhooks/{ep['id']}", json={"enabled": True}, headers=headers
        )
        assert r.status_code == 200 and r.json()["data"]["enabled"] is True
        await publish(opened(unique, 3))
        got = await rx.until(2)
        assert orjson.loads(got[1].body)["data"]["email"]["id"] == "em_3"


async def test_recover_since_resends_exactly_the_failed_deliveries_in_the_window(
    api, make_engine, publish, base_settings, unique, wh_pool
) -> None:
    mode = {"fail": True}

    def script(r: Received) -> Reply:
        message = orjson.loads(r.body)["data"]["email"]["id"]
        return Reply(500 if mode["fail"] and message.startswith("em_f") else 200)

    with WebhookReceiver(script) as rx:
        ep = await api.create(unique, url=rx.url, events=["email.opened"], retry_schedule=[])
        await make_engine(base_settings)
        headers = api.as_tenant(unique)

        async def failed_count() -> int:
            n: int = await wh_pool.fetchval(
                "SELECT count(*) FROM deliveries WHERE endpoint_id = $1 AND status = 'failed'",
                ep["id"],
            )
            return n

        before = [opened(unique, i, message_id=f"em_f_before_{i}") for i in range(3)]
        await publish(*before)
        await eventually(lambda: _eq(failed_count(), 3))
        since = datetime.now(UTC)
        inside = [opened(unique, i, message_id=f"em_f_inside_{i}") for i in range(4)]
        ok_inside = [opened(unique, i, message_id=f"em_ok_{i}") for i in range(2)]
        await publish(*inside, *ok_inside)
        await eventually(lambda: _eq(failed_count(), 7))
        await rx.until(9)

        mode["fail"] = False
        r = await api.client.post(
            f"/api/v1/webhooks/{ep['id']}/recover",
            json={"since": since.isoformat()},
            headers=headers,
        )
        assert r.status_code == 202, r.text
        expected = {delivery_id_for(ep["id"], e.id) for e in inside}
        assert set(r.json()["data"]["delivery_ids"]) == expected
        got = await rx.until(9 + 4)
        assert {g.headers["webhook-id"] for g in got[9:]} == expected
        await eventually(lambda: _eq(failed_count(), 3))
        r = await api.client.get(
            f"/api/v1/webhooks/{ep['id']}/deliveries", params={"status": "failed"}, headers=headers
        )
        assert {d["event_id"] for d in r.json()["data"]} == {str(e.id) for e in before}
        assert rx.count == 13
        # A valid date-time whose UTC instant is before year 1 (it was a 500): since the
        # first instant, i.e. every failed delivery.
        r = await api.client.post(
            f"/api/v1/webhooks/{ep['id']}/recover",
            json={"since": "0001-01-01T21:39:48.5941+22:22"},
            headers=headers,
        )
        assert r.status_code == 202, r.text
        assert r.json()["data"]["since"].startswith("0001-01-01T00:00:00")
        assert set(r.json()["data"]["delivery_ids"]) == {
            delivery_id_for(ep["id"], e.id) for e in before
        }


async def test_manual_retry_resends_under_the_same_id(
    api, make_engine, publish, base_settings, unique
) -> None:
    with WebhookReceiver(fail_then_succeed(1, status=400)) as rx:
        ep = await api.create(unique, url=rx.url, events=["email.opened"], retry_schedule=[])
        await make_engine(base_settings)
        ev = opened(unique)
        await publish(ev)
        await rx.until(1)
        msg_id = delivery_id_for(ep["id"], ev.id)
        headers = api.as_tenant(unique)
        url = f"/api/v1/webhooks/{ep['id']}/deliveries/{msg_id}/retry"

        async def failed() -> bool:
            return bool((await _delivery(api, unique, ep["id"], msg_id))["status"] == "failed")

        await eventually(failed)
        r = await api.client.post(url, headers=headers)
        assert r.status_code == 202, r.text
        first, second = await rx.until(2)
        assert first.headers["webhook-id"] == second.headers["webhook-id"] == msg_id
        other = await api.client.post(url, headers=api.as_tenant(f"{unique}-x"))
        assert other.status_code == 404


async def test_delivery_time_ssrf_guard_blocks_loopback_when_not_allowed(
    api, make_engine, publish, base_settings, unique, wh_pool
) -> None:
    strict = base_settings.model_copy(update={"webhooks_allowed_networks": []})
    with WebhookReceiver() as rx:
        # Created while loopback was allowed (think: DNS that later points inside).
        ep = await api.create(unique, url=rx.url, events=["email.opened"], retry_schedule=[])
        await make_engine(strict)
        await publish(opened(unique))

        async def refused() -> Any:
            return await wh_pool.fetchval(
                "SELECT error FROM attempts WHERE endpoint_id = $1", ep["id"]
            )

        error = await eventually(refused)
        assert error.startswith("url refused") and "127.0.0.1" in error
        assert rx.count == 0


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def test_a_raw_secret_signs_deliveries_with_its_utf8_bytes(
    api, make_engine, publish, base_settings, unique
) -> None:
    import base64
    import hashlib
    import hmac

    secret = "your-webhook-secret"  # seed 004's registration body
    with WebhookReceiver() as rx:
        ep = await api.create(unique, url=rx.url, events=["email.opened"], secret=secret)
        assert ep["secret"] == secret
        await make_engine(base_settings)
        await publish(opened(unique, 7))
        (got,) = await rx.until(1)
        h = got.headers
        signed = f"{h['webhook-id']}.{h['webhook-timestamp']}.".encode() + got.body
        mac = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
        assert h["webhook-signature"] == "v1," + base64.b64encode(mac).decode()
        # The seed's own verification: hex HMAC of the body keyed with the secret string.
        seed = "sha256=" + hmac.new(secret.encode(), got.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(h["x-penguinmails-signature"], seed)
        assert Webhook(secret.encode()).verify(got.body, h)["id"] == h["webhook-id"]
