"""The sender's display name reaches every ESP as one well-formed From header (issue 13):
built with `email.utils.formataddr` (specials quoted, CR/LF never passed on)."""

from __future__ import annotations

from email.utils import getaddresses
from typing import Any

from libs.common.bus_testing import InProcessBus
from libs.common.events import EmailRequested
from services.delivery import consumers
from tests.integration.delivery.conftest import Harness


async def _accept(h: Harness, from_name: str, to: str, **extra: Any) -> str:
    data = EmailRequested(
        request_id=f"req-{to}",
        to=to,
        from_="team@acme.example.com",
        from_name=from_name,
        subject="Hi",
        text="Hello",
        **extra,
    )
    # Through the worker's own consumer registration, in process (typed handler + inbox).
    bus = InProcessBus("delivery", h.service.pool)
    consumers.setup(bus, h.service)
    await bus.publish(data, tenant_id=h.tenant, source="/services/campaigns")
    mid = await h.service.pool.fetchval(
        "SELECT id FROM messages WHERE tenant_id = $1 AND request_id = $2",
        h.tenant,
        data.request_id,
    )
    assert mid is not None
    return str(mid)


async def test_display_names_are_quoted_and_never_carry_line_breaks(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    await _accept(harness, "Ada, Inc.", "ada@example.com", category="transactional")
    await _accept(
        harness, "Eve\r\nBcc: victim@example.org", "eve@example.com", category="transactional"
    )
    await harness.drain()
    bodies = [r.json for r in reset_fakes["postmark"].requests("/email")]
    froms = [m["From"] for b in bodies for m in (b if isinstance(b, list) else [b])]
    assert len(froms) == 2
    assert '"Ada, Inc." <team@acme.example.com>' in froms
    for value in froms:
        assert "\r" not in value and "\n" not in value
        # One address per From header, whatever the name held.
        assert [a for _, a in getaddresses([value])] == ["team@acme.example.com"]
