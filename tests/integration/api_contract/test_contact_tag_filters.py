"""Issue 15 §7: a webhook endpoint filtered by a contact tag receives that contact's email.*
events (delivery learns the recipients' tags from contact.* events), and no one else's;
email.delivered among them (issue 15 §1: the seed's event types reach webhooks)."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.fakes.webhook_receiver import WebhookReceiver
from tests.integration.api_contract.conftest import Account, connect
from tests.integration.common.amqp_tools import eventually


async def test_endpoint_filtered_by_contact_tag_gets_that_contacts_email_sent(
    account: Account, unique: str
) -> None:
    h = account.headers("test")
    vip, other = f"vip-{unique}@example.com", f"other-{unique}@example.com"
    async with httpx.AsyncClient(base_url=account.gw, timeout=30) as c:
        with WebhookReceiver() as receiver:
            r = await c.post(
                "/api/v1/webhooks",
                json={
                    "url": receiver.url,
                    "events": ["email.sent", "email.delivered"],
                    "filters": {"contact_tags": ["vip"]},
                },
                headers=h,
            )
            assert r.status_code == 201, r.text
            for email, tags in ((vip, ["vip", "beta"]), (other, ["beta"])):
                r = await c.post("/api/v1/contacts", json={"email": email, "tags": tags}, headers=h)
                assert r.status_code == 201, r.text

            # Delivery learns the tags from contact.created (its read model, asynchronously).
            conn = await connect("delivery")
            try:

                async def learned() -> bool:
                    n = await conn.fetchval(
                        "SELECT count(*) FROM delivery.contact_tags WHERE email_key = ANY($1)",
                        [vip, other],
                    )
                    return bool(n == 2)

                await eventually(learned, timeout=600)
            finally:
                await conn.close()

            # The other contact's send goes first; the vip's two after it.
            for to in (other, vip, vip):
                r = await c.post(
                    "/api/v1/emails/send",
                    json={
                        "from": "team@acme.example.com",
                        "to": to,
                        "subject": "Hi",
                        "text": "Hello",
                    },
                    headers=h,
                )
                assert r.status_code == 202, r.text

            def of(kind: str) -> list[dict[str, Any]]:
                events = [json.loads(x.body) for x in list(receiver.requests)]
                return [e for e in events if e["type"] == kind]

            # email.delivered exists, is emitted (the sandbox reports delivery) and reaches
            # webhooks, filtered the same way.
            await eventually(
                lambda: len(of("email.sent")) >= 2 and len(of("email.delivered")) >= 2,
                timeout=600,
            )
            got = of("email.sent") + of("email.delivered")
    assert {_recipient(e) for e in got} == {vip}, got
    assert all({"vip", "beta"} <= set(_tags(e)) for e in got), got


def _recipient(event: dict[str, Any]) -> str:
    data = event["data"]
    return str(data.get("to") or data.get("email", {}).get("to"))


def _tags(event: dict[str, Any]) -> list[str]:
    data = event["data"]
    # Flat (2026-11-21) or nested under the email (2026-12-01, new endpoints' default).
    return list(data.get("contact_tags") or data.get("email", {}).get("contact_tags") or [])
