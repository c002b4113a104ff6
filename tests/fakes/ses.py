"""Fake Amazon SES v2: `POST /v2/email/outbound-emails`, verifying the SigV4 signature with
the configured secret (403 `SignatureDoesNotMatch` otherwise); 200 `{"MessageId"}`, 400
`MessageRejected`/`BadRequestException`, scripted 429 `TooManyRequestsException`/5xx. Also an
SNS stand-in: an RSA certificate served at `/SimpleNotificationService-fake.pem` and SNS
message signing (SignatureVersion 1 and 2).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
import uuid
from typing import Any

import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.delivery.connectors.sigv4 import sign
from tests.fakes.esp_server import FakeEsp, run_standalone

_AUTH = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/ses/"
    r"aws4_request, SignedHeaders=(?P<signed>[^,]+), Signature=(?P<sig>[0-9a-f]{64})"
)


class FakeSes(FakeEsp):
    def __init__(self, access_key: str = "AKIDFAKE", secret: str = "fake-secret") -> None:
        super().__init__()
        self.access_key = access_key
        self.secret = secret
        self._rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = dt.datetime.now(dt.UTC)
        self.cert_pem = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._rsa.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(self._rsa, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )

    def routes(self) -> list[Route]:
        return [
            Route("/v2/email/outbound-emails", self.send, methods=["POST"]),
            Route("/SimpleNotificationService-fake.pem", self.cert, methods=["GET"]),
            Route("/sns/confirm", self.confirm, methods=["GET"]),
        ]

    async def confirm(self, request: Request) -> Response:
        """SNS's SubscribeURL: logged, so a test sees whether a subscription was confirmed."""
        await self.gate(request, [])
        return Response("<ConfirmSubscriptionResponse/>", media_type="text/xml")

    @property
    def cert_url(self) -> str:
        return f"{self.url}/SimpleNotificationService-fake.pem"

    async def cert(self, request: Request) -> Response:
        return Response(self.cert_pem, media_type="application/x-pem-file")

    def _signature_ok(self, request: Request, body: bytes) -> bool:
        m = _AUTH.fullmatch(request.headers.get("authorization", ""))
        if not m or m["key"] != self.access_key:
            return False
        names = m["signed"].split(";")
        headers = {n: request.headers.get(n, "") for n in names if n != "authorization"}
        when = dt.datetime.strptime(request.headers.get("x-amz-date", ""), "%Y%m%dT%H%M%SZ")
        expected = sign(
            "POST",
            str(request.url),
            headers,
            body,
            access_key=self.access_key,
            secret_key=self.secret,
            region=m["region"],
            service="ses",
            now=when.replace(tzinfo=dt.UTC),
        )
        return expected["Authorization"] == request.headers.get("authorization")

    async def send(self, request: Request) -> Response:
        body = await request.body()
        req = orjson.loads(body)
        to = (req.get("Destination") or {}).get("ToAddresses") or []
        status = await self.gate(request, to, req)
        if status == 429:
            return self.failure(
                429,
                {"message": "Maximum sending rate exceeded."},
                {"x-amzn-ErrorType": "TooManyRequestsException"},
            )
        if status:
            return self.failure(
                status,
                {"message": "Service unavailable"},
                {"x-amzn-ErrorType": "ServiceUnavailable"},
            )
        if not self._signature_ok(request, body):
            return JSONResponse(
                {
                    "message": "The request signature we calculated does not "
                    "match the signature you provided."
                },
                403,
                headers={"x-amzn-ErrorType": "SignatureDoesNotMatch"},
            )
        if not req.get("FromEmailAddress"):
            return JSONResponse(
                {"message": "FromEmailAddress is required"},
                400,
                headers={"x-amzn-ErrorType": "BadRequestException"},
            )
        if any(a.endswith("@rejected.example.com") for a in to):
            return JSONResponse(
                {"message": "Email address is not verified."},
                400,
                headers={"x-amzn-ErrorType": "MessageRejected"},
            )
        return JSONResponse({"MessageId": f"0100{uuid.uuid4().hex}-000000"})

    def sns_message(
        self,
        ses_event: dict[str, Any],
        version: str = "1",
        topic: str = "arn:aws:sns:us-east-1:123456789012:ses-events",
    ) -> dict[str, Any]:
        msg = {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": topic,
            "Message": orjson.dumps(ses_event).decode(),
            "Timestamp": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
            "SignatureVersion": version,
            "SigningCertURL": self.cert_url,
        }
        return self._signed(
            msg, ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"), version
        )

    def sns_confirmation(self, topic: str, version: str = "1") -> dict[str, Any]:
        """A signed SubscriptionConfirmation whose SubscribeURL is this fake's `/sns/confirm`."""
        token = uuid.uuid4().hex
        msg = {
            "Type": "SubscriptionConfirmation",
            "MessageId": str(uuid.uuid4()),
            "Token": token,
            "TopicArn": topic,
            "Message": f"You have chosen to subscribe to the topic {topic}.",
            "SubscribeURL": f"{self.url}/sns/confirm?Token={token}",
            "Timestamp": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
            "SignatureVersion": version,
            "SigningCertURL": self.cert_url,
        }
        fields = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
        return self._signed(msg, fields, version)

    def _signed(self, msg: dict[str, Any], fields: tuple[str, ...], version: str) -> dict[str, Any]:
        to_sign = "".join(f"{f}\n{msg[f]}\n" for f in fields if f in msg)
        algo = hashes.SHA256() if version == "2" else hashes.SHA1()
        msg["Signature"] = base64.b64encode(
            self._rsa.sign(to_sign.encode(), padding.PKCS1v15(), algo)
        ).decode()
        return msg


if __name__ == "__main__":
    run_standalone(FakeSes, "ses")
