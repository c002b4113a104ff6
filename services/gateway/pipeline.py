"""The gateway's request pipeline: match the route map → authenticate → resolve the plan →
rate-limit (and record usage) → check scope or role → honour Idempotency-Key → forward with
the signed principal → rate-limit headers on every authenticated response.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass

import httpx
import redis.asyncio as aioredis
from prometheus_client import Counter, Histogram
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from libs.common.client_address import forwarded_client
from libs.common.http import (
    ApiError,
    Forbidden,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    ValidationFailed,
    nul_in_request,
    register_error_code,
    request_id_var,
)
from libs.common.principal import PRINCIPAL_HEADER, sign_principal, tenant_id_var
from libs.common.tenancy import TenantScope
from services.gateway.authentication import (
    MODE_HEADER,
    Authenticator,
    Caller,
    RedisGuard,
    principal_for,
    session_mode,
)
from services.gateway.evictions import EvictionFeed
from services.gateway.idempotency import (
    IDEMPOTENCY_HEADER,
    REPLAYED_HEADER,
    IdempotencyStore,
    StoredResponse,
    fingerprint,
    validate_key,
)
from services.gateway.proxy import LimitedBody, UpstreamResponse, Upstreams
from services.gateway.ratelimit import (
    LocalLimiter,
    RateDecision,
    RedisLimiter,
    limits_for,
    rate_limit_headers,
)
from services.gateway.routes import RouteRule, has_dot_segments, match_route
from services.gateway.settings import GatewaySettings

log = logging.getLogger(__name__)

REFRESH_COOKIE = "pm_refresh"  # set by the keys service's cookie transport

register_error_code(
    "user_session_required", 403, "This operation needs a dashboard user session, not an API key."
)
register_error_code(
    "role_required",
    403,
    "This operation needs an owner or admin: the dashboard user's role, or for an API key the "
    "role of the user who created it.",
)

ROUTE_DURATION = Histogram(
    "pm_gateway_request_duration_seconds",
    "Gateway latency per public route (from the route map), method and status",
    ["route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RATE_LIMIT = Counter("pm_gateway_rate_limit", "Rate-limit decisions", ["outcome", "backend"])


class Gateway:
    def __init__(self, settings: GatewaySettings, redis: aioredis.Redis) -> None:
        self.s = settings
        self.redis = redis
        self.guard = RedisGuard(settings.redis_retry_seconds)
        self._hops = settings.proxy_hops()
        self.upstreams = Upstreams(settings)
        # Key verification and plan look-ups (cold paths) use their own small client.
        self.keys_client = httpx.AsyncClient(
            base_url=settings.upstream_url("keys"),
            timeout=httpx.Timeout(10.0, connect=settings.upstream_connect_timeout_seconds),
        )
        self.auth = Authenticator(settings, redis, self.guard, self.keys_client)
        self.limiter = RedisLimiter(redis, settings.redis_namespace)
        self.local_limiter = LocalLimiter()
        self.idempotency = IdempotencyStore(
            redis,
            settings.redis_namespace,
            settings.idempotency_ttl_seconds,
            lock_seconds=int(settings.upstream_timeout_seconds) + 30,
            encryption_key=settings.idempotency_encryption_key.get_secret_value(),
        )
        self.feed = EvictionFeed(
            self.auth,
            redis,
            settings.redis_url,
            settings.amqp_url,
            settings.redis_namespace,
            exchange=settings.events_exchange,
        )
        # Usage counted while Redis was unreachable, pushed when it answers again.
        self._pending_usage: defaultdict[str, defaultdict[str, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        self._usage_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self.feed.start()
        self._usage_task = asyncio.create_task(self._push_pending_usage(), name="usage-push")

    async def close(self) -> None:
        if self._usage_task is not None:
            self._usage_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._usage_task
        await self._flush_pending_usage()
        await self.feed.stop()
        await self.upstreams.close()
        await self.keys_client.aclose()

    # ------------------------------------------------------------ pipeline

    async def handle(self, request: Request) -> Response:
        path: str = request.scope["path"]
        rule = match_route(path)
        if rule is None or has_dot_segments(path):
            raise NotFound("No route matches this path.")
        started = time.perf_counter()
        status = 500
        try:
            response = await self._handle(rule, request)
            status = response.status_code
            return response
        except ApiError as exc:
            status = exc.status_code
            raise
        finally:
            ROUTE_DURATION.labels(rule.name, request.method, str(status)).observe(
                time.perf_counter() - started
            )

    async def _handle(self, rule: RouteRule, request: Request) -> Response:
        limit = rule.max_body_bytes or self.s.max_body_bytes
        # Streamed routes buffer only for Idempotency-Key (the key's fingerprint needs the body).
        streamed = rule.stream_body and IDEMPOTENCY_HEADER not in request.headers
        body: bytes | LimitedBody = (
            self._stream_body(request, limit) if streamed else await self._read_body(request, limit)
        )
        extra = {"X-Request-Id": request_id_var.get() or "", "X-Forwarded-For": self._ip(request)}
        if rule.auth == "none":
            _refuse_nul(request, body)
            if rule.name == "auth" and REFRESH_COOKIE in request.cookies:
                # The dashboard's refresh cookie (scoped to /api/v1/auth); no other cookie.
                extra["Cookie"] = f"{REFRESH_COOKIE}={request.cookies[REFRESH_COOKIE]}"
            upstream = await self._forward(rule, request, body, extra)
            return _response(upstream)

        caller = await self.auth.authenticate(
            request.headers.get("authorization"), extra["X-Forwarded-For"]
        )
        caller = session_mode(caller, request.headers.get(MODE_HEADER))
        tenant_id_var.set(caller.tenant_id)
        plan = await self.auth.plan_of(caller)
        decision = await self._rate_limit(caller, plan)
        if decision.session_revoked:
            raise ApiError(
                "The access token is malformed, expired or revoked.", code="invalid_token"
            )
        headers = rate_limit_headers(decision)
        try:
            if not decision.allowed:
                raise RateLimited(
                    "Rate limit exceeded for this plan; retry after the Retry-After seconds."
                )
            self._authorize(rule, caller, request.method)
            _refuse_nul(request, body)
            principal = principal_for(caller, plan, extra["X-Request-Id"])
            extra[PRINCIPAL_HEADER] = sign_principal(
                principal,
                self.s.principal_private_key.get_secret_value(),
                self.s.principal_ttl_seconds,
                audience=rule.service,
                method=request.method,
                path=request.scope["path"],
            )
            idem_key = request.headers.get(IDEMPOTENCY_HEADER)
            if rule.stream:
                response = await self._stream(rule, request, extra)
            elif request.method == "POST" and idem_key is not None:
                assert isinstance(body, bytes)
                stored = await self._idempotent(rule, request, body, extra, caller, idem_key)
                response = _response(stored)
                response.headers[REPLAYED_HEADER] = "true" if stored.replayed else "false"
            else:
                upstream = await self._forward(rule, request, body, extra)
                response = _response(upstream)
                await self._after_success(rule, request, upstream.status)
        except ApiError as exc:
            exc.headers = {**headers, **(exc.headers or {})}
            if exc.status_code != 429 and caller.subject_type == "api_key":
                self._count_error(caller.subject_id)
            raise
        if response.status_code >= 400 and caller.subject_type == "api_key":
            self._count_error(caller.subject_id)
        response.headers.update(headers)
        return response

    async def _read_body(self, request: Request, limit: int) -> bytes:
        """The whole body, counted while it arrives: 413 as soon as it passes `limit` (a
        chunked body is never buffered past the cap)."""
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(code="payload_too_large")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(code="payload_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    def _stream_body(self, request: Request, limit: int) -> LimitedBody:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(code="payload_too_large")
        return LimitedBody(request.stream(), limit)

    def _ip(self, request: Request) -> str:
        peer = request.client.host if request.client else "unknown"
        return forwarded_client(request.headers.get("x-forwarded-for"), peer, self._hops)

    def _authorize(self, rule: RouteRule, caller: Caller, method: str) -> None:
        if rule.auth == "user":
            if caller.subject_type != "user":
                raise Forbidden(
                    "This operation needs a dashboard user session (access token), not an API key.",
                    code="user_session_required",
                )
            if caller.role not in rule.roles:
                raise Forbidden(f"The '{caller.role}' role may not use this operation.")
            return
        missing = sorted(rule.scopes_for(method).difference(caller.scopes))
        if missing:
            names = " and ".join(f"'{s}'" for s in missing)
            plural = "scope" if len(missing) == 1 else "scopes"
            raise Forbidden(
                f"This operation requires the {names} {plural}.", code="insufficient_scope"
            )
        roles = rule.roles_for(method)
        if roles is not None and caller.role not in roles:
            who = "API key's creator" if caller.subject_type == "api_key" else "user"
            raise Forbidden(
                f"This operation needs an {' or '.join(sorted(roles))} (the {who} is "
                f"{caller.role or 'unknown'}).",
                code="role_required",
            )

    async def _forward(
        self, rule: RouteRule, request: Request, body: bytes | LimitedBody, extra: dict[str, str]
    ) -> UpstreamResponse:
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
        return await self.upstreams.forward(
            rule.service,
            request.method,
            raw_path.decode("latin-1"),
            request.scope.get("query_string", b""),
            request.scope["headers"],
            body,
            extra,
        )

    async def _stream(self, rule: RouteRule, request: Request, extra: dict[str, str]) -> Response:
        """A streamed answer (`text/event-stream`) is relayed as the service writes it, with
        no total timeout; an error answer comes back whole like any other."""
        raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
        upstream = await self.upstreams.open_stream(
            rule.service,
            request.method,
            raw_path.decode("latin-1"),
            request.scope.get("query_string", b""),
            request.scope["headers"],
            extra,
        )
        if isinstance(upstream, UpstreamResponse):
            return _response(upstream)
        response = StreamingResponse(upstream.chunks, status_code=upstream.status)
        for name, value in upstream.headers:
            response.headers.append(name, value)
        return response

    async def _after_success(self, rule: RouteRule, request: Request, status: int) -> None:
        # A revoke or regenerate went through: evict on every replica now, not at the relay's pace.
        if rule.name != "api-keys" or not 200 <= status < 300:
            return
        parts = request.scope["path"].rstrip("/").split("/")
        revoked = request.method == "DELETE" and len(parts) == 6
        regenerated = request.method == "POST" and len(parts) == 7 and parts[6] == "regenerate"
        if revoked or regenerated:
            await self.feed.announce_key(parts[5])

    # ------------------------------------------------------------ idempotency

    async def _idempotent(
        self,
        rule: RouteRule,
        request: Request,
        body: bytes,
        extra: dict[str, str],
        caller: Caller,
        idem_key: str,
    ) -> _Stored:
        key = validate_key(idem_key)
        scope = TenantScope.of(caller)
        fp = fingerprint(
            request.method,
            request.scope["path"],
            request.scope.get("query_string", b"").decode("latin-1"),
            body,
        )
        if not self.guard.usable():
            raise ServiceUnavailable(
                "Idempotent requests are briefly unavailable; retry with the same key.",
                headers={"Retry-After": "1"},
            )
        try:
            stored = await self.idempotency.begin(scope, key, fp)
        except RedisError as exc:
            self.guard.failed("idempotency", exc)
            raise ServiceUnavailable(
                "Idempotent requests are briefly unavailable; retry with the same key.",
                headers={"Retry-After": "1"},
            ) from exc
        if stored is not None:
            return _Stored(stored.status, stored.headers, stored.body, replayed=True)
        try:
            upstream = await self._forward(rule, request, body, extra)
        except BaseException:
            # Unreachable, timed out, cancelled: free the key so the client can retry it.
            with contextlib.suppress(RedisError):
                await self.idempotency.abandon(scope, key)
            raise
        if upstream.status == 503:
            # The service found a dependency of its own down (Postgres, Redis, Vault, the
            # broker) and did nothing; it asks for a retry (Retry-After). Storing that answer
            # would replay it to the retry for 24 h: the key is released like an unreachable
            # service's (found by `make chaos`: a probe retrying one key never got through
            # after Redis and OpenBao restarts).
            with contextlib.suppress(RedisError):
                await self.idempotency.abandon(scope, key)
            return _Stored(upstream.status, upstream.headers, upstream.body, replayed=False)
        try:
            await self.idempotency.finish(
                scope, key, fp, StoredResponse(upstream.status, upstream.headers, upstream.body)
            )
        except RedisError as exc:
            self.guard.failed("idempotency", exc)
            log.error("idempotent response could not be stored; the lock expires on its own")
        await self._after_success(rule, request, upstream.status)
        return _Stored(upstream.status, upstream.headers, upstream.body, replayed=False)

    # ------------------------------------------------------------ rate limits and usage

    async def _rate_limit(self, caller: Caller, plan: str) -> RateDecision:
        limits = limits_for(plan)
        subject = f"{caller.subject_type}:{caller.subject_id}"
        usage_key = caller.subject_id if caller.subject_type == "api_key" else None
        if self.guard.usable():
            try:
                decision = await self.limiter.hit(
                    subject,
                    limits,
                    tenant_id=caller.tenant_id,
                    usage_key_id=usage_key,
                    session_id=caller.session_id,
                )
                self.guard.succeeded()
                RATE_LIMIT.labels("allowed" if decision.allowed else "limited", "redis").inc()
                return decision
            except RedisError as exc:
                self.guard.failed("rate_limit", exc)
        else:
            self.guard.fallback("rate_limit")
        if caller.subject_type == "user":
            # Logout marks live in Redis: without it a revoked session would keep working.
            # Fail closed for dashboard sessions; API keys keep being served.
            raise ServiceUnavailable(
                "Dashboard sessions are briefly unavailable; retry shortly.",
                headers={"Retry-After": "1"},
            )
        decision = self.local_limiter.hit(subject, limits, tenant_id=caller.tenant_id)
        RATE_LIMIT.labels("allowed" if decision.allowed else "limited", "local").inc()
        if usage_key:
            minute = str(decision.now_ms // 60_000 * 60)
            counts = self._pending_usage[usage_key]
            counts["r:" + minute] += 1
            if not decision.allowed:
                counts["e:" + minute] += 1
            counts["last"] = decision.now_ms // 1000
        return decision

    def _count_error(self, key_id: str) -> None:
        minute = str(int(time.time()) // 60 * 60)
        if not self.guard.usable():
            self._pending_usage[key_id]["e:" + minute] += 1
            return
        task = asyncio.create_task(self._incr_error(key_id, minute))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _incr_error(self, key_id: str, minute: str) -> None:
        ns = self.s.redis_namespace
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hincrby(f"{ns}:usage:{key_id}", "e:" + minute, 1)
            pipe.sadd(f"{ns}:usage:dirty", key_id)
            await pipe.execute()
        except RedisError as exc:
            self.guard.failed("usage", exc)
            self._pending_usage[key_id]["e:" + minute] += 1

    async def _push_pending_usage(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._pending_usage and self.guard.usable():
                await self._flush_pending_usage()

    async def _flush_pending_usage(self) -> None:
        pending, self._pending_usage = self._pending_usage, defaultdict(lambda: defaultdict(int))
        if not pending:
            return
        ns = self.s.redis_namespace
        try:
            pipe = self.redis.pipeline(transaction=False)
            for key_id, fields in pending.items():
                for field, count in fields.items():
                    if field == "last":
                        pipe.hset(f"{ns}:usage:{key_id}", "last", count)
                    else:
                        pipe.hincrby(f"{ns}:usage:{key_id}", field, count)
                pipe.sadd(f"{ns}:usage:dirty", key_id)
            await pipe.execute()
        except RedisError as exc:
            self.guard.failed("usage", exc)
            for key_id, fields in pending.items():
                merged = self._pending_usage[key_id]
                for field, count in fields.items():
                    merged[field] = (
                        max(merged[field], count) if field == "last" else merged[field] + count
                    )


@dataclass(frozen=True)
class _Stored:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    replayed: bool


def _response(upstream: UpstreamResponse | _Stored) -> Response:
    response = Response(content=upstream.body, status_code=upstream.status)
    for name, value in upstream.headers:
        response.headers.append(name, value)
    return response


def _refuse_nul(request: Request, body: bytes | LimitedBody) -> None:
    """422 for U+0000 in the query or a buffered JSON body, for every route at once: stored
    text cannot hold it (the spec's string patterns say so). A streamed import body is
    checked row by row by the import itself."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    found = nul_in_request(
        request.query_params.multi_items(), body if isinstance(body, bytes) else None, media
    )
    if found is not None:
        raise ValidationFailed(details=[found])
