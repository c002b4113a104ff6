"""SMTP for custom providers: one connection per batch (STARTTLS or implicit TLS, AUTH when
credentials are given), per-recipient outcomes from the server's reply codes: 4xx and
connection failures are retried, 5xx fail the message with the server's text.
"""

from __future__ import annotations

import asyncio
import email.utils
import smtplib
import ssl
from email.policy import SMTP as SMTP_POLICY
from typing import Any

import httpx

from services.delivery.connectors.base import (
    Connector,
    HealthStatus,
    Outcome,
    OutgoingEmail,
    SendResult,
)
from services.delivery.connectors.mime import build_mime


class SmtpConnector(Connector):
    id = "smtp"
    name = "SMTP"
    batch_limit = 50

    def __init__(self, credentials: dict[str, Any], client: httpx.AsyncClient, timeout: float):
        super().__init__(credentials, client)
        self.timeout = timeout

    def _open(self) -> smtplib.SMTP:
        host = str(self.credentials.get("host", "127.0.0.1"))
        port = int(self.credentials.get("port", 587))
        if self.credentials.get("use_ssl"):
            server: smtplib.SMTP = smtplib.SMTP_SSL(
                host, port, timeout=self.timeout, context=ssl.create_default_context()
            )
        else:
            server = smtplib.SMTP(host, port, timeout=self.timeout)
            if self.credentials.get("starttls"):
                server.starttls(context=ssl.create_default_context())
        if self.credentials.get("username"):
            server.login(str(self.credentials["username"]), str(self.credentials["password"]))
        return server

    async def health_check(self) -> HealthStatus:
        def probe() -> HealthStatus:
            try:
                with self._open() as server:
                    code, _ = server.noop()
                return HealthStatus(code == 250, f"NOOP {code}")
            except (OSError, smtplib.SMTPException) as exc:
                return HealthStatus(False, type(exc).__name__)

        return await asyncio.to_thread(probe)

    async def send(self, messages: list[OutgoingEmail]) -> list[SendResult]:
        return await asyncio.to_thread(self._send_sync, messages)

    def _send_sync(self, messages: list[OutgoingEmail]) -> list[SendResult]:
        results: list[SendResult] = []
        try:
            server = self._open()
        except smtplib.SMTPAuthenticationError as exc:
            return [_result(m, exc.smtp_code, str(exc.smtp_error)) for m in messages]
        except (OSError, smtplib.SMTPException) as exc:
            return [
                SendResult(m.message_id, "retryable", reason=f"smtp: {type(exc).__name__}")
                for m in messages
            ]
        try:
            for i, m in enumerate(messages):
                try:
                    refused = _send(server, m)
                except smtplib.SMTPRecipientsRefused as exc:
                    code, text = next(iter(exc.recipients.values()))
                    results.append(_result(m, code, text))
                except smtplib.SMTPResponseException as exc:
                    results.append(_result(m, exc.smtp_code, exc.smtp_error))
                except (OSError, smtplib.SMTPException) as exc:
                    # The connection is gone: this and the rest wait for a retry.
                    reason = f"smtp: {type(exc).__name__}"
                    results += [
                        SendResult(x.message_id, "retryable", reason=reason) for x in messages[i:]
                    ]
                    break
                else:
                    if refused:
                        code, text = next(iter(refused.values()))
                        results.append(_result(m, code, text))
                    else:
                        results.append(
                            SendResult(m.message_id, "accepted", m.headers.get("Message-ID"))
                        )
        finally:
            try:
                server.quit()
            except (OSError, smtplib.SMTPException):
                server.close()
        return results


def _send(server: smtplib.SMTP, m: OutgoingEmail) -> dict[str, tuple[int, bytes]]:
    """Send one message, DKIM-signed with the sender domain's key when it has one."""
    mime = build_mime(m)
    if m.dkim is None:
        return server.send_message(mime)
    raw = m.dkim.sign(mime.as_bytes(policy=SMTP_POLICY))
    return server.sendmail(email.utils.parseaddr(m.from_)[1], [m.to], raw)


def _result(m: OutgoingEmail, code: int, text: bytes | str) -> SendResult:
    message = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    outcome: Outcome = "permanent" if 500 <= code < 600 else "retryable"
    return SendResult(m.message_id, outcome, reason=f"smtp {code}: {message}"[:500])
