"""Amazon SNS message verification, shared by delivery (SES events) and the inbox (SES
receipt notifications): the topic allow-list first, then the RSA signature over SNS's
canonical string, with the signing certificate fetched only from an allow-listed
`SigningCertURL` and kept for the process lifetime.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Iterable
from typing import Any

import httpx
import orjson
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
# Certificates are few (one per region/rotation): keep them for the process lifetime.
_CERT_CACHE: dict[str, rsa.RSAPublicKey] = {}


class SnsRejected(Exception):
    """The message is not a genuine SNS message from an allowed topic."""


def parse_sns(body: bytes) -> dict[str, Any]:
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise SnsRejected("sns: body is not JSON") from exc
    if not isinstance(msg, dict):
        raise SnsRejected("sns: body is not an object")
    return msg


class SnsVerifier:
    def __init__(
        self, client: httpx.AsyncClient, cert_url_pattern: str, topic_arns: Iterable[str]
    ) -> None:
        self.client = client
        self.cert_url_pattern = re.compile(cert_url_pattern)
        # Empty refuses every SNS message (any AWS account can sign for its own topics).
        self.topic_arns = frozenset(topic_arns)

    async def _public_key(self, url: str) -> rsa.RSAPublicKey:
        if not self.cert_url_pattern.match(url):
            raise SnsRejected("sns: SigningCertURL is not an allowed SNS certificate URL")
        key = _CERT_CACHE.get(url)
        if key is None:
            try:
                r = await self.client.get(url)
                r.raise_for_status()
                cert = x509.load_pem_x509_certificate(r.content)
            except (httpx.HTTPError, ValueError) as exc:
                raise SnsRejected("sns: signing certificate unavailable") from exc
            public = cert.public_key()
            if not isinstance(public, rsa.RSAPublicKey):
                raise SnsRejected("sns: signing certificate is not RSA")
            _CERT_CACHE[url] = key = public
        return key

    async def verify(self, msg: dict[str, Any]) -> None:
        # The topic first: an unknown topic costs no certificate fetch and is never confirmed.
        if not self.topic_arns:
            raise SnsRejected("sns: no topic allowed (set PM_SNS_TOPIC_ARNS)")
        if msg.get("TopicArn") not in self.topic_arns:
            raise SnsRejected("sns: message from a topic that is not allowed")
        kind = msg.get("Type")
        fields = _NOTIFICATION_FIELDS if kind == "Notification" else _CONFIRMATION_FIELDS
        if kind not in ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"):
            raise SnsRejected("sns: unknown message type")
        to_sign = "".join(f"{f}\n{msg[f]}\n" for f in fields if msg.get(f) is not None)
        # SignatureVersion 1 is SHA1 by SNS's definition; 2 is SHA256.
        v2 = str(msg.get("SignatureVersion")) == "2"
        algorithm = hashes.SHA256() if v2 else hashes.SHA1()  # noqa: S303
        try:
            signature = base64.b64decode(str(msg.get("Signature", "")), validate=True)
        except ValueError as exc:
            raise SnsRejected("sns: malformed signature") from exc
        key = await self._public_key(str(msg.get("SigningCertURL", "")))
        try:
            key.verify(signature, to_sign.encode(), padding.PKCS1v15(), algorithm)
        except InvalidSignature as exc:
            raise SnsRejected("sns: bad signature") from exc

    async def confirm(self, msg: dict[str, Any]) -> None:
        """Follow a verified SubscriptionConfirmation's SubscribeURL, only on the same SNS
        endpoint that signed the message."""
        subscribe_url = str(msg.get("SubscribeURL", ""))
        origin = "/".join(str(msg.get("SigningCertURL", "")).split("/", 3)[:3])
        if subscribe_url.startswith(origin + "/"):
            # SNS resends the confirmation on failure; nothing is lost.
            with contextlib.suppress(httpx.HTTPError):
                await self.client.get(subscribe_url)
