"""Tenant metadata cannot override our `pm_*` keys at the ESPs (issue 13): the API refuses
them, and connectors set `pm_message_id` after the tenant's metadata."""

from __future__ import annotations

from typing import Any

from tests.integration.delivery.conftest import Harness


async def test_pm_metadata_keys_are_refused(harness: Harness) -> None:
    for key in ("pm_message_id", "PM_Message_Id", "pm_anything"):
        r = await harness.client.post(
            "/api/v1/emails/send",
            json={
                "from": "a@acme.example.com",
                "to": "b@example.com",
                "subject": "s",
                "text": "t",
                "metadata": {"order": "1", key: "msg_forged"},
            },
            headers=harness.headers(),
        )
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "validation_error"
        assert err["details"][0]["field"] == "body.metadata"


async def test_postmark_gets_our_message_id_beside_tenant_metadata(
    harness: Harness, reset_fakes: dict[str, Any]
) -> None:
    mid = await harness.send(
        to="ada@example.com", category="transactional", metadata={"order": "42"}
    )
    await harness.drain()
    (req,) = reset_fakes["postmark"].requests("/email")
    assert req.json["Metadata"] == {"order": "42", "pm_message_id": mid}
