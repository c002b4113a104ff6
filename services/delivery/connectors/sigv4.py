"""AWS Signature Version 4 request signing (no botocore in this project).

Implements https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html for
JSON APIs such as SES v2; tests check it against AWS's published test vectors.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    k_date = _hmac(f"AWS4{secret_key}".encode(), date)
    k_region = _hmac(k_date, region)
    k_service = _hmac(k_region, service)
    return _hmac(k_service, "aws4_request")


def _canonical_query(query: str) -> str:
    pairs = []
    for part in query.split("&") if query else []:
        k, _, v = part.partition("=")
        pairs.append((quote(k, safe="-_.~"), quote(v, safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(
    method: str, url: str, headers: Mapping[str, str], body: bytes
) -> tuple[str, str]:
    """(canonical request, signed header names) of a request."""
    parts = urlsplit(url)
    path = quote(parts.path or "/", safe="/-_.~")
    canon = {k.lower().strip(): " ".join(v.strip().split()) for k, v in headers.items()}
    names = sorted(canon)
    signed = ";".join(names)
    lines = [
        method.upper(),
        path,
        _canonical_query(parts.query),
        "".join(f"{n}:{canon[n]}\n" for n in names),
        signed,
        hashlib.sha256(body).hexdigest(),
    ]
    return "\n".join(lines), signed


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key: str,
    secret_key: str,
    region: str,
    service: str,
    now: datetime | None = None,
    session_token: str | None = None,
) -> dict[str, str]:
    """`headers` plus Host, X-Amz-Date (and X-Amz-Security-Token) and Authorization."""
    now = now or datetime.now(UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    out = dict(headers)
    out.setdefault("Host", urlsplit(url).netloc)
    out["X-Amz-Date"] = amz_date
    if session_token:
        out["X-Amz-Security-Token"] = session_token
    request, signed = canonical_request(method, url, out, body)
    scope = f"{date}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(request.encode()).hexdigest()])
    signature = hmac.new(
        signing_key(secret_key, date, region, service), to_sign.encode(), hashlib.sha256
    ).hexdigest()
    out["Authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, SignedHeaders={signed}, "
        f"Signature={signature}"
    )
    return out
