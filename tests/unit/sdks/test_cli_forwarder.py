"""`penguinmails listen`'s forwarding (the CLI's `Forwarder`) against a real local receiver:
signatures any Standard Webhooks library accepts, retries of failures with the same id,
410 and 2xx final, a receiver that is down given up after the retries; URL parsing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from typing import Any

import pytest
from penguinmails import verify_webhook
from penguinmails._cli_events import (
    Forwarder,
    _Stopper,
    _summary,
    forward_url,
    generate_secret,
)
from penguinmails._cli_support import UsageError
from penguinmails._stream import StreamEvent
from standardwebhooks import Webhook

from tests.conftest import REPO, free_port
from tests.fakes.webhook_receiver import Received, Reply, WebhookReceiver, always

EVENT = StreamEvent(
    id="01a22a69-5bbd-76dd-a061-f5f409785e6f",
    type="email.opened",
    data=json.dumps(
        {
            "id": "01a22a69-5bbd-76dd-a061-f5f409785e6f",
            "type": "email.opened",
            "created": "2026-12-01T09:15:30Z",
            "data": {"email": {"id": "msg_1", "to": "jo@example.com"}},
        },
        separators=(",", ":"),
    ),
)


def _forwarder(url: str, secret: str, retries: int = 2) -> tuple[Forwarder, list[dict[str, Any]]]:
    reports: list[dict[str, Any]] = []
    return Forwarder(url, secret, retries=retries, timeout=5, report=reports.append), reports


@pytest.mark.parametrize("secret", [generate_secret(), "a-raw-secret-of-my-own"])
def test_a_forward_verifies_with_standard_webhooks_and_the_sdk(secret: str) -> None:
    with WebhookReceiver(always(204)) as receiver:
        forwarder, reports = _forwarder(receiver.url, secret)
        assert forwarder.forward(EVENT)
        forwarder.close()
        (hit,) = receiver.snapshot()
    assert hit.body == EVENT.data.encode()  # byte for byte, as the stream sent it
    assert hit.headers["content-type"] == "application/json"
    assert hit.headers["webhook-id"] == EVENT.id
    if secret.startswith("whsec_"):  # the library takes whsec_ secrets
        assert Webhook(secret).verify(hit.body, hit.headers)["id"] == EVENT.id
    assert verify_webhook(hit.body, hit.headers, secret)["type"] == "email.opened"
    assert [(r["attempt"], r["status"], r["delivered"]) for r in reports] == [(1, 204, True)]


def test_failures_are_retried_with_the_same_id_and_a_fresh_signature() -> None:
    def script(r: Received) -> Reply:
        return Reply(503, headers={"Retry-After": "0"}) if r.index == 0 else Reply(500 + r.index)

    with WebhookReceiver(script) as receiver:
        forwarder, reports = _forwarder(receiver.url, generate_secret(), retries=2)
        assert not forwarder.forward(EVENT)
        forwarder.close()
        hits = receiver.snapshot()
    assert [h.headers["webhook-id"] for h in hits] == [EVENT.id] * 3
    assert [(r["attempt"], r["status"]) for r in reports] == [(1, 503), (2, 501), (3, 502)]
    assert [r["retry_in"] is not None for r in reports] == [True, True, False]
    assert reports[0]["retry_in"] == 0  # the receiver's Retry-After


def test_gone_is_final_and_a_receiver_that_is_down_is_given_up() -> None:
    with WebhookReceiver(always(410)) as receiver:
        forwarder, reports = _forwarder(receiver.url, generate_secret())
        assert not forwarder.forward(EVENT)
        assert len(receiver.snapshot()) == 1 and reports[0]["retry_in"] is None
    forwarder, reports = _forwarder(f"http://127.0.0.1:{free_port()}/x", generate_secret(), 1)
    assert not forwarder.forward(EVENT)
    assert [r["status"] for r in reports] == [None, None]
    assert all(r["error"] for r in reports)


def test_forward_urls() -> None:
    assert forward_url("localhost:3000/hooks") == "http://localhost:3000/hooks"
    assert forward_url(":3000/hooks") == "http://localhost:3000/hooks"
    assert forward_url("https://dev.example/x") == "https://dev.example/x"
    with pytest.raises(UsageError):
        forward_url("ftp://host/x")


def test_pretty_summary_names_the_entity() -> None:
    assert _summary(json.loads(EVENT.data)) == "jo@example.com (msg_1)"
    assert _summary({"data": "odd"}) == ""


def test_a_stop_signal_while_an_event_is_handled_waits_for_it() -> None:
    stopper = _Stopper()
    handled = []
    with pytest.raises(KeyboardInterrupt), stopper:
        stopper(signal.SIGTERM, None)  # deferred: the event is finished first
        handled.append("event")
    assert handled == ["event"]
    with pytest.raises(KeyboardInterrupt):
        stopper(signal.SIGINT, None)  # waiting for events: at once
    busy = _Stopper()
    with pytest.raises(KeyboardInterrupt), busy:
        busy(signal.SIGINT, None)
        busy(signal.SIGINT, None)  # a second signal: at once
        handled.append("never")
    assert handled == ["event"]


def test_a_closed_stdout_ends_the_command_quietly(tmp_path: Any) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone (`| head` exited) before the CLI writes
    env = {
        **os.environ,
        "XDG_CONFIG_HOME": str(tmp_path),
        "PENGUINMAILS_API_KEY": "pm_test_unused",
        "PENGUINMAILS_BASE_URL": "http://127.0.0.1:9",
    }
    exe = shutil.which("penguinmails", path=str(REPO / ".venv" / "bin")) or "penguinmails"
    try:
        done = subprocess.run(
            [exe, "listen", "--forward-to", ":3000/x", "--print-secret"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (0, b"")
