"""Per-service RabbitMQ permissions (issue 13): each service publishes only its own event
types; every catalog type has a producer; plan changes only from keys and billing."""

from __future__ import annotations

import re

from libs.common.amqp_users import PUBLISHES, may_publish, permissions, unproduced_event_types
from libs.common.settings import SERVICE_NAMES


def test_every_event_type_has_a_producer() -> None:
    assert unproduced_event_types() == []
    assert set(PUBLISHES) == set(SERVICE_NAMES)


def test_plan_changes_and_work_items_only_from_their_producers() -> None:
    assert {s for s in PUBLISHES if may_publish(s, "tenant.plan_changed")} == {"keys", "billing"}
    assert {s for s in PUBLISHES if may_publish(s, "email.requested")} == {"campaigns", "inbox"}
    assert {s for s in PUBLISHES if may_publish(s, "email.sent")} == {"delivery"}
    assert not may_publish("gateway", "api_key.revoked")
    # A family wildcard is one segment, and nothing else leaks through the pattern.
    assert may_publish("delivery", "domain.verified")
    assert not may_publish("delivery", "domain.verified.x")
    assert not may_publish("delivery", "email.requested")


def test_resources_are_the_services_own() -> None:
    p = permissions("delivery")
    for name in ("pm.events", "delivery.send", "delivery.send.dlq", "delivery.send.backoff.1000"):
        assert re.fullmatch(p.configure, name) and re.fullmatch(p.read, name)
    # Its own direct exchange (commands, retries, dead letters), never the default one.
    assert re.fullmatch(p.write, "delivery.direct")
    for name in ("amq.default", "", "keys.direct", "keys.plans"):
        assert not re.fullmatch(p.write, name)
    for name in ("keys.plans", "webhooks.fanout", "amq.gen-abc", "pm.eventsX"):
        assert not re.fullmatch(p.configure, name) and not re.fullmatch(p.read, name)
    assert re.fullmatch(permissions("gateway").read, "amq.gen-abc")
