"""SendGrid: `POST /v3/mail/send` with up to 1,000 personalizations per request, event
webhooks signed with ECDSA (P-256, SHA-256) over `timestamp + body`.

API: https://www.twilio.com/docs/sendgrid/api-reference/mail-send/mail-send; success is 202
with `X-Message-Id`; errors: 400 `{"errors": [{"message", "field"}]}`, 401/403, 413, 429, 5xx.
"""

from __future__ import annotations

import base64
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.delivery.connectors.base import (
    HttpApiConnector,
    NormalizedEvent,
    OutgoingEmail,
    SendResult,
    WebhookRejected,
    WebhookRequest,
    all_results,
    classify_status,
    fill_slots,
    network_failure,
    retry_after_seconds,
)

SIGNATURE_HEADER = "x-twilio-email-event-webhook-signature"
TIMESTAMP_HEADER = "x-twilio-email-event-webhook-timestamp"
SIGNATURE_MAX_AGE_SECONDS = 15 * 60


def _substitution_key(name: str) -> str:
    return f"-{name}-"


class SendGridConnector(HttpApiConnector):
    id = "sendgrid"
    name = "SendGrid"
    batch_limit = 1000

    async def send(self, messages: list[OutgoingEmail]) -> list[SendResult]:
        groups: dict[tuple[str, ...], list[OutgoingEmail]] = defaultdict(list)
        results: dict[str, SendResult] = {}
        for m in messages:
            # Reply-To is per message at SendGrid: per-recipient reply addresses split groups.
            key = (
                (m.from_, m.reply_to or "", *m.template.key)
                if m.template
                else ("single", m.message_id)
            )
            groups[key].append(m)
        for group in groups.values():
            for r in await self._post(group):
                results[r.message_id] = r
        return [results[m.message_id] for m in messages]

    def _request(self, group: list[OutgoingEmail]) -> dict[str, Any]:
        first = group[0]
        t = first.template
        if t is not None:
            subject, html, text = t.subject, t.html, t.text
            subject = fill_slots(subject, _substitution_key)
            html = fill_slots(html, _substitution_key) if html is not None else None
            text = fill_slots(text, _substitution_key) if text is not None else None
        else:
            subject, html, text = first.subject, first.html, first.text
        personalizations = []
        for m in group:
            p: dict[str, Any] = {
                "to": [{"email": m.to}],
                "custom_args": {**m.tenant_metadata, "pm_message_id": m.message_id},
                "headers": dict(m.headers),
            }
            if m.template is not None:
                p["substitutions"] = {_substitution_key(k): v for k, v in m.template.values.items()}
            personalizations.append(p)
        content = []
        # SendGrid requires text/plain before text/html.
        if text is not None:
            content.append({"type": "text/plain", "value": text})
        if html is not None:
            content.append({"type": "text/html", "value": html})
        body: dict[str, Any] = {
            "personalizations": personalizations,
            "from": _sender(first),
            "subject": subject,
            "content": content,
            "tracking_settings": {
                "click_tracking": {"enable": False},
                "open_tracking": {"enable": False},
            },
        }
        if first.tags:
            body["categories"] = list(first.tags)[:10]
        if first.reply_to:
            body["reply_to"] = {"email": first.reply_to}
        return body

    async def _post(self, group: list[OutgoingEmail]) -> list[SendResult]:
        headers = {
            "Authorization": f"Bearer {self.credentials.get('api_key', '')}",
            "Content-Type": "application/json",
        }
        try:
            r = await self.client.post(
                f"{self.base_url}/v3/mail/send",
                content=orjson.dumps(self._request(group)),
                headers=headers,
            )
        except httpx.HTTPError as exc:
            return network_failure(group, exc)
        if r.status_code in (200, 202):
            provider_id = r.headers.get("x-message-id")
            return [SendResult(m.message_id, "accepted", provider_id) for m in group]
        try:
            errors = r.json().get("errors") or []
            detail = "; ".join(str(e.get("message")) for e in errors)
        except (ValueError, AttributeError):
            detail = r.text[:200]
        reason = f"sendgrid HTTP {r.status_code}: {detail}"[:500]
        return all_results(group, classify_status(r.status_code), reason, retry_after_seconds(r))

    def _verify(self, request: WebhookRequest) -> None:
        raw_key = str(self.credentials.get("webhook_public_key") or "")
        if not raw_key:
            raise WebhookRejected("sendgrid webhook public key is not configured")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        if not signature or not timestamp:
            raise WebhookRejected("sendgrid webhook without signature headers")
        try:
            key = serialization.load_der_public_key(base64.b64decode(raw_key))
            assert isinstance(key, ec.EllipticCurvePublicKey)
            key.verify(
                base64.b64decode(signature),
                timestamp.encode() + request.body,
                ec.ECDSA(hashes.SHA256()),
            )
        except (InvalidSignature, ValueError) as exc:
            raise WebhookRejected("sendgrid webhook: bad signature") from exc
        try:
            age = abs(time.time() - float(timestamp))
        except ValueError as exc:
            raise WebhookRejected("sendgrid webhook: bad timestamp") from exc
        if age > SIGNATURE_MAX_AGE_SECONDS:
            raise WebhookRejected("sendgrid webhook: signature too old")

    async def on_webhook(self, request: WebhookRequest) -> list[NormalizedEvent]:
        self._verify(request)
        try:
            events = orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise WebhookRejected("sendgrid webhook: body is not JSON") from exc
        if not isinstance(events, list):
            raise WebhookRejected("sendgrid webhook: body is not an array")
        out: list[NormalizedEvent] = []
        for e in events:
            if not isinstance(e, dict):
                continue
            sg_id = str(e.get("sg_message_id") or "")
            common: dict[str, Any] = {
                "event_key": str(e.get("sg_event_id")),
                "message_id": e.get("pm_message_id"),
                # sg_message_id is "<X-Message-Id>.filter...": the prefix is what send returned.
                "provider_message_id": sg_id.split(".", 1)[0] or None,
                "recipient": e.get("email"),
                "occurred_at": _ts(e.get("timestamp")),
            }
            kind = e.get("event")
            if kind == "delivered":
                out.append(NormalizedEvent("delivered", **common))
            elif kind in ("bounce", "dropped"):
                hard = kind == "dropped" or e.get("type", "bounce") == "bounce"
                out.append(
                    NormalizedEvent(
                        "bounced",
                        bounce_type="hard" if hard else "soft",
                        reason=e.get("reason"),
                        **common,
                    )
                )
            elif kind == "spamreport":
                out.append(NormalizedEvent("complained", **common))
            elif kind == "open":
                out.append(NormalizedEvent("opened", **common))
            elif kind == "click":
                out.append(NormalizedEvent("clicked", url=e.get("url"), **common))
            elif kind in ("unsubscribe", "group_unsubscribe"):
                out.append(NormalizedEvent("unsubscribed", **common))
        return out


def _ts(raw: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(raw), UTC)
    except (TypeError, ValueError):
        return None


def _sender(m: OutgoingEmail) -> dict[str, str]:
    # SendGrid takes the name apart from the address (control characters made spaces).
    name, address = m.from_parts
    clean = " ".join("".join(" " if c < " " or c == "\x7f" else c for c in name).split())
    return {"email": address, "name": clean} if clean else {"email": address}
