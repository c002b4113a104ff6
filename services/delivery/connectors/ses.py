"""Amazon SES v2: SigV4-signed `SendEmail` (`POST /v2/email/outbound-emails`), one request
per message sent concurrently (SES's `SendBulkEmail` only takes stored templates), and
events arriving through SNS, whose message signature is verified with the signing
certificate fetched from an allow-listed `SigningCertURL` (`libs.common.sns`, shared with
the inbox's SES receipt notifications).

Errors (header `x-amzn-ErrorType`, body `{"message"}`): 400 `MessageRejected`,
`BadRequestException`, `MailFromDomainNotVerifiedException`; 429 `TooManyRequestsException`,
`LimitExceededException`; 5xx. Sending paused / account suspended are account-wide: they are
retried (and count against the circuit) rather than failing the message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
import orjson

from libs.common.sns import SnsRejected, SnsVerifier, parse_sns
from services.delivery.connectors.base import (
    Connector,
    NormalizedEvent,
    OutgoingEmail,
    SendResult,
    WebhookRejected,
    WebhookRequest,
    classify_status,
    network_failure,
    retry_after_seconds,
)
from services.delivery.connectors.sigv4 import sign

_ACCOUNT_WIDE = {"AccountSuspendedException", "SendingPausedException", "ThrottlingException"}


class SesConnector(Connector):
    id = "ses"
    name = "Amazon SES"
    batch_limit = 50

    def __init__(
        self,
        credentials: dict[str, Any],
        client: httpx.AsyncClient,
        base_url: str | None,
        cert_url_pattern: str,
        topic_arns: Sequence[str] = (),
    ):
        super().__init__(credentials, client)
        # SNS topics whose messages are accepted: the setting plus the credential's topic.
        # Empty refuses every SNS message (any AWS account can sign for its own topics).
        self.topic_arns = frozenset(
            [
                *topic_arns,
                *([credentials["sns_topic_arn"]] if credentials.get("sns_topic_arn") else []),
            ]
        )
        self.region = str(credentials.get("region") or "us-east-1")
        self.base_url = (base_url or f"https://email.{self.region}.amazonaws.com").rstrip("/")
        self._sns = SnsVerifier(client, cert_url_pattern, self.topic_arns)

    def _request(self, m: OutgoingEmail) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if m.text is not None:
            body["Text"] = {"Data": m.text, "Charset": "UTF-8"}
        if m.html is not None:
            body["Html"] = {"Data": m.html, "Charset": "UTF-8"}
        req: dict[str, Any] = {
            "FromEmailAddress": m.from_header,
            "Destination": {"ToAddresses": [m.to]},
            "Content": {
                "Simple": {
                    "Subject": {"Data": m.subject, "Charset": "UTF-8"},
                    "Body": body,
                    "Headers": [{"Name": k, "Value": v} for k, v in m.headers.items()],
                }
            },
            "EmailTags": [{"Name": "pm_message_id", "Value": m.message_id}],
        }
        if m.reply_to:
            req["ReplyToAddresses"] = [m.reply_to]
        if self.credentials.get("configuration_set"):
            req["ConfigurationSetName"] = self.credentials["configuration_set"]
        return req

    async def send(self, messages: list[OutgoingEmail]) -> list[SendResult]:
        return list(await asyncio.gather(*(self._send_one(m) for m in messages)))

    async def _send_one(self, m: OutgoingEmail) -> SendResult:
        url = f"{self.base_url}/v2/email/outbound-emails"
        body = orjson.dumps(self._request(m))
        headers = sign(
            "POST",
            url,
            {"Content-Type": "application/json"},
            body,
            access_key=str(self.credentials.get("access_key_id", "")),
            secret_key=str(self.credentials.get("secret_access_key", "")),
            region=self.region,
            service="ses",
            session_token=self.credentials.get("session_token"),
        )
        try:
            r = await self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return network_failure([m], exc)[0]
        if r.status_code == 200:
            return SendResult(m.message_id, "accepted", r.json().get("MessageId"))
        kind = r.headers.get("x-amzn-errortype", "").split(":", 1)[0]
        try:
            detail = r.json().get("message") or r.json().get("Message") or ""
        except ValueError:
            detail = r.text[:200]
        outcome = "retryable" if kind in _ACCOUNT_WIDE else classify_status(r.status_code)
        reason = f"ses HTTP {r.status_code} {kind}: {detail}"[:500]
        return SendResult(m.message_id, outcome, reason=reason, retry_after=retry_after_seconds(r))

    async def verify_sns(self, msg: dict[str, Any]) -> None:
        try:
            await self._sns.verify(msg)
        except SnsRejected as exc:
            raise WebhookRejected(str(exc)) from exc

    async def on_webhook(self, request: WebhookRequest) -> list[NormalizedEvent]:
        try:
            msg = parse_sns(request.body)
        except SnsRejected as exc:
            raise WebhookRejected(str(exc)) from exc
        await self.verify_sns(msg)
        if msg["Type"] == "SubscriptionConfirmation":
            await self._sns.confirm(msg)
            return []
        if msg["Type"] != "Notification":
            return []
        try:
            e = orjson.loads(msg["Message"])
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise WebhookRejected("sns: SES event is not JSON") from exc
        return _ses_events(e, str(msg.get("MessageId")))


def _ses_events(e: dict[str, Any], key: str) -> list[NormalizedEvent]:
    kind = e.get("eventType") or e.get("notificationType")
    mail = e.get("mail") or {}
    tags = mail.get("tags") or {}
    ours = (tags.get("pm_message_id") or [None])[0]
    common: dict[str, Any] = {
        "event_key": key,
        "message_id": ours,
        "provider_message_id": mail.get("messageId"),
        "recipient": (mail.get("destination") or [None])[0],
    }
    if kind == "Delivery":
        d = e.get("delivery") or {}
        return [NormalizedEvent("delivered", occurred_at=_time(d.get("timestamp")), **common)]
    if kind == "Bounce":
        b = e.get("bounce") or {}
        hard = b.get("bounceType") == "Permanent"
        reason = "; ".join(
            str(r.get("diagnosticCode") or r.get("emailAddress"))
            for r in b.get("bouncedRecipients") or []
        )
        return [
            NormalizedEvent(
                "bounced",
                bounce_type="hard" if hard else "soft",
                reason=reason or b.get("bounceSubType"),
                occurred_at=_time(b.get("timestamp")),
                **common,
            )
        ]
    if kind == "Complaint":
        c = e.get("complaint") or {}
        return [
            NormalizedEvent(
                "complained",
                reason=c.get("complaintFeedbackType"),
                occurred_at=_time(c.get("timestamp")),
                **common,
            )
        ]
    if kind == "Open":
        return [
            NormalizedEvent(
                "opened", occurred_at=_time((e.get("open") or {}).get("timestamp")), **common
            )
        ]
    if kind == "Click":
        c = e.get("click") or {}
        return [
            NormalizedEvent(
                "clicked", url=c.get("link"), occurred_at=_time(c.get("timestamp")), **common
            )
        ]
    return []


def _time(raw: Any) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
