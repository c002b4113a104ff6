"""Mailgun: `POST /v3/{domain}/messages` as multipart/form-data (batches of up to 1,000
recipients with `recipient-variables`), event webhooks signed with HMAC-SHA256. (Inbound
mail is the inbox service's.)

Multipart, not urlencoded: Mailgun documents and takes both, but percent-encoding a batch's
`recipient-variables` (hundreds of KB of JSON with tracking URLs) costs ~85 ms of worker CPU
a request; multipart sends the bytes as they are (~4 ms to render the body).

API: https://documentation.mailgun.com/docs/mailgun/api-reference/; errors: 400 with
`{"message"}`, 401 bad key, 404 unknown domain, 429, 5xx.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from services.delivery.connectors.base import (
    HttpApiConnector,
    NormalizedEvent,
    OutgoingEmail,
    SendResult,
    WebhookRejected,
    WebhookRequest,
    all_results,
    classify_status,
    constant_time_equal,
    fill_slots,
    network_failure,
    retry_after_seconds,
)

# Signed webhooks older than this are refused (replay protection on top of dedup).
SIGNATURE_MAX_AGE_SECONDS = 15 * 60


def _recipient_var(name: str) -> str:
    return f"%recipient.{name}%"


class MailgunConnector(HttpApiConnector):
    id = "mailgun"
    name = "Mailgun"
    batch_limit = 1000

    def _auth(self) -> tuple[str, str]:
        return ("api", str(self.credentials.get("api_key", "")))

    def _domain(self, m: OutgoingEmail) -> str:
        return str(self.credentials.get("domain") or m.from_domain)

    async def send(self, messages: list[OutgoingEmail]) -> list[SendResult]:
        groups: dict[tuple[str, ...], list[OutgoingEmail]] = defaultdict(list)
        singles: list[OutgoingEmail] = []
        for m in messages:
            if m.template is not None:
                groups[(self._domain(m), m.from_, *m.template.key)].append(m)
            else:
                singles.append(m)
        results: dict[str, SendResult] = {}
        for group in groups.values():
            for r in await self._send_batch(group):
                results[r.message_id] = r
        for m in singles:
            for r in await self._post(m, self._single_form(m), [m]):
                results[r.message_id] = r
        return [results[m.message_id] for m in messages]

    def _single_form(self, m: OutgoingEmail) -> list[tuple[str, str]]:
        form = [("from", m.from_header), ("to", m.to), ("subject", m.subject)]
        if m.html is not None:
            form.append(("html", m.html))
        if m.text is not None:
            form.append(("text", m.text))
        form += [(f"h:{k}", v) for k, v in m.headers.items()]
        form += self._common(m)
        form.append(("v:pm_message_id", m.message_id))
        return form

    @staticmethod
    def _common(m: OutgoingEmail) -> list[tuple[str, str]]:
        # Our own pixel and redirects do the tracking; Mailgun's would double count.
        form = [("o:tracking", "no"), ("o:tracking-opens", "no"), ("o:tracking-clicks", "no")]
        form += [("o:tag", t) for t in list(m.tags)[:3]]
        form += [(f"v:{k}", v) for k, v in m.tenant_metadata.items()]
        if m.reply_to and not (m.template and "Reply-To" in m.template.headers):
            form.append(("h:Reply-To", m.reply_to))
        return form

    async def _send_batch(self, group: list[OutgoingEmail]) -> list[SendResult]:
        first = group[0]
        t = first.template
        assert t is not None
        form = [("from", first.from_header), ("subject", fill_slots(t.subject, _recipient_var))]
        form += [("to", m.to) for m in group]
        if t.html is not None:
            form.append(("html", fill_slots(t.html, _recipient_var)))
        if t.text is not None:
            form.append(("text", fill_slots(t.text, _recipient_var)))
        form += [(f"h:{k}", fill_slots(v, _recipient_var)) for k, v in t.headers.items()]
        form += self._common(first)
        form.append(("v:pm_message_id", _recipient_var("pm_message_id")))
        variables = {
            m.to: {**(m.template.values if m.template else {}), "pm_message_id": m.message_id}
            for m in group
        }
        form.append(("recipient-variables", orjson.dumps(variables).decode()))
        return await self._post(first, form, group)

    async def _post(
        self, first: OutgoingEmail, form: list[tuple[str, str]], group: list[OutgoingEmail]
    ) -> list[SendResult]:
        url = f"{self.base_url}/v3/{self._domain(first)}/messages"
        try:
            request = self.client.build_request("POST", url, files=_multipart(form))
            # Rendered to one body first: httpcore writes a multipart stream part by part,
            # thousands of socket writes for a 1,000-recipient batch.
            request.read()
            r = await self.client.send(request, auth=self._auth())
        except httpx.HTTPError as exc:
            return network_failure(group, exc)
        if r.status_code == 200:
            provider_id = _json(r).get("id")
            return [SendResult(m.message_id, "accepted", provider_id) for m in group]
        reason = f"mailgun HTTP {r.status_code}: {_json(r).get('message') or r.text[:200]}"
        return all_results(group, classify_status(r.status_code), reason, retry_after_seconds(r))

    def _verify(self, timestamp: str, token: str, signature: str) -> None:
        key = str(self.credentials.get("webhook_signing_key") or "")
        if not key:
            raise WebhookRejected("mailgun webhook signing key is not configured")
        expected = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256)
        if not constant_time_equal(expected.hexdigest(), str(signature)):
            raise WebhookRejected("mailgun webhook: bad signature")
        try:
            age = abs(time.time() - float(timestamp))
        except ValueError as exc:
            raise WebhookRejected("mailgun webhook: bad timestamp") from exc
        if age > SIGNATURE_MAX_AGE_SECONDS:
            raise WebhookRejected("mailgun webhook: signature too old")

    def replay_token(self, request: WebhookRequest) -> tuple[str, int] | None:
        # Mailgun signs only timestamp + token, not the event: a captured signature could be
        # replayed with other data. A token is good once within the timestamp tolerance
        # (both ways, as `_verify` takes the age as absolute).
        body = request.json_object(self.id)
        signed = body.get("signature")
        sig: dict[str, Any] = signed if isinstance(signed, dict) else body
        token = str(sig.get("token", ""))
        return (token, 2 * SIGNATURE_MAX_AGE_SECONDS + 60) if token else None

    async def on_webhook(self, request: WebhookRequest) -> list[NormalizedEvent]:
        body = request.json_object(self.id)
        sig = body.get("signature") or {}
        self._verify(
            str(sig.get("timestamp", "")), str(sig.get("token", "")), str(sig.get("signature", ""))
        )
        e = body.get("event-data") or {}
        kind = e.get("event")
        user_vars = e.get("user-variables") or {}
        headers = (e.get("message") or {}).get("headers") or {}
        provider_id = headers.get("message-id")
        common: dict[str, Any] = {
            "event_key": str(e.get("id") or sig.get("token")),
            "message_id": user_vars.get("pm_message_id"),
            "provider_message_id": f"<{provider_id}>" if provider_id else None,
            "recipient": e.get("recipient"),
            "occurred_at": _ts(e.get("timestamp")),
        }
        if kind == "delivered":
            return [NormalizedEvent("delivered", **common)]
        if kind == "failed":
            status = e.get("delivery-status") or {}
            reason = status.get("description") or status.get("message") or e.get("reason")
            hard = e.get("severity") == "permanent"
            return [
                NormalizedEvent(
                    "bounced", bounce_type="hard" if hard else "soft", reason=reason, **common
                )
            ]
        if kind == "complained":
            return [NormalizedEvent("complained", **common)]
        if kind == "opened":
            return [NormalizedEvent("opened", **common)]
        if kind == "clicked":
            return [NormalizedEvent("clicked", url=e.get("url"), **common)]
        if kind == "unsubscribed":
            return [NormalizedEvent("unsubscribed", **common)]
        return []


def _multipart(pairs: list[tuple[str, str]]) -> list[tuple[str, tuple[None, bytes]]]:
    """Form fields as httpx multipart parts: no filename, no part Content-Type (plain fields);
    repeated names (`to`, `o:tag`) stay repeated, in order."""
    return [(k, (None, v.encode())) for k, v in pairs]


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _ts(raw: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(raw), UTC)
    except (TypeError, ValueError):
        return None
