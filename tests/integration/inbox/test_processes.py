"""The inbox's real processes: the worker learns a sent message from RabbitMQ (queue
`inbox.sent`), the SMTP listener process takes a reply, the relay publishes `email.replied`."""

from __future__ import annotations

import asyncio
import smtplib
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg

from libs.common.events import EmailSent, make_event
from tests.conftest import free_port, service_dsn
from tests.integration.common.amqp_tools import eventually, publish_all
from tests.unit.inbox import mail

DOMAIN = "reply.processes.test"


async def test_worker_smtp_and_relay_processes(spawn: Any, amqp_url: str, unique: str) -> None:
    smtp_port = free_port()
    env = {
        "PM_REPLY_DOMAINS": f'["{DOMAIN}"]',
        "PM_INBOUND_SMTP_PORT": str(smtp_port),
    }
    worker = spawn("inbox", "worker", **env)
    listener = spawn("inbox", "smtp", **env)
    relay = spawn("inbox", "relay", **env)
    for p in (worker, listener, relay):
        p.wait_ready(120)
    tenant = f"t_proc_{unique}"
    mid = f"msg_{uuid.uuid4().hex}"
    header = f"<{mid}@acme.example.com>"
    sent = EmailSent(
        message_id=mid,
        to="prospect@example.org",
        provider="postmark",
        occurred_at=datetime.now(UTC),
        message_id_header=header,
        from_email=f"alice-{unique}@acme.example.com",
        subject="Quick question",
    )
    await publish_all(
        amqp_url, [make_event(sent, tenant_id=tenant, source="/services/delivery", subject=mid)]
    )
    conn = await asyncpg.connect(service_dsn("inbox"))
    try:

        async def learned() -> bool:
            row = await conn.fetchval(
                "SELECT header_message_id FROM inbox.sent_messages WHERE message_id = $1", mid
            )
            return bool(row == header)

        await eventually(learned, timeout=60)
        raw = mail.reply(to=f"alice-{unique}@acme.example.com", in_reply_to=header)

        def deliver() -> Any:
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as smtp:
                return smtp.sendmail("prospect@example.org", [f"x@{DOMAIN}"], raw)

        assert await asyncio.to_thread(deliver) == {}

        async def published() -> bool:
            at = await conn.fetchval(
                "SELECT published_at FROM inbox.outbox WHERE event_type = 'email.replied'"
                " AND payload->>'subject' = $1",
                mid,
            )
            return at is not None

        await eventually(published, timeout=60)
    finally:
        await conn.close()
