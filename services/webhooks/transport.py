"""One HTTP attempt to a customer endpoint: pinned address, hard time limit, bounded reads.

The request goes to the address the SSRF guard checked (the Host header and TLS SNI keep the
URL's host name, so certificates are verified against it); redirects are not followed (a
redirect could lead anywhere); the whole attempt, body included, is bounded by one timeout;
at most `body_limit` bytes of the response are read and kept.
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import httpx

from services.webhooks.address_guard import ResolvedUrl

USER_AGENT = "PenguinMails-Webhooks/1.0"


@dataclass(frozen=True)
class AttemptResult:
    """What one attempt produced, as logged."""

    succeeded: bool
    status_code: int | None
    response_ms: float
    response_body: str | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the receiver asked us to wait (429/503)

    @property
    def gone(self) -> bool:
        return self.status_code == 410


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else time.time()
    return max(0.0, when.timestamp() - current)


def _pinned_url(target: ResolvedUrl) -> str:
    parts = urlsplit(target.url)
    ip = str(target.address)
    host = f"[{ip}]" if target.address.version == 6 else ip
    return urlunsplit((target.scheme, f"{host}:{target.port}", parts.path or "/", parts.query, ""))


def _host_header(target: ResolvedUrl) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default = 443 if target.scheme == "https" else 80
    return host if target.port == default else f"{host}:{target.port}"


class WebhookTransport:
    """Shared connection pools for attempts; one transport per process.

    Requests go to the pinned IP, and httpx keys its pool by the URL's (scheme, host, port),
    i.e. the IP: a TLS connection opened (and certificate-checked) for one endpoint's host
    name would be reused for another host on the same IP. So each SNI host name gets its own
    pool: connections are keyed by (IP, port, SNI host). Least recently used idle pools are
    closed beyond `max_pools`.
    """

    def __init__(
        self,
        *,
        timeout: float,
        body_limit: int,
        max_connections: int = 1000,
        max_pools: int = 256,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.timeout = timeout
        self.body_limit = body_limit
        self.max_pools = max_pools
        # One TLS context for every pool: loading the CA bundle per pool would cost each new
        # host name tens of milliseconds.
        self._verify = ssl.create_default_context() if verify is True else verify
        self._per_pool = max(1, max_connections // 4)
        self._pools: OrderedDict[str, httpx.AsyncClient] = OrderedDict()
        self._busy: Counter[str] = Counter()
        self._pools[""] = self._new_client()  # plain http (no SNI), ready before any attempt

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            trust_env=False,
            verify=self._verify,
            limits=httpx.Limits(
                max_connections=self._per_pool, max_keepalive_connections=self._per_pool
            ),
        )

    def _client_for(self, target: ResolvedUrl) -> tuple[str, httpx.AsyncClient]:
        key = target.host.lower() if target.scheme == "https" else ""
        client = self._pools.get(key)
        if client is None:
            client = self._pools[key] = self._new_client()
            for old in [k for k in self._pools if k != key and not self._busy[k]]:
                if len(self._pools) <= self.max_pools:
                    break
                # Idle (no attempt in flight): closing it interrupts nothing.
                asyncio.get_running_loop().create_task(self._pools.pop(old).aclose())
        self._pools.move_to_end(key)
        return key, client

    async def close(self) -> None:
        pools, self._pools = list(self._pools.values()), OrderedDict()
        for client in pools:
            await client.aclose()

    async def send(
        self, target: ResolvedUrl, headers: dict[str, str], body: bytes
    ) -> AttemptResult:
        request_headers = {
            **headers,
            "Host": _host_header(target),
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        key, client = self._client_for(target)
        self._busy[key] += 1
        try:
            return await self._attempt(client, target, request_headers, body, extensions)
        finally:
            self._busy[key] -= 1
            if not self._busy[key]:
                del self._busy[key]

    async def _attempt(
        self,
        client: httpx.AsyncClient,
        target: ResolvedUrl,
        request_headers: dict[str, str],
        body: bytes,
        extensions: dict[str, str],
    ) -> AttemptResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                request = client.build_request(
                    "POST",
                    _pinned_url(target),
                    content=body,
                    headers=request_headers,
                    extensions=extensions,
                )
                response = await client.send(request, stream=True)
                try:
                    kept = bytearray()
                    async for chunk in response.aiter_raw():
                        kept += chunk[: self.body_limit - len(kept)]
                        if len(kept) >= self.body_limit:
                            break
                finally:
                    await response.aclose()
        except TimeoutError:
            return AttemptResult(
                succeeded=False,
                status_code=None,
                response_ms=_ms(started),
                error=f"timeout: no complete response within {self.timeout:g} s",
            )
        except httpx.HTTPError as exc:
            return AttemptResult(
                succeeded=False,
                status_code=None,
                response_ms=_ms(started),
                error=f"connection error: {type(exc).__name__}: {exc}"[:500],
            )
        status = response.status_code
        retry_after = (
            parse_retry_after(response.headers.get("retry-after")) if status in (429, 503) else None
        )
        text = bytes(kept).decode("utf-8", errors="replace")
        return AttemptResult(
            succeeded=200 <= status < 300,
            status_code=status,
            response_ms=_ms(started),
            response_body=text,
            error=None if 200 <= status < 300 else f"HTTP {status}",
            retry_after=retry_after,
        )


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def now_utc() -> datetime:
    return datetime.now(UTC)
