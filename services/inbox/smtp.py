"""The inbound SMTP listener (`python -m services.inbox smtp`): the MX of the platform's
reply domains for self-hosted setups. aiosmtpd speaks SMTP; this module decides:

- RCPT TO outside `PM_REPLY_DOMAINS` → 550 (never an open relay);
- a message larger than `PM_INBOUND_MAX_BYTES` → 552 at SMTP time (SIZE is advertised, and
  DATA beyond it is refused by aiosmtpd);
- STARTTLS is offered when `PM_INBOUND_SMTP_TLS_CERT`/`_KEY` are set;
- 250 only after the message is stored (one transaction: raw, thread, outbox); a database
  failure answers 451 so the sending MTA retries — nothing is lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from libs.common.app import create_app
from libs.common.resources import Resources
from libs.common.runner import run_process
from services.inbox.providers import InboundMail
from services.inbox.service import InboxService
from services.inbox.settings import InboxSettings

log = logging.getLogger(__name__)


class InboundHandler:
    """aiosmtpd handler: recipient check at RCPT, ingest at DATA."""

    def __init__(self, service: InboxService, domains: list[str]) -> None:
        self.service = service
        self.domains = {d.lower() for d in domains}

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        domain = address.rpartition("@")[2].lower()
        if domain not in self.domains:
            return "550 5.7.1 Relaying denied: not a reply domain of this platform"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode()
        key = f"smtp:{hashlib.sha256(raw).hexdigest()}"
        try:
            result = await self.service.ingest(
                InboundMail(raw, key, "smtp", tuple(envelope.rcpt_tos))
            )
        except Exception:
            log.exception("inbound smtp: message not stored")
            return "451 4.3.0 Temporary failure, try again later"
        return f"250 2.0.0 Message accepted ({result.folder})"


def tls_context(settings: InboxSettings) -> ssl.SSLContext | None:
    if not (settings.inbound_smtp_tls_cert and settings.inbound_smtp_tls_key):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.inbound_smtp_tls_cert, settings.inbound_smtp_tls_key)
    return context


async def serve_smtp(settings: InboxSettings, service: InboxService) -> asyncio.AbstractServer:
    handler = InboundHandler(service, settings.reply_domains)
    context = tls_context(settings)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: SMTP(
            handler,
            data_size_limit=settings.inbound_max_bytes,
            enable_SMTPUTF8=True,
            hostname=settings.reply_domains[0] if settings.reply_domains else None,
            tls_context=context,
            timeout=60,
        ),
        settings.inbound_smtp_host,
        settings.inbound_smtp_port,
    )


async def run_smtp(settings: InboxSettings) -> None:
    resources = Resources(settings, schema="inbox", amqp=False)
    await resources.open()
    service = InboxService(settings, resources.pool, None)

    async def body(stop: asyncio.Event) -> None:
        server = await serve_smtp(settings, service)
        log.info(
            "inbound smtp listening",
            extra={"host": settings.inbound_smtp_host, "port": settings.inbound_smtp_port},
        )
        try:
            await stop.wait()
        finally:
            server.close()
            await server.wait_closed()

    app = create_app(settings, process="smtp", readiness=resources.readiness())
    try:
        await run_process(settings, "smtp", app, body)
    finally:
        await service.close()
        await resources.close()
