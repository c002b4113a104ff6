"""SMTP capture (aiosmtpd): accepts mail like a custom provider's server, keeps every message,
and answers 550 / 451 for recipients the test marks as rejected / deferred.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiosmtpd.controller import Controller


class _Handler:
    def __init__(self, owner: FakeSmtp) -> None:
        self.owner = owner

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.owner.reject:
            return "550 5.1.1 No such user"
        if address in self.owner.defer:
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.owner.lock:
            self.owner.raw.append(envelope.original_content or envelope.content)
            self.owner.messages.append(
                (list(envelope.rcpt_tos), message_from_bytes(envelope.content))
            )
        return "250 Message accepted for delivery"


class FakeSmtp:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []
        self.raw: list[bytes] = []  # as received (DATA), for signature checks
        self.reject: set[str] = set()
        self.defer: set[str] = set()
        self.lock = threading.Lock()
        self.port = 0
        self._controller: Controller | None = None

    def start(self, port: int = 0) -> FakeSmtp:
        if not port:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.smtp")
    parser.add_argument("--port", type=int, required=True)
    fake = FakeSmtp().start(parser.parse_args().port)
    print(f"SMTP capture on 127.0.0.1:{fake.port}", flush=True)
    while True:
        time.sleep(3600)
