"""Postmark: `POST /email` and `POST /email/batch` (up to 500), event webhooks guarded by
basic auth. (Inbound mail is the inbox service's.)

API: https://postmarkapp.com/developer/api/email-api; errors: HTTP 422 with `ErrorCode`
(300 invalid request, 406 inactive recipient, ...), 401 bad server token, 429, 5xx.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import httpx
import orjson

from services.delivery.connectors.base import (
    HealthStatus,
    HttpApiConnector,
    NormalizedEvent,
    Outcome,
    OutgoingEmail,
    SendResult,
    WebhookRejected,
    WebhookRequest,
    all_results,
    classify_status,
    constant_time_equal,
    network_failure,
    retry_after_seconds,
)

_HARD_BOUNCE_TYPES = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated", "Blocked"}
# Postmark's per-message error codes that a later retry can fix (rate/limit related).
_RETRYABLE_CODES = {405, 429}


class PostmarkConnector(HttpApiConnector):
    id = "postmark"
    name = "Postmark"
    batch_limit = 500

    def _headers(self) -> dict[str, str]:
        return {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "X-Postmark-Server-Token": str(self.credentials.get("server_token", "")),
        }

    @staticmethod
    def _payload(m: OutgoingEmail) -> dict[str, Any]:
        body: dict[str, Any] = {
            "From": m.from_header,
            "To": m.to,
            "Subject": m.subject,
            "Headers": [{"Name": k, "Value": v} for k, v in m.headers.items()],
            # Our own pixel and redirects do the tracking; Postmark's would double count.
            "TrackOpens": False,
            "TrackLinks": "None",
            "MessageStream": "outbound" if m.category == "transactional" else "broadcast",
            # Postmark allows 10 metadata fields; ours is kept (set last) so webhooks map back.
            "Metadata": {
                **dict(list(m.tenant_metadata.items())[:9]),
                "pm_message_id": m.message_id,
            },
        }
        if m.html is not None:
            body["HtmlBody"] = m.html
        if m.text is not None:
            body["TextBody"] = m.text
        if m.tags:
            body["Tag"] = m.tags[0]
        if m.reply_to:
            body["ReplyTo"] = m.reply_to
        return body

    async def health_check(self) -> HealthStatus:
        try:
            r = await self.client.get(f"{self.base_url}/server", headers=self._headers())
        except httpx.HTTPError as exc:
            return HealthStatus(False, type(exc).__name__)
        return HealthStatus(r.status_code == 200, f"HTTP {r.status_code}")

    async def send(self, messages: list[OutgoingEmail]) -> list[SendResult]:
        single = len(messages) == 1
        url = f"{self.base_url}/email" if single else f"{self.base_url}/email/batch"
        payload = self._payload(messages[0]) if single else [self._payload(m) for m in messages]
        try:
            r = await self.client.post(url, content=orjson.dumps(payload), headers=self._headers())
        except httpx.HTTPError as exc:
            return network_failure(messages, exc)
        if r.status_code != 200:
            reason = _error_reason(r)
            if single and r.status_code == 422:
                code = _json(r).get("ErrorCode")
                outcome: Outcome = "retryable" if code in _RETRYABLE_CODES else "permanent"
                return all_results(messages, outcome, reason, None)
            return all_results(
                messages, classify_status(r.status_code), reason, retry_after_seconds(r)
            )
        answers = [_json(r)] if single else r.json()
        if not isinstance(answers, list) or len(answers) != len(messages):
            return all_results(messages, "retryable", "postmark: unexpected batch answer", None)
        results = []
        for m, a in zip(messages, answers, strict=True):
            code = a.get("ErrorCode", 0)
            if code == 0:
                results.append(SendResult(m.message_id, "accepted", a.get("MessageID")))
            else:
                failed: Outcome = "retryable" if code in _RETRYABLE_CODES else "permanent"
                reason = f"postmark {code}: {a.get('Message', '')}"[:500]
                results.append(SendResult(m.message_id, failed, reason=reason))
        return results

    def _verify(self, request: WebhookRequest) -> None:
        user = str(self.credentials.get("webhook_username") or "")
        password = str(self.credentials.get("webhook_password") or "")
        if not user or not password:
            raise WebhookRejected("postmark webhook credentials are not configured")
        raw = request.headers.get("authorization", "")
        scheme, _, value = raw.partition(" ")
        if scheme.lower() != "basic":
            raise WebhookRejected("postmark webhook without basic auth")
        try:
            given = base64.b64decode(value, validate=True).decode()
        except ValueError as exc:
            raise WebhookRejected("postmark webhook: malformed basic auth") from exc
        if not constant_time_equal(given, f"{user}:{password}"):
            raise WebhookRejected("postmark webhook: wrong credentials")

    async def on_webhook(self, request: WebhookRequest) -> list[NormalizedEvent]:
        self._verify(request)
        e = request.json_object(self.id)
        kind = e.get("RecordType")
        meta = e.get("Metadata") or {}
        common: dict[str, Any] = {
            "message_id": meta.get("pm_message_id"),
            "provider_message_id": e.get("MessageID"),
        }
        key = f"{kind}:{e.get('ID') or e.get('MessageID')}"
        if kind == "Delivery":
            return [
                NormalizedEvent(
                    "delivered",
                    key,
                    recipient=e.get("Recipient"),
                    occurred_at=_time(e.get("DeliveredAt")),
                    **common,
                )
            ]
        if kind == "Bounce":
            hard = e.get("Type") in _HARD_BOUNCE_TYPES
            return [
                NormalizedEvent(
                    "bounced",
                    key,
                    recipient=e.get("Email"),
                    occurred_at=_time(e.get("BouncedAt")),
                    bounce_type="hard" if hard else "soft",
                    reason=e.get("Description"),
                    **common,
                )
            ]
        if kind == "SpamComplaint":
            return [
                NormalizedEvent(
                    "complained",
                    key,
                    recipient=e.get("Email"),
                    occurred_at=_time(e.get("BouncedAt")),
                    **common,
                )
            ]
        if kind == "Open":
            return [
                NormalizedEvent(
                    "opened",
                    f"{key}:{e.get('ReceivedAt')}",
                    recipient=e.get("Recipient"),
                    occurred_at=_time(e.get("ReceivedAt")),
                    **common,
                )
            ]
        if kind == "Click":
            return [
                NormalizedEvent(
                    "clicked",
                    f"{key}:{e.get('ReceivedAt')}",
                    recipient=e.get("Recipient"),
                    url=e.get("OriginalLink"),
                    occurred_at=_time(e.get("ReceivedAt")),
                    **common,
                )
            ]
        if kind == "SubscriptionChange" and e.get("SuppressSending"):
            return [
                NormalizedEvent(
                    "unsubscribed",
                    f"{key}:{e.get('ChangedAt')}",
                    recipient=e.get("Recipient"),
                    **common,
                )
            ]
        return []


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_reason(r: httpx.Response) -> str:
    body = _json(r)
    return f"postmark HTTP {r.status_code} {body.get('ErrorCode', '')}: {body.get('Message', '')}"[
        :500
    ]


def _time(raw: Any) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
