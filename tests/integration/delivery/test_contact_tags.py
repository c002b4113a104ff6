"""The recipient-tags read model (queue `delivery.contacts`, consumed in batches) through the
worker's own consumer registration, in process, on the real database: a batch applies its
contacts in order (a later event of a contact wins, an older one never does), and a batch
delivered again changes nothing (the inbox claims the batch's ids in one statement)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from libs.common.bus_testing import InProcessBus
from libs.common.events import ContactCreated, ContactDeleted, ContactUpdated, Envelope, make_event
from services.delivery import consumers
from tests.integration.delivery.conftest import Harness


def _event(
    h: Harness, data: ContactCreated | ContactUpdated | ContactDeleted, at: datetime
) -> Envelope:
    return make_event(data, tenant_id=h.tenant, source="/services/campaigns").model_copy(
        update={"time": at}
    )


async def _tags(h: Harness) -> dict[str, list[str]]:
    rows = await h.service.pool.fetch(
        "SELECT email_key, tags FROM contact_tags WHERE tenant_id = $1 AND mode = 'live'", h.tenant
    )
    return {r["email_key"]: list(r["tags"]) for r in rows}


async def test_a_batch_applies_contacts_in_order_and_a_redelivered_batch_changes_nothing(
    harness: Harness,
) -> None:
    h = harness
    bus = InProcessBus("delivery", h.service.pool)
    consumers.setup(bus, h.service)
    t0 = datetime.now(UTC)
    batch = [
        _event(h, ContactCreated(contact_id="ct_a", email="A@example.com", contact_tags=["x"]), t0),
        _event(h, ContactCreated(contact_id="ct_b", email="b@example.com", contact_tags=["y"]), t0),
        _event(
            h,
            ContactUpdated(contact_id="ct_a", email="a@example.com", contact_tags=["vip"]),
            t0 + timedelta(seconds=1),
        ),
        # An older fact arriving late (a retried message) never overwrites a newer one.
        _event(
            h,
            ContactUpdated(contact_id="ct_b", email="b@example.com", contact_tags=["old"]),
            t0 - timedelta(seconds=1),
        ),
        _event(h, ContactCreated(contact_id="ct_c", email="c@example.com", contact_tags=["z"]), t0),
        _event(
            h, ContactDeleted(contact_id="ct_c", email="c@example.com"), t0 + timedelta(seconds=1)
        ),
    ]
    await bus.deliver_batch(batch)
    expected = {"a@example.com": ["vip"], "b@example.com": ["y"], "c@example.com": []}
    assert await _tags(h) == expected
    # The same ids again (a redelivery), one of them stamped later so that applying it again
    # would show, with one new contact: only the new one applies.
    again = [batch[0].model_copy(update={"time": t0 + timedelta(seconds=5)}), *batch[1:3]]
    new = _event(
        h, ContactCreated(contact_id="ct_d", email="d@example.com", contact_tags=["n"]), t0
    )
    await bus.deliver_batch([*again, new])
    assert await _tags(h) == {**expected, "d@example.com": ["n"]}
    claimed = await h.service.pool.fetchval(
        "SELECT count(*) FROM inbox WHERE consumer = 'delivery.contacts' AND event_id = ANY($1)",
        [e.id for e in [*batch, new]],
    )
    assert claimed == len(batch) + 1
