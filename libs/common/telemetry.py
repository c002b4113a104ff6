"""Logs, traces and metrics of a process.

Owns the JSON log format (one line per record on stdout, carrying the request, tenant and
trace ids), the OpenTelemetry tracer provider and the W3C `traceparent` propagation used on
HTTP calls, outbox rows and AMQP headers, and the Prometheus HTTP metrics with the access log.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest
from pythonjsonlogger.json import JsonFormatter
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.common.http import request_id_var
from libs.common.principal import tenant_id_var

__all__ = [
    "HTTP_REQUESTS_TOTAL",
    "HTTP_REQUEST_DURATION",
    "AccessLogMiddleware",
    "ContextJsonFormatter",
    "HttpMetricsMiddleware",
    "configure_logging",
    "configure_tracing",
    "extract_trace_context",
    "inject_trace_context",
    "metrics_response",
    "route_template",
]

# --- logging ---------------------------------------------------------------------------------


class ContextJsonFormatter(JsonFormatter):
    """One JSON object per record: fixed fields first, then any `extra=` fields."""

    def __init__(self, service: str, process: str | None = None) -> None:
        super().__init__(json_ensure_ascii=False)
        self.service = service
        self.process = process

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        created = datetime.fromtimestamp(record.created, tz=UTC)
        log_data["time"] = created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.message
        log_data["service"] = self.service
        if self.process is not None:
            log_data["process"] = self.process
        log_data["request_id"] = request_id_var.get()
        log_data["tenant_id"] = tenant_id_var.get()
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            log_data["trace_id"] = format(span_context.trace_id, "032x")
            log_data["span_id"] = format(span_context.span_id, "016x")
        else:
            log_data["trace_id"] = None
            log_data["span_id"] = None
        # Extras come last so a consumer may log e.g. the tenant of the event it handles.
        super().add_fields(log_data, record, message_dict)


_log_handler: logging.Handler | None = None
_log_lock = threading.Lock()


def configure_logging(
    service: str,
    level: str | int = "INFO",
    *,
    process: str | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route the root logger to JSON lines on `stream` (stdout). Calling it again replaces
    the handler it installed, so it is safe per process and per test."""
    global _log_handler
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(ContextJsonFormatter(service, process))
    root = logging.getLogger()
    with _log_lock:
        if _log_handler is not None:
            root.removeHandler(_log_handler)
        root.addHandler(handler)
        _log_handler = handler
        root.setLevel(level.upper() if isinstance(level, str) else level)
    # Uvicorn's own handlers would print a second, non-JSON line; its access log is
    # replaced by AccessLogMiddleware. Run uvicorn with log_config=None so it keeps this.
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True
    return handler


# --- tracing ---------------------------------------------------------------------------------

_tracer_provider: TracerProvider | None = None
_trace_lock = threading.Lock()
_propagator = TraceContextTextMapPropagator()


def configure_tracing(
    service: str, otlp_endpoint: str | None, *, process: str | None = None
) -> TracerProvider:
    """The process's tracer provider, created on first call and registered globally.

    `otlp_endpoint` is the collector's base URL (as `OTEL_EXPORTER_OTLP_ENDPOINT`); without
    one, spans are still created so trace ids reach logs and propagated headers.
    """
    global _tracer_provider
    with _trace_lock:
        if _tracer_provider is not None:
            return _tracer_provider
        attributes: dict[str, str] = {SERVICE_NAME: service}
        if process is not None:
            attributes["pm.process"] = process
        provider = TracerProvider(resource=Resource.create(attributes))
        if otlp_endpoint:
            endpoint = otlp_endpoint.rstrip("/")
            if not endpoint.endswith("/v1/traces"):
                endpoint += "/v1/traces"
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        trace.set_tracer_provider(provider)
        _tracer_provider = provider
        return provider


def inject_trace_context(
    headers: dict[str, Any], *, context: Context | None = None
) -> dict[str, Any]:
    """Add `traceparent` (and `tracestate`) for the current span to `headers`; returns them."""
    _propagator.inject(headers, context=context)
    return headers


class _HeaderGetter(Getter[Mapping[str, Any]]):
    """Reads HTTP headers (any case) and AMQP headers (values may be bytes)."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            value = next((v for k, v in carrier.items() if k.lower() == key), None)
        if value is None:
            return None
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        return [str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier.keys())


_header_getter = _HeaderGetter()


def extract_trace_context(headers: Mapping[str, Any], *, context: Context | None = None) -> Context:
    """The context whose parent is the span named by `traceparent` in `headers`; pass it to
    `tracer.start_as_current_span(..., context=...)`."""
    return _propagator.extract(headers, context=context, getter=_header_getter)


# --- metrics and access log ------------------------------------------------------------------

_HTTP_LABELS = ("service", "method", "route", "status")

HTTP_REQUEST_DURATION = Histogram(
    "pm_http_request_duration_seconds",
    "Time from receiving an HTTP request to finishing its response.",
    _HTTP_LABELS,
)
HTTP_REQUESTS_TOTAL = Counter(
    "pm_http_requests",
    "HTTP requests answered.",
    _HTTP_LABELS,
)

# Paths that match no route share one label so random URLs cannot blow up cardinality.
UNMATCHED_ROUTE = "<unmatched>"


def route_template(scope: Scope) -> str:
    """The path template of the route that handled `scope`, e.g. `/api/v1/contacts/{id}`."""
    # FastAPI >= 0.137 leaves the unprefixed route in scope["route"] for included routers;
    # the full template is on its (private) effective route context.
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        context = fastapi_scope.get("effective_route_context")
        template = getattr(context, "path_format", None)
        if isinstance(template, str) and template:
            return template
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    return template if isinstance(template, str) and template else UNMATCHED_ROUTE


class _ResponseStatus:
    """Wraps `send` to remember the response status (500 if the app never answered)."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        await self._send(message)


class HttpMetricsMiddleware:
    """Records `pm_http_request_duration_seconds` and `pm_http_requests_total` per route
    template."""

    def __init__(self, app: ASGIApp, *, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        recorder = _ResponseStatus(send)
        started = time.perf_counter()
        try:
            await self.app(scope, receive, recorder)
        finally:
            labels = (self.service, scope["method"], route_template(scope), str(recorder.status))
            HTTP_REQUEST_DURATION.labels(*labels).observe(time.perf_counter() - started)
            HTTP_REQUESTS_TOTAL.labels(*labels).inc()


access_logger = logging.getLogger("pm.access")


class AccessLogMiddleware:
    """One log line per HTTP request: method, path, status, duration_ms.

    `quiet_paths` (probes, scrapes) are logged at DEBUG so they do not flood the log.
    """

    def __init__(self, app: ASGIApp, *, quiet_paths: Collection[str] = ()) -> None:
        self.app = app
        self.quiet_paths = frozenset(quiet_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        recorder = _ResponseStatus(send)
        started = time.perf_counter()
        # The principal dependency sets the tenant inside the request; scoping it here keeps
        # it off the next request when an app runs in its caller's context (tests, mounts).
        tenant_token = tenant_id_var.set(None)
        try:
            await self.app(scope, receive, recorder)
        finally:
            path = scope["path"]
            access_logger.log(
                logging.DEBUG if path in self.quiet_paths else logging.INFO,
                "%s %s %s",
                scope["method"],
                path,
                recorder.status,
                extra={
                    "method": scope["method"],
                    "path": path,
                    "status": recorder.status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
            tenant_id_var.reset(tenant_token)


def metrics_response() -> Response:
    """The Prometheus text exposition of this process's default registry."""
    return Response(content=generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
