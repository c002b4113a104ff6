"""The dev stack's mail capture, fed by the delivery service's own SMTP connector: what a
live-mode send of `make up` produces can be listed and read (CLI, page, JSON)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from starlette.testclient import TestClient

from scripts.dev.mail_capture import MailStore, _SmtpHandler, http_app, print_list, print_message
from services.delivery.connectors.base import OutgoingEmail
from services.delivery.connectors.smtp import SmtpConnector
from tests.ports import free_port


def _email(i: int) -> OutgoingEmail:
    return OutgoingEmail(
        message_id=f"msg_{i}",
        tenant_id="ten_1",
        to=f"jane{i}@example.com",
        from_="me@acme.example.com",
        subject=f"Hello {i}",
        html=f"<p>Hi <b>Jane</b> {i}<script>alert(1)</script></p>",
        text=f"Hi Jane {i}",
        headers={},
        category="transactional",
    )


async def _send(port: int, emails: list[OutgoingEmail]) -> None:
    async with httpx.AsyncClient() as client:
        connector = SmtpConnector({"host": "127.0.0.1", "port": port}, client, timeout=10)
        results = await connector.send(emails)
    assert [r.outcome for r in results] == ["accepted"] * len(emails), results


@pytest.fixture
def captured(tmp_path: Path) -> MailStore:
    store = MailStore(tmp_path / "mail")
    port = free_port()
    smtp = Controller(_SmtpHandler(store), hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        asyncio.run(_send(port, [_email(1), _email(2)]))
    finally:
        smtp.stop()
    return store


def test_what_delivery_sends_is_kept_with_its_envelope(captured: MailStore) -> None:
    mails = captured.all()
    assert [m.subject for m in mails] == ["Hello 1", "Hello 2"]
    assert mails[0].rcpt_to == ["jane1@example.com"]
    assert mails[0].mail_from == "me@acme.example.com"
    assert mails[0].body("plain").strip() == "Hi Jane 1"  # type: ignore[union-attr]


def test_pages_and_json_list_and_show_messages(captured: MailStore) -> None:
    client = TestClient(http_app(captured))
    listed = client.get("/api/messages").json()["messages"]
    assert [m["to"] for m in listed] == ["jane1@example.com", "jane2@example.com"]
    one = client.get(f"/api/messages/{listed[1]['id']}").json()
    assert one["text"].strip() == "Hi Jane 2"
    assert "<b>Jane</b>" in one["html"]
    index = client.get("/").text
    assert "Hello 1" in index and "Hello 2" in index
    page = client.get(f"/messages/{listed[0]['id']}").text
    # The HTML part is shown in a sandboxed frame, escaped into srcdoc: its script cannot run.
    assert "<iframe sandbox srcdoc=" in page and "<script>" not in page
    raw = client.get(f"/messages/{listed[0]['id']}.eml")
    assert raw.headers["content-type"].startswith("message/rfc822")
    assert b"Subject: Hello 1" in raw.content
    assert client.get("/api/messages/123-nothere").status_code == 404
    assert client.get("/messages/../../etc/passwd").status_code == 404
    assert client.get("/readyz").json()["messages"] == 2


def test_make_mail_lists_and_prints(
    captured: MailStore, capsys: pytest.CaptureFixture[str]
) -> None:
    assert print_list(captured) == 0
    out = capsys.readouterr().out
    assert "jane1@example.com" in out and "2 message(s)" in out
    first = captured.ids()[0]
    assert print_message(captured, first) == 0
    assert "Hi Jane 1" in capsys.readouterr().out
    assert print_message(captured, "0-00000000") == 1
