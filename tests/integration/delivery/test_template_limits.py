"""Send-API templates are bounded: refused at accept time when they exceed a limit
whatever the data, and at send time a message whose render hits a limit fails alone while
the rest of the batch is sent (issue 13)."""

from __future__ import annotations

from typing import Any

from tests.integration.delivery.conftest import Harness


async def _email(h: Harness, message_id: str) -> dict[str, Any]:
    r = await h.client.get(f"/api/v1/emails/{message_id}", headers=h.headers())
    assert r.status_code == 200, r.text
    return dict(r.json()["data"])


async def test_templates_over_a_limit_whatever_the_data_are_refused_at_accept(
    harness: Harness,
) -> None:
    for html in ("{{ 'x' * 10**9 }}", "{% for i in range(10**8) %}x{% endfor %}"):
        r = await harness.client.post(
            "/api/v1/emails/send",
            json={
                "from": "a@acme.example.com",
                "to": "b@example.com",
                "subject": "s",
                "html": html,
            },
            headers=harness.headers(),
        )
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "template_limit_exceeded"
        assert error["details"][0]["field"] == "body.html"


async def test_a_template_hitting_a_limit_fails_that_message_only(harness: Harness) -> None:
    loops = "{% for a in l %}{% for b in l %}{% for c in l %}x{% endfor %}{% endfor %}{% endfor %}"
    slow = "{% for i in range(10000) %}{{ (s * 100000) | replace('x', 'y') | length }}{% endfor %}"
    bad_loops = await harness.send(
        to="loops@example.com", html=loops, variables={"l": list(range(200))}
    )
    bad_slow = await harness.send(to="slow@example.com", html=slow, variables={"s": "x" * 10})
    good = await harness.send(to="ada@example.com", variables={"name": "Ada"})
    await harness.drain()
    for mid, says in ((bad_loops, "loops too much"), (bad_slow, "too long")):
        email = await _email(harness, mid)
        assert email["status"] == "failed"
        assert email["last_error"].startswith("template_limit_exceeded: ")
        assert says in email["last_error"]
    assert (await _email(harness, good))["status"] == "sent"
