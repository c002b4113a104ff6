"""Telemetry: JSON log lines with request/tenant/trace ids, tracing set-up, W3C propagation."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import APIRouter, Depends
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider

from libs.common.app import create_app
from libs.common.http import request_id_var
from libs.common.principal import (
    PRINCIPAL_HEADER,
    Principal,
    principal_dependency,
    sign_principal,
    tenant_id_var,
)
from libs.common.settings import ServiceSettings
from libs.common.signing_keys import generate_private_key, public_keys_of
from libs.common.telemetry import (
    configure_logging,
    configure_tracing,
    extract_trace_context,
    inject_trace_context,
)

REPO = Path(__file__).resolve().parents[3]
KEY = generate_private_key()
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("telemetry-test", "DEBUG", stream=stream)
    yield stream
    configure_logging("telemetry-test", "INFO")


# --- log lines -------------------------------------------------------------------------------


def test_log_line_fields(log_stream: io.StringIO) -> None:
    tracer = configure_tracing("telemetry-test", None).get_tracer("test")
    request_token = request_id_var.set("req_abc")
    tenant_token = tenant_id_var.set("ten_9")
    try:
        with tracer.start_as_current_span("work") as span:
            logging.getLogger("pm.test").info("hello %s", "world", extra={"contact_id": "c_1"})
            context = span.get_span_context()
    finally:
        request_id_var.reset(request_token)
        tenant_id_var.reset(tenant_token)
    logging.getLogger("pm.test").warning("outside")

    inside, outside = lines(log_stream)
    assert list(inside)[:9] == [
        "time",
        "level",
        "logger",
        "message",
        "service",
        "request_id",
        "tenant_id",
        "trace_id",
        "span_id",
    ]
    assert inside["message"] == "hello world"
    assert inside["level"] == "INFO"
    assert inside["logger"] == "pm.test"
    assert inside["service"] == "telemetry-test"
    assert inside["time"].endswith("Z")
    assert inside["request_id"] == "req_abc"
    assert inside["tenant_id"] == "ten_9"
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert inside["contact_id"] == "c_1"
    assert outside["level"] == "WARNING"
    assert outside["request_id"] is None and outside["trace_id"] is None


def test_exceptions_are_logged_with_traceback(log_stream: io.StringIO) -> None:
    try:
        raise ValueError("kaput")
    except ValueError:
        logging.getLogger("pm.test").exception("failed")
    (line,) = lines(log_stream)
    assert line["level"] == "ERROR"
    assert "Traceback" in line["exc_info"] and "kaput" in line["exc_info"]


def test_configure_logging_is_idempotent() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("svc", "INFO", stream=first)
    configure_logging("svc", "INFO", stream=second)
    try:
        logging.getLogger("pm.test").info("once")
        assert first.getvalue() == ""
        assert [line["message"] for line in lines(second)] == ["once"]
    finally:
        configure_logging("svc", "INFO")


def test_uvicorn_logs_go_through_json_and_access_log_is_off(log_stream: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").info("Started server process")
    logging.getLogger("uvicorn.access").info("GET / 200")
    assert [line["message"] for line in lines(log_stream)] == ["Started server process"]


# --- logs of HTTP requests -------------------------------------------------------------------

current_principal = principal_dependency(lambda: public_keys_of(KEY), audience="platform")


def router() -> APIRouter:
    r = APIRouter()

    @r.get("/work")
    async def work() -> dict[str, str]:
        logging.getLogger("pm.test.endpoint").info("doing work")
        return {"done": "yes"}

    @r.get("/tenant-work")
    async def tenant_work(
        principal: Annotated[Principal, Depends(current_principal)],
    ) -> dict[str, str]:
        logging.getLogger("pm.test.endpoint").info("tenant work")
        return {"tenant": principal.tenant_id}

    return r


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        ServiceSettings(service_name="telemetry-http"), process="api", routers=[router()]
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://svc") as c:
        yield c


async def test_request_logs_carry_request_and_trace_ids(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    resp = await client.get("/work", headers={"traceparent": TRACEPARENT})
    request_id = resp.headers["X-Request-Id"]
    records = [line for line in lines(log_stream) if line["logger"].startswith("pm.")]
    endpoint = next(line for line in records if line["logger"] == "pm.test.endpoint")
    access = next(line for line in records if line["logger"] == "pm.access")

    for line in (endpoint, access):
        assert line["request_id"] == request_id
        assert line["trace_id"] == TRACE_ID, "the caller's trace continues in our logs"
    assert access["method"] == "GET"
    assert access["path"] == "/work"
    assert access["status"] == 200
    assert isinstance(access["duration_ms"], float)


async def test_request_logs_carry_the_tenant(
    client: httpx.AsyncClient, log_stream: io.StringIO
) -> None:
    principal = Principal(
        tenant_id="ten_42",
        subject_type="user",
        subject_id="usr_1",
        scopes=[],
        plan="pro",
        mode="live",
    )
    token = sign_principal(
        principal, KEY, 60, audience="platform", method="GET", path="/tenant-work"
    )
    headers = {PRINCIPAL_HEADER: token}
    assert (await client.get("/tenant-work", headers=headers)).status_code == 200
    await client.get("/work")

    records = [line for line in lines(log_stream) if line["logger"].startswith("pm.")]
    tenants = [(line["message"], line["tenant_id"]) for line in records]
    assert ("tenant work", "ten_42") in tenants
    assert ("GET /tenant-work 200", "ten_42") in tenants
    assert ("GET /work 200", None) in tenants, "a tenant must not leak into the next request"


# --- propagation -----------------------------------------------------------------------------


def test_trace_context_round_trip() -> None:
    tracer = configure_tracing("telemetry-test", None).get_tracer("test")
    with tracer.start_as_current_span("publish") as parent:
        headers = inject_trace_context({"content-type": "application/json"})
    parent_context = parent.get_span_context()
    assert headers["content-type"] == "application/json"
    version, trace_id, span_id, _flags = headers["traceparent"].split("-")
    assert (version, trace_id, span_id) == (
        "00",
        f"{parent_context.trace_id:032x}",
        f"{parent_context.span_id:016x}",
    )

    # AMQP headers may arrive as bytes and HTTP header names in any case.
    for carrier in (headers, {"Traceparent": headers["traceparent"].encode()}):
        with tracer.start_as_current_span(
            "consume", context=extract_trace_context(carrier)
        ) as child:
            assert isinstance(child, ReadableSpan)
            child_context = child.get_span_context()
            assert child_context.trace_id == parent_context.trace_id
            assert child.parent is not None
            assert child.parent.span_id == parent_context.span_id


def test_extract_without_traceparent_starts_a_new_trace() -> None:
    tracer = configure_tracing("telemetry-test", None).get_tracer("test")
    with tracer.start_as_current_span("orphan", context=extract_trace_context({})) as span:
        assert isinstance(span, ReadableSpan)
        assert span.parent is None


def test_configure_tracing_is_idempotent() -> None:
    provider = configure_tracing("telemetry-test", None)
    assert isinstance(provider, TracerProvider)
    assert configure_tracing("another-name", "http://127.0.0.1:1") is provider
    assert trace.get_tracer_provider() is provider
    assert "service.name" in provider.resource.attributes


class _CollectorHandler(BaseHTTPRequestHandler):
    received: list[tuple[str, str, int]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((self.path, self.headers.get("Content-Type", ""), len(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_spans_are_exported_over_otlp_http() -> None:
    # A fresh interpreter: the provider is configured once per process.
    server = HTTPServer(("127.0.0.1", 0), _CollectorHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script = (
        "from libs.common.telemetry import configure_tracing\n"
        f"p = configure_tracing('otlp-test', 'http://127.0.0.1:{server.server_port}')\n"
        "with p.get_tracer('t').start_as_current_span('exported'): pass\n"
        "assert p.force_flush(10_000)\n"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    assert _CollectorHandler.received, "no span reached the collector"
    path, content_type, size = _CollectorHandler.received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    assert size > 0
