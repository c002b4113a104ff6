"""Fake SendGrid API: `POST /v3/mail/send` (Bearer key, personalizations); 202 with
`X-Message-Id`, 400 `{"errors": [{"message", "field"}]}` for validation, 401, scripted
429/5xx. Also signs event webhooks with an ECDSA P-256 key, as SendGrid does.
"""

from __future__ import annotations

import base64
import time
import uuid

import orjson
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.fakes.esp_server import FakeEsp, run_standalone


class FakeSendGrid(FakeEsp):
    def __init__(self, api_key: str = "SG.fake") -> None:
        super().__init__()
        self.api_key = api_key
        self._signing_key = ec.generate_private_key(ec.SECP256R1())

    @property
    def webhook_public_key(self) -> str:
        """Base64 DER public key, as SendGrid's settings page shows it."""
        der = self._signing_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode()

    def sign_webhook(self, body: bytes, timestamp: str | None = None) -> dict[str, str]:
        ts = timestamp or str(int(time.time()))
        sig = self._signing_key.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": ts,
        }

    def routes(self) -> list[Route]:
        return [Route("/v3/mail/send", self.send, methods=["POST"])]

    async def send(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        to = [t["email"] for p in body.get("personalizations", []) for t in p.get("to", [])]
        status = await self.gate(request, to, body)
        if status:
            return self.failure(status, {"errors": [{"message": "Scripted failure"}]})
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse(
                {
                    "errors": [
                        {
                            "message": "The provided authorization grant is "
                            "invalid, expired, or revoked",
                            "field": None,
                        }
                    ]
                },
                401,
            )
        errors = []
        if not body.get("personalizations"):
            errors.append(
                {"message": "The personalizations field is required.", "field": "personalizations"}
            )
        if len(body.get("personalizations", [])) > 1000:
            errors.append({"message": "Too many personalizations", "field": "personalizations"})
        if not (body.get("from") or {}).get("email"):
            errors.append({"message": "The from email is required.", "field": "from.email"})
        content = body.get("content") or []
        if content and content[0].get("type") != "text/plain" and len(content) > 1:
            errors.append({"message": "text/plain must be first", "field": "content"})
        if errors:
            return JSONResponse({"errors": errors}, 400)
        return Response(status_code=202, headers={"X-Message-Id": uuid.uuid4().hex[:22]})


if __name__ == "__main__":
    run_standalone(FakeSendGrid, "sendgrid")
