"""Inbox fixtures: the real inbox schema and OpenBao, the fake SES's SNS signing, and an
InboxService / API app wired to them exactly as the api process wires them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest

from libs.common.app import create_app
from libs.common.db import create_pool
from libs.common.events import EmailSent, make_event
from libs.common.principal import Principal
from libs.common.reply_tokens import reply_address
from libs.common.vault import Vault, make_client
from services.inbox.api import build_routers
from services.inbox.service import InboxService
from services.inbox.settings import InboxSettings
from tests.conftest import service_dsn
from tests.fakes.ses import FakeSes
from tests.principals import BIND_HOOKS, unbound_principal

REPLY_DOMAIN = "reply.inbox.test"
TOKEN_KEY = "test-reply-token-key-0123456789abcdef"
TOPIC = "arn:aws:sns:us-east-1:123456789012:ses-inbound"
POSTMARK_AUTH = ("pm-inbound", "pm-inbound-secret")
SENDGRID_AUTH = ("sg-inbound", "sg-inbound-secret")
MAILGUN_KEY = "mg-inbound-signing"


@pytest.fixture(scope="session")
async def inbox_pool(test_database: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(service_dsn("inbox"), "inbox", min_size=1, max_size=6)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def fake_ses() -> Iterator[FakeSes]:
    ses = FakeSes()
    ses.start()
    yield ses
    ses.stop()


@pytest.fixture(scope="session")
async def inbound_creds(vault_dev: Any) -> AsyncIterator[str]:
    path = f"inbox/test-{uuid.uuid4().hex[:8]}"
    vault = Vault(make_client(vault_dev.addr, token=vault_dev.token))
    user, password = POSTMARK_AUTH
    await vault.write(f"{path}/postmark", {"webhook_username": user, "webhook_password": password})
    user, password = SENDGRID_AUTH
    await vault.write(f"{path}/sendgrid", {"webhook_username": user, "webhook_password": password})
    await vault.write(f"{path}/mailgun", {"webhook_signing_key": MAILGUN_KEY})
    await vault.write(f"{path}/ses", {"sns_topic_arn": TOPIC})
    yield path
    for provider in ("postmark", "sendgrid", "mailgun", "ses"):
        await vault.delete(f"{path}/{provider}")


def inbox_settings(creds: str, **overrides: Any) -> InboxSettings:
    values: dict[str, Any] = {
        "environment": "test",
        "inbound_credentials_path": creds,
        "reply_token_key": TOKEN_KEY,
        "reply_domains": [REPLY_DOMAIN],
        "sns_cert_url_pattern": r"^http://127\.0\.0\.1:\d+/[^?#]+\.pem$",
        "inbound_max_bytes": 256 * 1024,
    }
    values.update(overrides)
    return InboxSettings(**values)


class Harness:
    def __init__(
        self, service: InboxService, client: httpx.AsyncClient, tenant: str, unique: str
    ) -> None:
        self.service = service
        self.client = client
        self.tenant = tenant
        self.unique = unique
        self.sender = f"alice-{unique}@acme.example.com"

    def headers(
        self, scopes: tuple[str, ...] = ("read_inbox",), tenant: str | None = None
    ) -> dict[str, str]:
        p = Principal(
            tenant_id=tenant or self.tenant,
            subject_type="api_key",
            subject_id="key_1",
            scopes=list(scopes),
            plan="pro",
            mode="live",
        )
        return {"X-PM-Principal": unbound_principal(p, "inbox")}

    async def sent(
        self,
        to: str = "prospect@example.org",
        tenant: str | None = None,
        request_id: str | None = None,
        campaign_id: str | None = "cmp_1",
    ) -> tuple[str, str]:
        """Delivery sent a message (its `email.sent`, consumed as the worker does): the
        message id and its Message-ID header."""
        mid = f"msg_{uuid.uuid4().hex}"
        header = f"<{mid}@acme.example.com>"
        data = EmailSent(
            message_id=mid,
            to=to,
            campaign_id=campaign_id,
            contact_id="ct_1",
            step=1,
            occurred_at=datetime.now(UTC),
            provider="postmark",
            message_id_header=header,
            from_email=self.sender,
            subject="Quick question",
            request_id=request_id,
        )
        event = make_event(data, tenant_id=tenant or self.tenant, source="/services/delivery")
        async with self.service.pool.acquire() as conn, conn.transaction():
            await self.service.learn_sent(conn, event, event.data)
        return mid, header

    def reply_address(self, message_id: str) -> str:
        address = reply_address(TOKEN_KEY, message_id, REPLY_DOMAIN)
        assert address is not None
        return address

    async def outbox(self, subject: str) -> list[dict[str, Any]]:
        """Events the inbox wrote to its outbox about `subject` (an inbox message id or a
        sent message id), oldest first."""
        rows = await self.service.pool.fetch(
            "SELECT payload FROM outbox WHERE payload->>'subject' = $1 ORDER BY created_at",
            subject,
        )
        return [dict(r["payload"]) for r in rows]

    async def thread(self, thread_id: str, tenant: str | None = None) -> httpx.Response:
        return await self.client.get(
            f"/api/v1/inbox/threads/{thread_id}", headers=self.headers(tenant=tenant)
        )


@pytest.fixture
async def harness(
    inbox_pool: asyncpg.Pool,
    inbound_creds: str,
    vault_dev: Any,
    unique: str,
    fake_ses: FakeSes,
) -> AsyncIterator[Harness]:
    settings = inbox_settings(inbound_creds)
    vault = Vault(make_client(vault_dev.addr, token=vault_dev.token))
    service = InboxService(settings, inbox_pool, vault)
    app = create_app(settings, process="api", routers=build_routers(settings))
    app.state.inbox = service
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://inbox", event_hooks=BIND_HOOKS
    ) as client:
        yield Harness(service, client, f"t_{unique}", unique)
    await service.close()
