"""Forwarding to the services: one pooled HTTP client per service, path-preserving, with the
signed principal; hop-by-hop and credential headers never cross.

aiohttp rather than httpx on this hot path: profiling the gateway under load put ~3/4 of its
per-request CPU in httpx/httpcore (bench/gateway.py, BENCH_GATEWAY_PROFILE=1).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from prometheus_client import Histogram
from yarl import URL

from libs.common.http import ApiError, ServiceUnavailable
from libs.common.principal import PRINCIPAL_HEADER
from libs.common.telemetry import inject_trace_context
from services.gateway.routes import UPSTREAM_SERVICES
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

UPSTREAM_DURATION = Histogram(
    "pm_gateway_upstream_duration_seconds",
    "Time the owning service took to answer a forwarded request",
    ["service", "status"],
)

# Never forwarded upstream: hop-by-hop (RFC 9110 §7.6.1), the caller's credentials, and
# headers the gateway itself sets.
_DROP_REQUEST = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "authorization",
        "cookie",
        "accept-encoding",
        "x-forwarded-for",
        "x-request-id",
        "traceparent",
        "tracestate",
        PRINCIPAL_HEADER.lower(),
    }
)
# ASGI hands header names lower-cased, as bytes: compared as they come, nothing decoded.
_DROP_REQUEST_RAW = frozenset(name.encode("latin-1") for name in _DROP_REQUEST)
_DROP_RESPONSE = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "date",
        "server",
        "x-request-id",
    }
)


class LimitedBody:
    """A request body relayed as it arrives, refused as soon as it passes `limit` bytes (the
    upstream request is then aborted and the caller gets 413)."""

    def __init__(self, chunks: AsyncIterator[bytes], limit: int) -> None:
        self._chunks = chunks
        self.limit = limit
        self.size = 0
        self.exceeded = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            self.size += len(chunk)
            if self.size > self.limit:
                self.exceeded = True
                raise BodyTooLarge(self.limit)
            if chunk:
                yield chunk


class BodyTooLarge(ApiError):
    code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"The body is larger than {limit} bytes.")


@dataclass(frozen=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class UpstreamStream:
    """An upstream answer relayed as it arrives (`text/event-stream`): status and headers now,
    the body chunk by chunk; `close()` releases the connection (also when the client left)."""

    status: int
    headers: list[tuple[str, str]]
    chunks: AsyncIterator[bytes]
    close: Callable[[], None]


class UpstreamUnreachable(ServiceUnavailable):
    """The service did not accept the connection: it never saw the request."""


class Upstreams:
    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._bases = {name: settings.upstream_url(name) for name in UPSTREAM_SERVICES}
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._stream_sessions: dict[str, aiohttp.ClientSession] = {}

    def _session(self, service: str) -> aiohttp.ClientSession:
        # Created lazily, inside the running loop (aiohttp binds a session to its loop).
        session = self._sessions.get(service)
        if session is None:
            s = self._settings
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=s.upstream_max_connections, keepalive_timeout=30, ttl_dns_cache=60
                ),
                timeout=aiohttp.ClientTimeout(
                    total=s.upstream_timeout_seconds, connect=s.upstream_connect_timeout_seconds
                ),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
            self._sessions[service] = session
        return session

    async def close(self) -> None:
        for session in [*self._sessions.values(), *self._stream_sessions.values()]:
            await session.close()

    def _stream_session(self, service: str) -> aiohttp.ClientSession:
        # Long-lived answers: no total timeout (a stream lasts minutes), but an upstream that
        # sends nothing, not even its heartbeat comments, for `upstream_stream_idle_seconds`
        # is dead. Its own pool, so open streams never take the request path's connections.
        session = self._stream_sessions.get(service)
        if session is None:
            s = self._settings
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30, ttl_dns_cache=60),
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=s.upstream_connect_timeout_seconds,
                    sock_read=s.upstream_stream_idle_seconds,
                ),
                auto_decompress=False,
                skip_auto_headers=("User-Agent",),
            )
            self._stream_sessions[service] = session
        return session

    def _outgoing(
        self, headers: list[tuple[bytes, bytes]], extra: dict[str, str]
    ) -> CIMultiDict[str]:
        out: CIMultiDict[str] = CIMultiDict(
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in headers
            if k.lower() not in _DROP_REQUEST_RAW
        )
        carrier: dict[str, str] = {}
        inject_trace_context(carrier)
        out.update(carrier)
        out.update(extra)
        # The body is relayed as the service sent it (no decompression, no re-encoding).
        out["Accept-Encoding"] = "identity"
        return out

    async def open_stream(
        self,
        service: str,
        method: str,
        raw_path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        extra: dict[str, str],
    ) -> UpstreamStream | UpstreamResponse:
        """Forward a request whose answer may be a stream: a `text/event-stream` 2xx comes back
        as an `UpstreamStream` relayed chunk by chunk as the service flushes it; any other
        answer (an error envelope) is read whole, as `forward` does."""
        target = self._bases[service] + raw_path + ("?" + query.decode("latin-1") if query else "")
        session = self._stream_session(service)
        try:
            resp = await session.request(
                method,
                URL(target, encoded=True),
                headers=self._outgoing(headers, extra),
                allow_redirects=False,
            )
        except aiohttp.ClientConnectorError as exc:
            log.warning("upstream unreachable", extra={"upstream": service})
            raise UpstreamUnreachable(
                f"The {service} service is unavailable; retry shortly.",
                headers={"Retry-After": "1"},
            ) from exc
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("upstream stream failed", extra={"upstream": service})
            raise ApiError(f"The {service} service failed to answer.", code="bad_gateway") from exc
        kept = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in resp.raw_headers
            if k.decode("latin-1").lower() not in _DROP_RESPONSE
        ]
        if not (200 <= resp.status < 300 and resp.content_type == "text/event-stream"):
            try:
                return UpstreamResponse(resp.status, kept, await resp.read())
            finally:
                resp.release()

        async def chunks() -> AsyncIterator[bytes]:
            try:
                # `iter_any` yields whatever has arrived: no buffering up to a chunk size.
                async for chunk in resp.content.iter_any():
                    yield chunk
            except (TimeoutError, aiohttp.ClientError) as exc:
                # The upstream went silent or away: end the stream; the client resumes.
                log.info("upstream stream ended", extra={"upstream": service, "error": str(exc)})
            finally:
                resp.close()

        def close() -> None:
            with contextlib.suppress(Exception):
                resp.close()

        return UpstreamStream(resp.status, kept, chunks(), close)

    async def forward(
        self,
        service: str,
        method: str,
        raw_path: str,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | LimitedBody,
        extra: dict[str, str],
    ) -> UpstreamResponse:
        out = self._outgoing(headers, extra)
        target = self._bases[service] + raw_path + ("?" + query.decode("latin-1") if query else "")
        started = time.perf_counter()
        status = "error"
        try:
            async with self._session(service).request(
                method,
                URL(target, encoded=True),
                headers=out,
                data=(body.__aiter__() if isinstance(body, LimitedBody) else body) or None,
                allow_redirects=False,
            ) as resp:
                content = await resp.read()
                status = str(resp.status)
                kept = [
                    (k.decode("latin-1"), v.decode("latin-1"))
                    for k, v in resp.raw_headers
                    if k.decode("latin-1").lower() not in _DROP_RESPONSE
                ]
                return UpstreamResponse(resp.status, kept, content)
        except BodyTooLarge:
            raise
        except aiohttp.ClientConnectorError as exc:
            log.warning("upstream unreachable", extra={"upstream": service})
            raise UpstreamUnreachable(
                f"The {service} service is unavailable; retry shortly.",
                headers={"Retry-After": "1"},
            ) from exc
        except TimeoutError as exc:
            log.warning("upstream timed out", extra={"upstream": service})
            raise ApiError(
                f"The {service} service did not answer in time.", code="gateway_timeout"
            ) from exc
        except aiohttp.ClientError as exc:
            if isinstance(body, LimitedBody) and body.exceeded:
                raise BodyTooLarge(body.limit) from exc
            log.warning("upstream failed", extra={"upstream": service, "error": type(exc).__name__})
            raise ApiError(f"The {service} service failed to answer.", code="bad_gateway") from exc
        finally:
            UPSTREAM_DURATION.labels(service, status).observe(time.perf_counter() - started)
