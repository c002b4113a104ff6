"""SES events through SNS come only from allow-listed topics (issue 13): any AWS account can
sign SNS messages for its own topics, so an unknown topic is refused, its subscription is
never confirmed, and with no topic configured every SNS message is refused."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.delivery.conftest import Harness

OURS = "arn:aws:sns:us-east-1:123456789012:ses-events"
STRANGER = "arn:aws:sns:us-east-1:999999999999:attacker"


async def test_unknown_topics_are_refused_and_never_confirmed(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    ses = reset_fakes["ses"]
    event = {"eventType": "Delivery", "mail": {}, "delivery": {}}
    r = await harness.client.post("/hooks/esp/ses", json=ses.sns_message(event, topic=STRANGER))
    assert r.status_code == 401 and r.json()["error"]["code"] == "webhook_signature_invalid"
    r = await harness.client.post("/hooks/esp/ses", json=ses.sns_confirmation(STRANGER))
    assert r.status_code == 401
    assert ses.requests("/sns/confirm") == []
    # The allow-listed topic: events accepted, its subscription confirmed.
    r = await harness.client.post("/hooks/esp/ses", json=ses.sns_message(event))
    assert r.status_code == 200
    r = await harness.client.post("/hooks/esp/ses", json=ses.sns_confirmation(OURS))
    assert r.status_code == 200
    assert len(ses.requests("/sns/confirm")) == 1


@pytest.mark.parametrize("harness", [{"sns_topic_arns": []}], indirect=True)
async def test_no_topic_configured_refuses_every_sns_message(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    ses = reset_fakes["ses"]
    event = {"eventType": "Delivery", "mail": {}, "delivery": {}}
    r = await harness.client.post("/hooks/esp/ses", json=ses.sns_message(event))
    assert r.status_code == 401
    r = await harness.client.post("/hooks/esp/ses", json=ses.sns_confirmation(OURS))
    assert r.status_code == 401
    assert ses.requests("/sns/confirm") == []
