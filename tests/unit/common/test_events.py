"""Every catalog event type survives a JSON round trip through its envelope."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from libs.common.events import (
    EVENT_TYPES,
    PUBLIC_EVENT_TYPES,
    Envelope,
    UnknownEventType,
    make_event,
    new_event_id,
    parse_event,
)

_EMAIL = {"message_id": "msg_1", "to": "ada@example.com", "campaign_id": "cmp_1", "step": 1}

SAMPLES: dict[str, dict[str, Any]] = {
    "email.requested": {
        "request_id": "req_1",
        "to": "ada@example.com",
        "from": "team@penguinmails.test",
        "subject": "Hi {{ first_name }}",
        "text": "Hello",
        "variables": {"first_name": "Ada"},
        "category": "marketing",
    },
    "email.queued": _EMAIL,
    "email.sent": {**_EMAIL, "provider": "postmark", "provider_message_id": "pm-1"},
    "email.delivered": {**_EMAIL, "provider": "postmark"},
    "email.opened": {**_EMAIL, "user_agent": "Mail/1.0", "ip": "203.0.113.9"},
    "email.clicked": {**_EMAIL, "url": "https://example.com/x"},
    "email.replied": {**_EMAIL, "reply_snippet": "Thanks!", "thread_id": "thr_1"},
    "email.auto_replied": {**_EMAIL, "reply_snippet": "Out of office", "thread_id": "thr_1"},
    "inbox_message.received": {
        "inbox_message_id": "imsg_1",
        "thread_id": "thr_1",
        "folder": "inbox",
        "classification": "human_reply",
        "message_id": "msg_1",
    },
    "inbox_feedback.received": {
        "kind": "bounce",
        "message_id": "msg_1",
        "inbox_message_id": "imsg_1",
        "bounce_type": "hard",
    },
    "email.bounced": {**_EMAIL, "bounce_type": "hard", "reason": "550 no such user"},
    "email.complained": {**_EMAIL, "feedback_type": "abuse"},
    "email.unsubscribed": {**_EMAIL, "method": "one_click"},
    "email.failed": {**_EMAIL, "provider": "mailgun", "reason": "invalid recipient"},
    "campaign.created": {
        "campaign_id": "cmp_1",
        "name": "Q4",
        "subject": "Hi {{ name }}",
        "html": "<p>Hi</p>",
        "text": "Hi",
        "template_id": "welcome_template",
        "from_email": "team@acme.example.com",
    },
    "campaign.updated": {"campaign_id": "cmp_1", "name": "Q4", "subject": "Hello", "text": "x"},
    "campaign.sent": {"campaign_id": "cmp_1", "name": "Q4", "recipients": 3},
    "campaign.started": {"campaign_id": "cmp_1", "name": "Q4", "recipients": 3},
    "campaign.paused": {"campaign_id": "cmp_1"},
    "campaign.resumed": {"campaign_id": "cmp_1"},
    "campaign.completed": {"campaign_id": "cmp_1"},
    "campaign.cancelled": {"campaign_id": "cmp_1"},
    "contact.created": {"contact_id": "ct_1", "email": "ada@example.com"},
    "contact.updated": {"contact_id": "ct_1", "email": "ada@example.com", "changed": ["tags"]},
    "contact.deleted": {"contact_id": "ct_1", "email": "ada@example.com"},
    "api_key.created": {
        "key_id": "k1",
        "lookup_id": "abc",
        "mode": "live",
        "scopes": ["send_email"],
    },
    "api_key.revoked": {"key_id": "k1", "lookup_id": "abc"},
    "api_key.regenerated": {
        "key_id": "k1",
        "lookup_id": "def",
        "previous_lookup_id": "abc",
        "previous_valid_until": None,
    },
    "tenant.created": {"name": "Acme", "plan": "starter"},
    "tenant.plan_changed": {"old_plan": "starter", "new_plan": "pro", "reason": "checkout"},
    "stripe_event.received": {
        "stripe_event_id": "evt_1",
        "stripe_event_type": "invoice.paid",
        "mode": "live",
    },
    "analytics.updated": {"campaign_id": "cmp_1", "overview": {"sent": 3, "opened": 1}},
    "goal.converted": {
        "conversion_id": "cv_1",
        "contact_id": "ct_1",
        "goal": "purchase",
        "campaign_id": "cmp_1",
    },
    "revenue.recorded": {
        "conversion_id": "cv_1",
        "contact_id": "ct_1",
        "goal": "purchase",
        "value": 49.5,
        "currency": "USD",
    },
    "contact_import.requested": {"import_id": "imp_1"},
    "contact_import.completed": {
        "import_id": "imp_1",
        "total": 10,
        "created": 7,
        "updated": 2,
        "failed": 1,
    },
    "sending_settings.updated": {
        "default_from": "team@acme.example.com",
        "default_from_name": "Acme",
        "default_reply_to": None,
    },
    "webhook.endpoint_disabled": {"endpoint_id": "ep_1", "url": "https://x.test", "reason": "410"},
    "domain.created": {"domain_id": "dom_1", "name": "mail.example.com"},
    "domain.verified": {"domain_id": "dom_1", "name": "mail.example.com"},
    "domain.verification_failed": {
        "domain_id": "dom_1",
        "name": "mail.example.com",
        "failed_records": ["dkim"],
        "status": "pending",
    },
    "domain.health_changed": {
        "domain_id": "dom_1",
        "name": "mail.example.com",
        "status": "failed",
        "changes": [
            {
                "purpose": "spf",
                "host": "mail.example.com",
                "previous": "verified",
                "current": "failed",
            }
        ],
    },
    "domain.deleted": {"domain_id": "dom_1", "name": "mail.example.com"},
}


def test_every_event_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_round_trip(event_type: str) -> None:
    model = EVENT_TYPES[event_type]
    data = model.model_validate(SAMPLES[event_type])
    env = make_event(data, tenant_id="t_1", source="/services/test", subject="s_1")
    raw = env.to_json()
    back = parse_event(raw)
    assert back == env
    assert back.payload() == data
    assert back.type == event_type == back.routing_key
    assert back.specversion == "1.0"
    assert back.id.version == 7


def test_ids_are_time_ordered() -> None:
    ids = [new_event_id() for _ in range(100)]
    assert ids == sorted(ids, key=lambda u: u.bytes)


def test_unknown_type_and_invalid_data_are_refused() -> None:
    env = Envelope(type="email.teleported", source="/x", tenant_id="t", data={})
    with pytest.raises(UnknownEventType):
        parse_event(env.to_json())
    bad = Envelope(type="email.bounced", source="/x", tenant_id="t", data={"message_id": "m"})
    with pytest.raises(ValueError):
        parse_event(bad.to_json())
    with pytest.raises(ValueError):
        parse_event(b"{not json")


def test_internal_types_are_not_public() -> None:
    assert "email.opened" in PUBLIC_EVENT_TYPES
    assert "email.requested" not in PUBLIC_EVENT_TYPES
    assert "api_key.revoked" not in PUBLIC_EVENT_TYPES


def test_envelope_time_is_utc() -> None:
    env = Envelope(type="campaign.paused", source="/x", tenant_id="t", data={"campaign_id": "c"})
    assert env.time.tzinfo is not None
    assert env.time <= datetime.now(UTC)


def test_aliased_fields_travel_under_their_wire_name() -> None:
    data = EVENT_TYPES["email.requested"].model_validate(SAMPLES["email.requested"])
    env = make_event(data, tenant_id="t", source="/x")
    assert env.data["from"] == "team@penguinmails.test"
    assert "from_" not in env.data
    assert parse_event(env.to_json()).payload() == data


def test_mode_travels_in_the_envelope() -> None:
    data = EVENT_TYPES["contact.created"].model_validate(SAMPLES["contact.created"])
    env = make_event(data, tenant_id="t", source="/x", mode="test")
    assert parse_event(env.to_json()).mode == "test"
    assert make_event(data, tenant_id="t", source="/x").mode == "live"
