"""The in-process bus's routing: the broker's topic matching, and typed registration."""

from __future__ import annotations

import pytest

from libs.common.bus import PermanentError
from libs.common.bus_testing import InProcessBus, topic_matches
from libs.common.events import ContactCreated, ContactDeleted, Envelope


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("email.*", "email.sent", True),
        ("email.*", "email.sent.late", False),
        ("email.#", "email", True),
        ("email.#", "email.a.b", True),
        ("#", "contact.created", True),
        ("*.created", "contact.created", True),
        ("contact.created", "contact.updated", False),
        ("*", "a.b", False),
    ],
)
def test_topic_patterns_match_as_on_the_broker(pattern: str, key: str, matches: bool) -> None:
    assert topic_matches(pattern, key) is matches


async def test_a_typed_handler_gets_the_validated_model_of_its_types_only() -> None:
    bus = InProcessBus("t")
    seen: list[tuple[ContactCreated, str]] = []

    @bus.on("contacts", ContactCreated, inbox=False)
    async def on_created(data: ContactCreated, event: Envelope, _conn: object) -> None:
        seen.append((data, event.tenant_id))

    sent = await bus.publish(
        ContactCreated(contact_id="ct_1", email="a@example.com"), tenant_id="t_1"
    )
    assert seen == [(ContactCreated(contact_id="ct_1", email="a@example.com"), "t_1")]
    assert sent.type == "contact.created"
    # Another type is not routed to it; the queue is bound to its types only.
    await bus.publish(ContactDeleted(contact_id="ct_1", email="a@example.com"), tenant_id="t_1")
    assert len(seen) == 1
    assert bus.subscriptions[0].patterns == ["contact.created"]


async def test_a_handler_error_reaches_the_test() -> None:
    bus = InProcessBus("t")

    @bus.on("contacts", ContactCreated, inbox=False)
    async def refuse(data: ContactCreated, event: Envelope, _conn: object) -> None:
        raise PermanentError(f"no {data.contact_id}")

    with pytest.raises(PermanentError, match="no ct_9"):
        await bus.publish(ContactCreated(contact_id="ct_9", email="b@example.com"), tenant_id="t")
