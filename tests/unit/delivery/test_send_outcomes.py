"""What a failed provider call means for a message, and the bulk accept's `email.queued`."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import orjson
import pytest

from libs.common.events import EmailQueued, parse_event
from libs.common.tenancy import TenantScope
from services.delivery.connectors.base import OutgoingEmail, network_failure
from services.delivery.repository import MessageRow
from services.delivery.service import queued_events

MESSAGE = OutgoingEmail(
    "msg_1", "t_1", "a@example.com", "b@acme.example.com", "s", None, "t", {}, "marketing"
)


@pytest.mark.parametrize(
    "exc",
    [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("busy")],
)
def test_a_request_that_never_left_is_retried(exc: Exception) -> None:
    [result] = network_failure([MESSAGE], exc)
    assert result.outcome == "retryable"


@pytest.mark.parametrize(
    "exc",
    [httpx.ReadTimeout("no answer"), httpx.RemoteProtocolError("closed"), httpx.ReadError("x")],
)
def test_an_unanswered_request_is_never_resent(exc: Exception) -> None:
    [result] = network_failure([MESSAGE], exc)
    assert result.outcome == "unknown"
    assert result.reason is not None and result.reason.startswith("provider_outcome_unknown")


def test_queued_events_are_valid_email_queued() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    row = MessageRow(
        id="msg_1",
        tenant_id="t_1",
        mode="test",
        content_id="cnt_1",
        batch_id=None,
        request_id=None,
        campaign_id="cmp_1",
        contact_id=None,
        step=2,
        to_email="a@example.com",
        variables={},
        category="marketing",
        tags=[],
        metadata={},
        track_opens=True,
        track_clicks=True,
        status="queued",
        next_attempt_at=at,
        contact_tags=["vip"],
    )
    [stamped, other] = queued_events(
        TenantScope("t_1", "test"), [row, row._replace(id="msg_2")], at
    )
    parsed = parse_event(orjson.dumps(stamped))
    assert parsed.type == "email.queued" and parsed.subject == "msg_1"
    assert parsed.tenant_id == "t_1" and parsed.mode == "test"
    assert parsed.payload() == EmailQueued(
        message_id="msg_1",
        to="a@example.com",
        campaign_id="cmp_1",
        step=2,
        occurred_at=at,
        contact_tags=["vip"],
    )
    assert other["id"] != stamped["id"] and other["data"]["message_id"] == "msg_2"
