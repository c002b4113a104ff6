"""Payload versions, engagement details and the event catalog (one source: libs.common.events)."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from libs.common.events import EVENT_TYPES, PUBLIC_EVENT_TYPES, EmailOpened
from libs.common.principal import SCOPES
from services.webhooks.payloads import (
    LATEST_VERSION,
    LEGACY_VERSION,
    EventBodies,
    catalog,
    deliverable_types,
    device_type,
    nested_data,
    webhook_body,
)
from services.webhooks.stream import StreamFilter, readable_types, unknown_patterns

WHEN = datetime(2026, 12, 1, 9, 15, 30, tzinfo=UTC)


def _opened() -> dict[str, object]:
    return EmailOpened(
        message_id="msg_def456",
        to="recipient@example.com",
        campaign_id="cmp_abc123",
        contact_id="ct_1",
        occurred_at=WHEN,
        contact_tags=["vip"],
        user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148",
        ip="203.0.113.10",
        unique=True,
        open_count=1,
    ).model_dump(mode="json", by_alias=True)


@pytest.mark.parametrize("version", [LEGACY_VERSION, LATEST_VERSION])
def test_an_events_bodies_built_once_are_byte_for_byte_webhook_body(version: str) -> None:
    bodies = EventBodies("email.opened", WHEN, _opened())
    for msg_id in ("msg_1", "msg_2", 'msg_"quoted"\\'):
        assert bodies.body(msg_id, version) == webhook_body(
            msg_id, "email.opened", WHEN, _opened(), version
        )


def test_the_newest_version_nests_the_entity_as_seed_004_shows() -> None:
    body = orjson.loads(webhook_body("msg_1", "email.opened", WHEN, _opened(), LATEST_VERSION))
    assert set(body) == {"id", "type", "created", "data"}
    assert body["created"] == "2026-12-01T09:15:30.000Z"
    email = body["data"]["email"]
    assert email["id"] == "msg_def456" and email["campaign_id"] == "cmp_abc123"
    assert email["to"] == "recipient@example.com"
    assert email["opened_at"] == "2026-12-01T09:15:30Z"
    assert "user_agent" not in email and "message_id" not in email
    analytics = body["data"]["analytics"]
    assert analytics["open_count"] == 1 and analytics["device_type"] == "mobile"
    assert analytics["unique"] is True


def test_the_legacy_version_keeps_the_flat_catalog_data() -> None:
    data = _opened()
    body = orjson.loads(webhook_body("msg_1", "email.opened", WHEN, data, LEGACY_VERSION))
    assert body["data"] == data


def test_other_entities_nest_under_their_name() -> None:
    campaign = nested_data("campaign.started", {"campaign_id": "c1", "recipients": 3}, WHEN)
    assert campaign == {
        "campaign": {"id": "c1", "recipients": 3, "started_at": "2026-12-01T09:15:30.000Z"}
    }
    contact = nested_data(
        "contact.created", {"contact_id": "ct", "email": "a@x.io", "contact_tags": ["t"]}, WHEN
    )
    assert contact["contact"]["id"] == "ct" and contact["contact"]["tags"] == ["t"]
    # A conversion's id is its conversion_id; a type the catalog may gain later nests
    # generically under its entity, `<entity>_id` as the id.
    goal = nested_data("goal.converted", {"conversion_id": "cv1", "goal": "demo"}, WHEN)
    assert goal["goal"]["id"] == "cv1" and goal["goal"]["goal"] == "demo"
    widget = nested_data("widget.made", {"widget_id": "w1", "size": 5}, WHEN)
    assert widget["widget"]["id"] == "w1" and widget["widget"]["size"] == 5


@pytest.mark.parametrize(
    ("ua", "kind"),
    [
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15", "mobile"),
        ("Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 Mobile Safari", "mobile"),
        ("Mozilla/5.0 (iPad; CPU OS 16_0 like Mac OS X) AppleWebKit/605.1.15", "tablet"),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120", "desktop"),
        ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15", "desktop"),
        ("Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko (via ggpht.com GoogleImageProxy)", "proxy"),
        ("curl/8.0", "other"),
        (None, None),
    ],
)
def test_device_type_from_the_user_agent(ua: str | None, kind: str | None) -> None:
    assert device_type(ua) == kind


def test_every_public_type_has_a_catalog_entry_in_libs_common_events() -> None:
    deliverable = set(deliverable_types())
    for event_type in PUBLIC_EVENT_TYPES:
        cls = EVENT_TYPES[event_type]
        assert cls.summary, f"{event_type}: add `summary = ...` to its class"
        assert cls.read_scope in SCOPES, f"{event_type}: `read_scope` must be an API key scope"
        assert event_type in deliverable
        cls.example_data()  # validates against the model
    assert not deliverable - set(PUBLIC_EVENT_TYPES)


def test_the_catalog_lists_type_description_scope_and_a_newest_version_sample() -> None:
    entries = {e["type"]: e for e in catalog()}
    assert entries["email.opened"]["scope"] == "read_analytics"
    assert entries["contact.created"]["scope"] == "manage_contacts"
    assert entries["campaign.started"]["scope"] == "manage_campaigns"
    assert "email.requested" not in entries and "api_key.revoked" not in entries
    sample = entries["email.clicked"]["sample"]
    assert sample["type"] == "email.clicked" and sample["data"]["email"]["id"]
    assert sample["data"]["analytics"]["device_type"] == "desktop"


def test_stream_types_follow_the_scopes() -> None:
    assert readable_types(["read_analytics"], None) == {
        t for t in deliverable_types() if t.startswith("email.")
    } | {"analytics.updated", "goal.converted", "revenue.recorded"}
    assert readable_types(["read_analytics", "manage_contacts"], ["contact.*"]) == {
        "contact.created",
        "contact.updated",
        "contact.deleted",
    }
    assert readable_types(["manage_contacts"], ["email.*"]) == frozenset()
    assert unknown_patterns(["email.*", "nope.*", "api_key.revoked"]) == [
        "nope.*",
        "api_key.revoked",
    ]
    wanted = StreamFilter(frozenset({"email.opened"}), frozenset({"c1"}), frozenset())
    assert wanted.matches("email.opened", "c1", [])
    assert not wanted.matches("email.opened", "c2", [])
    assert not wanted.matches("email.sent", "c1", [])
