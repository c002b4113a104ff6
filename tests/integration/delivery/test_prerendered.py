"""Content the campaign runner already personalised (`email.requested` with `prerendered`) is
sent verbatim: contact data that looks like a template (`{{ 7*7 }}`) stays text and is never
evaluated a second time in delivery's sandbox."""

from __future__ import annotations

from typing import Any

from libs.common.events import EmailRequested
from tests.integration.delivery.conftest import Harness

LOOKS_LIKE_A_TEMPLATE = "Hi {{ 7*7 }} {% for i in range(3) %}x{% endfor %}"


async def _accept(h: Harness, to: str, prerendered: bool) -> None:
    data = EmailRequested(
        request_id=f"req-{to}",
        to=to,
        from_="team@acme.example.com",
        subject=f"About {{{{ 6*7 }}}} {'literal' if prerendered else 'template'}",
        text=LOOKS_LIKE_A_TEMPLATE,
        html=f"<p>{LOOKS_LIKE_A_TEMPLATE} \x1epm_unsubscribe_url\x1f</p>",
        category="transactional",
        track_opens=False,
        track_clicks=False,
        prerendered=prerendered,
    )
    async with h.service.pool.acquire() as conn, conn.transaction():
        assert await h.service.accept_requested(conn, h.tenant, data) is not None


def _sent(fakes: dict[str, Any]) -> dict[str, dict[str, Any]]:
    bodies = [r.json for r in fakes["postmark"].requests("/email")]
    return {m["To"]: m for b in bodies for m in (b if isinstance(b, list) else [b])}


async def test_prerendered_content_is_sent_verbatim(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    await _accept(harness, "literal@example.com", prerendered=True)
    await _accept(harness, "template@example.com", prerendered=False)
    await harness.drain()
    sent = _sent(reset_fakes)

    literal = sent["literal@example.com"]
    assert literal["Subject"] == "About {{ 6*7 }} literal"
    assert literal["TextBody"] == LOOKS_LIKE_A_TEMPLATE
    # Verbatim, except the slot delimiters, which no text may smuggle in.
    assert literal["HtmlBody"] == f"<p>{LOOKS_LIKE_A_TEMPLATE} pm_unsubscribe_url</p>"

    # The same parts without the flag are a template (what an API send gets).
    template = sent["template@example.com"]
    assert template["Subject"] == "About 42 template"
    assert template["TextBody"] == "Hi 49 xxx"
