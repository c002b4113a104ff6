"""Domain logic of the inbox: ingesting inbound mail (store raw, parse, classify, thread,
publish), the sent-message read model, and the inbox API (threads, messages, replies).

Threading, in order: a verified reply token in a recipient address (`reply+<token>@<reply
domain>`), then the Message-IDs in In-Reply-To/References (and a DSN's original headers)
against the messages delivery sent. Mail matching neither goes to the "unmatched" folder
of the tenant that sends from the recipient address, else to the operator quarantine:
never dropped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import httpx
import orjson
import uuid_utils

from libs.common import outbox
from libs.common.events import (
    EmailAutoReplied,
    EmailReplied,
    EmailRequested,
    Envelope,
    EventData,
    InboxFeedbackReceived,
    InboxMessageReceived,
    make_event,
)
from libs.common.http import ApiError, Conflict, NotFound, register_error_code
from libs.common.pagination import ListParams, Page
from libs.common.reply_tokens import message_id_of_address
from libs.common.sns import SnsVerifier
from libs.common.vault import Vault
from services.inbox import providers
from services.inbox import repository as repo
from services.inbox.classification import Verdict, classify
from services.inbox.mime import MalformedMail, ParsedMail, message_ids, parse_mail
from services.inbox.providers import HookRequest, InboundMail, InboundRejected
from services.inbox.settings import InboxSettings

log = logging.getLogger(__name__)
SOURCE = "/services/inbox"
_OURS = re.compile(r"<(msg_[0-9a-f]{32})@[^>]+>")
SNIPPET = 200

# The same codes delivery answered on these paths before the inbox owned them.
register_error_code(
    "webhook_signature_invalid", 401, "The ESP webhook's signature or credentials are wrong."
)
register_error_code("unknown_provider", 404, "No ESP connector has this name.")
register_error_code("thread_not_found", 404, "No inbox thread with this id.")
register_error_code("inbox_message_not_found", 404, "No inbox message with this id.")
register_error_code(
    "thread_not_answerable",
    409,
    "The thread has no sent message to answer from (unmatched mail has no known sender).",
)
register_error_code("raw_message_expired", 404, "The raw MIME of this message is no longer kept.")


class InboundUnauthorized(ApiError):
    code = "webhook_signature_invalid"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid_utils.uuid7().hex}"


def _event(data: EventData, tenant_id: str, subject: str | None, mode: str) -> Envelope:
    return make_event(
        data,
        tenant_id=tenant_id,
        source=SOURCE,
        subject=subject,
        mode="test" if mode == "test" else "live",
    )


@dataclass(frozen=True)
class IngestResult:
    inbox_message_id: str | None
    thread_id: str | None
    folder: Literal["inbox", "unmatched", "quarantine", "duplicate"]
    classification: str | None


def _reply_subject(subject: str) -> str:
    return subject if re.match(r"^\s*re\s*:", subject, re.IGNORECASE) else f"Re: {subject}"


class InboxService:
    def __init__(
        self,
        settings: InboxSettings,
        pool: asyncpg.Pool,
        vault: Vault | None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.vault = vault
        self.client = client or httpx.AsyncClient(timeout=settings.provider_timeout_seconds)
        self._creds: dict[str, tuple[float, dict[str, Any]]] = {}

    async def close(self) -> None:
        await self.client.aclose()

    @property
    def _token_key(self) -> str:
        return self.settings.reply_token_key.get_secret_value()

    # ------------------------------------------------------------ inbound hooks

    async def _credentials(self, provider: str) -> dict[str, Any]:
        hit = self._creds.get(provider)
        now = time.monotonic()
        if hit and now - hit[0] < self.settings.credentials_cache_seconds:
            return hit[1]
        path = f"{self.settings.inbound_credentials_path.strip('/')}/{provider}"
        value = (await self.vault.read(path) if self.vault else None) or {}
        self._creds[provider] = (now, value)
        return value

    async def receive_hook(self, provider: str, request: HookRequest) -> list[IngestResult]:
        if provider not in providers.PROVIDERS:
            raise NotFound(f"No inbound route for provider {provider!r}.", code="unknown_provider")
        creds = await self._credentials(provider)
        try:
            if provider == "ses":
                topics = [*self.settings.sns_topic_arns]
                if creds.get("sns_topic_arn"):
                    topics.append(str(creds["sns_topic_arn"]))
                verifier = SnsVerifier(self.client, self.settings.sns_cert_url_pattern, topics)
                mails = await providers.ses(request, verifier)
            else:
                parse = {"postmark": providers.postmark, "mailgun": providers.mailgun,
                         "sendgrid": providers.sendgrid}[provider]  # fmt: skip
                mails = parse(request, creds)
            if request.replay_token is not None:
                token, body_hash = request.replay_token
                if not await repo.claim_hook_token(self.pool, provider, token, body_hash):
                    raise InboundRejected(f"{provider} inbound: token already used (replay)")
        except InboundRejected as exc:
            log.warning("inbound hook rejected", extra={"provider": provider, "error": str(exc)})
            raise InboundUnauthorized("The inbound webhook could not be verified.") from exc
        return [await self.ingest(m) for m in mails]

    # ------------------------------------------------------------ ingest

    async def ingest(self, mail: InboundMail) -> IngestResult:
        """Store, parse, classify, thread and publish one inbound message (one transaction:
        a crash leaves nothing half-done, and the provider's retry is ingested again)."""
        raw_id = new_id("raw")
        async with self.pool.acquire() as conn, conn.transaction():
            days = self.settings.raw_retention_days
            if not await repo.insert_raw(conn, raw_id, mail.source, mail.dedup_key, mail.raw, days):
                return IngestResult(None, None, "duplicate", None)
            parsed: ParsedMail | None = None
            error: str | None = None
            try:
                parsed = parse_mail(mail.raw)
            except MalformedMail as exc:
                error = str(exc)
            recipients = [*mail.recipients, *(parsed.to if parsed else [])]
            origin = await self._origin(conn, recipients, parsed)
            verdict = classify(parsed) if parsed is not None else None
            if origin is not None:
                return await self._file(conn, raw_id, mail, parsed, error, verdict, origin)
            owner = await repo.tenant_of_sender(conn, recipients) if recipients else None
            if owner is None:
                await repo.insert_quarantine(
                    conn,
                    {
                        "id": new_id("qrn"),
                        "raw_id": raw_id,
                        "recipient": ", ".join(recipients)[:1000] or None,
                        "sender": parsed.from_email if parsed else None,
                        "subject": parsed.subject[:998] if parsed else None,
                        "reason": error or "no tenant owns the recipient address",
                    },
                )
                return IngestResult(None, None, "quarantine", None)
            return await self._file_unmatched(
                conn, raw_id, mail, parsed, error, verdict, owner["tenant_id"], owner["mode"]
            )

    async def _origin(
        self, conn: asyncpg.Connection, recipients: list[str], parsed: ParsedMail | None
    ) -> asyncpg.Record | None:
        """The sent message this mail answers: reply token first, then the headers."""
        for address in recipients:
            mid = message_id_of_address(self._token_key, address, self.settings.reply_domains)
            if mid is not None:
                row = await repo.sent_message(conn, mid)
                if row is not None:
                    return row
        if parsed is None:
            return None
        candidates = parsed.thread_ids
        for header in candidates:
            found = _OURS.fullmatch(header)
            if found:
                row = await repo.sent_message(conn, found.group(1))
                if row is not None and row["header_message_id"] in (None, header):
                    return row
        return await repo.sent_by_header(conn, candidates) if candidates else None

    def _message_row(
        self,
        mail: InboundMail,
        parsed: ParsedMail | None,
        error: str | None,
        verdict: Verdict | None,
        raw_id: str,
        tenant_id: str,
        mode: str,
        thread_id: str,
        now: datetime,
    ) -> dict[str, Any]:
        p = parsed
        return {
            "id": new_id("imsg"),
            "tenant_id": tenant_id,
            "mode": mode,
            "thread_id": thread_id,
            "direction": "inbound",
            "classification": verdict.classification if verdict else None,
            "header_message_id": p.message_id if p else None,
            "in_reply_to": " ".join(p.in_reply_to) if p else None,
            "references_header": " ".join(p.references) if p else None,
            "from_email": p.from_email if p else None,
            "from_name": p.from_name if p else None,
            "to_email": ", ".join(p.to) if p else ", ".join(mail.recipients) or None,
            "subject": p.subject if p else "",
            "text_body": p.text if p else None,
            "html_body": p.html if p else None,
            "headers": [[k, v] for k, v in p.headers] if p else [],
            "attachments": [
                {
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "size": a.size,
                    "content_id": a.content_id,
                }
                for a in p.attachments
            ]
            if p
            else [],
            "parse_error": error,
            "raw_id": raw_id,
            "source": mail.source,
            "occurred_at": now,
        }

    async def _file(
        self,
        conn: asyncpg.Connection,
        raw_id: str,
        mail: InboundMail,
        parsed: ParsedMail | None,
        error: str | None,
        verdict: Verdict | None,
        origin: asyncpg.Record,
    ) -> IngestResult:
        tenant_id, mode = origin["tenant_id"], origin["mode"]
        now = datetime.now(UTC)
        thread = await self._thread_of(conn, origin, now)
        await repo.set_raw_tenant(conn, raw_id, tenant_id)
        row = self._message_row(
            mail, parsed, error, verdict, raw_id, tenant_id, mode, thread["id"], now
        )
        await repo.insert_message(conn, row)
        classification = verdict.classification if verdict else None
        await repo.touch_thread(conn, thread["id"], now, classification=classification, unread=True)
        events = [self._received(row, thread["id"], "inbox", origin)]
        base = {
            "message_id": origin["message_id"],
            "to": origin["to_email"],
            "campaign_id": origin["campaign_id"],
            "contact_id": origin["contact_id"],
            "step": origin["step"],
            "occurred_at": now,
            "thread_id": thread["id"],
            "inbox_message_id": row["id"],
        }
        snippet = ((parsed.text if parsed else None) or "").strip()[:SNIPPET] or None
        data: EventData | None = None
        if classification == "human_reply":
            data = EmailReplied(**base, reply_snippet=snippet)
        elif classification == "auto_reply":
            data = EmailAutoReplied(**base, reply_snippet=snippet)
        elif classification == "bounce" and verdict is not None:
            data = InboxFeedbackReceived(
                kind="bounce",
                message_id=origin["message_id"],
                inbox_message_id=row["id"],
                bounce_type=verdict.bounce_type,
                reason=(verdict.bounce_reason or "")[:500] or None,
            )
        elif classification == "unsubscribe_request":
            data = InboxFeedbackReceived(
                kind="unsubscribe", message_id=origin["message_id"], inbox_message_id=row["id"]
            )
        if data is not None:
            events.append(_event(data, tenant_id, origin["message_id"], mode))
        await outbox.enqueue(conn, *events)
        return IngestResult(row["id"], thread["id"], "inbox", classification)

    async def _thread_of(
        self, conn: asyncpg.Connection, origin: asyncpg.Record, now: datetime
    ) -> asyncpg.Record:
        tenant_id, mode = origin["tenant_id"], origin["mode"]
        if origin["thread_id"]:
            thread = await repo.get_thread(conn, tenant_id, mode, origin["thread_id"])
            if thread is not None:
                return thread
        thread = await repo.thread_for_origin(conn, tenant_id, origin["message_id"])
        if thread is not None:
            return thread
        thread = await repo.insert_thread(
            conn,
            {
                "id": new_id("thr"),
                "tenant_id": tenant_id,
                "mode": mode,
                "folder": "inbox",
                "subject": origin["subject"] or "",
                "contact_email": origin["to_email"],
                "contact_id": origin["contact_id"],
                "campaign_id": origin["campaign_id"],
                "origin_message_id": origin["message_id"],
                "last_message_at": origin["sent_at"] or origin["created_at"],
            },
        )
        await repo.set_sent_thread(conn, origin["message_id"], thread["id"])
        # Our message opens the thread (what we know of it: delivery keeps the body).
        await repo.insert_message(
            conn,
            {
                "id": new_id("imsg"),
                "tenant_id": tenant_id,
                "mode": mode,
                "thread_id": thread["id"],
                "direction": "outbound",
                "header_message_id": origin["header_message_id"],
                "from_email": origin["from_email"],
                "to_email": origin["to_email"],
                "subject": origin["subject"] or "",
                "sent_message_id": origin["message_id"],
                "status": "sent",
                "source": "delivery",
                "occurred_at": origin["sent_at"] or origin["created_at"],
            },
        )
        await repo.touch_thread(
            conn, thread["id"], thread["last_message_at"], classification=None, unread=False
        )
        return thread

    async def _file_unmatched(
        self,
        conn: asyncpg.Connection,
        raw_id: str,
        mail: InboundMail,
        parsed: ParsedMail | None,
        error: str | None,
        verdict: Verdict | None,
        tenant_id: str,
        mode: str,
    ) -> IngestResult:
        now = datetime.now(UTC)
        thread = await repo.insert_thread(
            conn,
            {
                "id": new_id("thr"),
                "tenant_id": tenant_id,
                "mode": mode,
                "folder": "unmatched",
                "subject": (parsed.subject if parsed else "") or "",
                "contact_email": parsed.from_email if parsed else None,
                "contact_id": None,
                "campaign_id": None,
                "origin_message_id": None,
                "last_message_at": now,
            },
        )
        await repo.set_raw_tenant(conn, raw_id, tenant_id)
        row = self._message_row(
            mail, parsed, error, verdict, raw_id, tenant_id, mode, thread["id"], now
        )
        await repo.insert_message(conn, row)
        classification = verdict.classification if verdict else None
        await repo.touch_thread(conn, thread["id"], now, classification=classification, unread=True)
        await outbox.enqueue(conn, self._received(row, thread["id"], "unmatched", None))
        return IngestResult(row["id"], thread["id"], "unmatched", classification)

    @staticmethod
    def _received(
        row: dict[str, Any], thread_id: str, folder: Literal["inbox", "unmatched"],
        origin: asyncpg.Record | None,
    ) -> Envelope:  # fmt: skip
        data = InboxMessageReceived(
            inbox_message_id=row["id"],
            thread_id=thread_id,
            folder=folder,
            classification=row["classification"] or "unparsed",
            from_email=row["from_email"],
            subject=(row["subject"] or "")[:998] or None,
            message_id=origin["message_id"] if origin else None,
            campaign_id=origin["campaign_id"] if origin else None,
            contact_id=origin["contact_id"] if origin else None,
            occurred_at=row["occurred_at"],
        )
        return _event(data, row["tenant_id"], row["id"], row["mode"])

    async def sweep_raw(self) -> int:
        return await repo.sweep_raw(self.pool)

    # ------------------------------------------------------------ read model (events)

    async def learn_sent(
        self, conn: asyncpg.Connection, event: Envelope, data: dict[str, Any]
    ) -> None:
        """email.queued / email.sent / email.failed: the sent-message read model, and the
        state of our own replies."""
        fields = {
            "message_id": data["message_id"],
            "to": data["to"],
            "campaign_id": data.get("campaign_id"),
            "contact_id": data.get("contact_id"),
            "step": data.get("step"),
            "header_message_id": data.get("message_id_header"),
            "from_email": data.get("from_email"),
            "subject": data.get("subject"),
            "request_id": data.get("request_id"),
            "sent_at": event.time if event.type == "email.sent" else None,
        }
        await repo.learn_sent(conn, event.tenant_id, event.mode, fields)
        if event.type == "email.sent" and fields["request_id"]:
            linked = await repo.outbound_sent(
                conn,
                event.tenant_id,
                fields["request_id"],
                data["message_id"],
                fields["header_message_id"],
            )
            if linked is not None:
                await repo.set_sent_thread(conn, data["message_id"], linked["thread_id"])
        elif event.type == "email.failed":
            await repo.outbound_failed(conn, event.tenant_id, data["message_id"])

    # ------------------------------------------------------------ API

    async def list_threads(
        self, tenant_id: str, mode: str, f: repo.ThreadFilter, params: ListParams
    ) -> Page[dict[str, Any]]:
        # `last_message_at` is a timestamp: its cursor values decode as datetimes.
        params = dataclasses.replace(
            params, datetime_sorts=params.datetime_sorts | {"last_message_at"}
        )
        rows = await repo.list_threads(self.pool, tenant_id, mode, f, params)
        return params.page(rows, thread_out)

    async def get_thread(self, tenant_id: str, mode: str, thread_id: str) -> dict[str, Any]:
        async with self.pool.acquire() as conn:
            thread = await repo.get_thread(conn, tenant_id, mode, thread_id)
            if thread is None:
                raise NotFound("No inbox thread with this id.", code="thread_not_found")
            messages = await repo.thread_messages(conn, tenant_id, mode, thread_id)
        return {**thread_out(thread), "messages": [message_out(m) for m in messages]}

    async def update_thread(
        self, tenant_id: str, mode: str, thread_id: str, changes: dict[str, Any]
    ) -> dict[str, Any]:
        if "read" in changes:
            changes["unread"] = not changes.pop("read")
        row = await repo.update_thread(self.pool, tenant_id, mode, thread_id, changes)
        if row is None:
            raise NotFound("No inbox thread with this id.", code="thread_not_found")
        return thread_out(row)

    async def list_messages(
        self,
        tenant_id: str,
        mode: str,
        params: ListParams,
        *,
        thread_id: str | None,
        direction: str | None,
        classification: str | None,
    ) -> Page[dict[str, Any]]:
        rows = await repo.list_messages(
            self.pool,
            tenant_id,
            mode,
            params,
            thread_id=thread_id,
            direction=direction,
            classification=classification,
        )
        return params.page(rows, message_out)

    async def get_message(self, tenant_id: str, mode: str, message_id: str) -> dict[str, Any]:
        row = await repo.get_message(self.pool, tenant_id, mode, message_id)
        if row is None:
            raise NotFound("No inbox message with this id.", code="inbox_message_not_found")
        return message_out(row)

    async def raw_message(self, tenant_id: str, mode: str, message_id: str) -> bytes:
        async with self.pool.acquire() as conn:
            row = await repo.get_message(conn, tenant_id, mode, message_id)
            if row is None:
                raise NotFound("No inbox message with this id.", code="inbox_message_not_found")
            raw = await repo.raw_of_message(conn, tenant_id, mode, message_id)
        if raw is None:
            raise NotFound(
                "The raw MIME of this message is no longer kept.", code="raw_message_expired"
            )
        return bytes(raw)

    async def reply(
        self,
        tenant_id: str,
        mode: str,
        thread_id: str,
        text: str | None,
        html: str | None,
        subject: str | None,
    ) -> dict[str, Any]:
        """Answer a thread from its original sender, through delivery (`email.requested`),
        with In-Reply-To/References so it threads in the prospect's client."""
        async with self.pool.acquire() as conn, conn.transaction():
            thread = await repo.get_thread(conn, tenant_id, mode, thread_id)
            if thread is None:
                raise NotFound("No inbox thread with this id.", code="thread_not_found")
            origin = (
                await repo.sent_message(conn, thread["origin_message_id"])
                if thread["origin_message_id"]
                else None
            )
            if origin is None or origin["tenant_id"] != tenant_id or not origin["from_email"]:
                raise Conflict(
                    "This thread has no sent message to answer from.",
                    code="thread_not_answerable",
                )
            messages = await repo.thread_messages(conn, tenant_id, mode, thread_id)
            chain: list[str] = []
            for m in messages:
                for mid in [*message_ids(m["references_header"]), m["header_message_id"]]:
                    if mid and mid not in chain:
                        chain.append(mid)
            last_theirs = next((m for m in reversed(messages) if m["direction"] == "inbound"), None)
            parent = (last_theirs or messages[-1])["header_message_id"] if messages else None
            parent = parent or origin["header_message_id"]
            to = (last_theirs["from_email"] if last_theirs else None) or origin["to_email"]
            now = datetime.now(UTC)
            row = {
                "id": new_id("imsg"),
                "tenant_id": tenant_id,
                "mode": mode,
                "thread_id": thread_id,
                "direction": "outbound",
                "in_reply_to": parent,
                "references_header": " ".join(chain[-20:]) or None,
                "from_email": origin["from_email"],
                "to_email": to,
                "subject": subject or _reply_subject(thread["subject"] or origin["subject"] or ""),
                "text_body": text,
                "html_body": html,
                "status": "requested",
                "source": "api",
                "occurred_at": now,
            }
            await repo.insert_message(conn, row)
            await repo.touch_thread(conn, thread_id, now, classification=None, unread=False)
            metadata = {}
            if parent:
                metadata["pm_in_reply_to"] = parent
            if chain:
                metadata["pm_references"] = " ".join(chain[-20:])
            request = EmailRequested(
                request_id=row["id"],
                to=to,
                from_=origin["from_email"],
                subject=row["subject"],
                html=html,
                text=text,
                contact_id=thread["contact_id"],
                category="transactional",
                track_opens=False,
                track_clicks=False,
                metadata=metadata,
                mode=mode,
            )
            await outbox.enqueue(conn, _event(request, tenant_id, row["id"], mode))
            stored = await repo.get_message(conn, tenant_id, mode, row["id"])
        assert stored is not None
        return message_out(stored)


def thread_out(r: Any) -> dict[str, Any]:
    return {
        "id": r["id"],
        "folder": r["folder"],
        "subject": r["subject"],
        "contact_email": r["contact_email"],
        "contact_id": r["contact_id"],
        "campaign_id": r["campaign_id"],
        "message_id": r["origin_message_id"],
        "classification": r["classification"],
        "read": not r["unread"],
        "archived": r["archived"],
        "labels": list(r["labels"] or ()),
        "message_count": r["message_count"],
        "mode": r["mode"],
        "last_message_at": r["last_message_at"],
        "created_at": r["created_at"],
        "updated_at": r["updated_at"],
    }


def message_out(r: Any) -> dict[str, Any]:
    headers = r["headers"]
    attachments = r["attachments"]
    return {
        "id": r["id"],
        "thread_id": r["thread_id"],
        "direction": r["direction"],
        "classification": r["classification"],
        "message_id_header": r["header_message_id"],
        "in_reply_to": r["in_reply_to"],
        "references": r["references_header"],
        "from_email": r["from_email"],
        "from_name": r["from_name"],
        "to": r["to_email"],
        "subject": r["subject"],
        "text": r["text_body"],
        "html": r["html_body"],
        "headers": [
            {"name": k, "value": v}
            for k, v in (orjson.loads(headers) if isinstance(headers, str) else headers)
        ],
        "attachments": orjson.loads(attachments) if isinstance(attachments, str) else attachments,
        "parse_error": r["parse_error"],
        "has_raw": r["raw_id"] is not None,
        "email_id": r["sent_message_id"],
        "status": r["status"],
        "source": r["source"],
        "occurred_at": r["occurred_at"],
        "created_at": r["created_at"],
    }


def dedup_key_for(raw: bytes, source: str) -> str:
    return f"{source}:{hashlib.sha256(raw).hexdigest()}"
