"""The HTTP contract: envelopes, error codes, error handlers and request ids."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, EmailStr

import libs.common.principal  # noqa: F401  (registers the principal error codes)
from libs.common.http import (
    ERROR_CODES,
    NUL_REFUSED,
    ApiError,
    Conflict,
    ErrorEnvelope,
    NotFound,
    Pagination,
    RateLimited,
    RequestIdMiddleware,
    SuccessEnvelope,
    install_error_handlers,
    ok,
    register_error_code,
    request_id_var,
)

DOCS = Path(__file__).resolve().parents[3] / "docs" / "errors.md"
GENERATED_ID = re.compile(r"req_[0-9a-f]{32}")


class Contact(BaseModel):
    email: EmailStr
    tags: list[str] = []


def build_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)

    @app.post(
        "/contacts",
        response_model=SuccessEnvelope[Contact],
        responses={422: {"model": ErrorEnvelope}},
    )
    async def create_contact(contact: Contact) -> dict[str, object]:
        return ok(contact)

    @app.get("/contacts", response_model=SuccessEnvelope[list[Contact]])
    async def list_contacts() -> dict[str, object]:
        return ok([], pagination=Pagination(limit=10, next_cursor="c_2", has_more=True))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("db password hunter2 leaked in exception text")

    @app.get("/db-down")
    async def db_down() -> None:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")

    @app.get("/db-full")
    async def db_full() -> None:
        raise asyncpg.TooManyConnectionsError("sorry, too many clients already")

    @app.get("/nul")
    async def nul() -> None:
        try:
            raise asyncpg.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8"')
        except asyncpg.PostgresError as exc:
            raise RuntimeError("query failed") from exc

    @app.get("/nul-json")
    async def nul_json() -> None:
        raise asyncpg.UntranslatableCharacterError("unsupported Unicode escape sequence")

    @app.get("/missing")
    async def missing() -> None:
        raise NotFound("Contact c_1 does not exist.")

    @app.get("/legacy-404")
    async def legacy() -> None:
        raise HTTPException(status_code=404, detail="Campaign not found")

    @app.get("/throttled")
    async def throttled() -> None:
        raise RateLimited(headers={"Retry-After": "7"})

    @app.get("/duplicate")
    async def duplicate() -> None:
        raise Conflict("Email already used.", details=[{"field": "email", "message": "taken"}])

    @app.get("/whoami")
    async def whoami() -> dict[str, str | None]:
        return {"request_id": request_id_var.get()}

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(build_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
        yield c


def assert_error(resp: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["success"] is False
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], list)
    assert error["request_id"] == resp.headers["X-Request-Id"]
    return error  # type: ignore[no-any-return]


async def test_malformed_json_is_400_invalid_json(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/contacts", content=b'{"email": "a@b.co",', headers={"Content-Type": "application/json"}
    )
    error = assert_error(resp, 400, "invalid_json")
    assert error["details"][0]["field"] == "body"  # type: ignore[index]


async def test_schema_invalid_body_is_422_with_field_details(client: httpx.AsyncClient) -> None:
    resp = await client.post("/contacts", json={"email": "not-an-email", "tags": ["ok", 3]})
    error = assert_error(resp, 422, "validation_error")
    fields = {d["field"]: d["message"] for d in error["details"]}  # type: ignore[attr-defined]
    assert set(fields) == {"body.email", "body.tags.1"}
    assert "email" in fields["body.email"]


async def test_missing_body_is_422(client: httpx.AsyncClient) -> None:
    resp = await client.post("/contacts", json=None)
    error = assert_error(resp, 422, "validation_error")
    assert error["details"][0]["field"] == "body"  # type: ignore[index]


async def test_unknown_route_is_404_envelope(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/nothing/here"), 404, "not_found")


async def test_wrong_method_is_405_with_allow_header(client: httpx.AsyncClient) -> None:
    resp = await client.delete("/whoami")
    assert_error(resp, 405, "method_not_allowed")
    assert resp.headers["Allow"] == "GET"


async def test_unhandled_exception_is_500_without_its_text(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        resp = await client.get("/boom")
    error = assert_error(resp, 500, "internal_error")
    assert error["message"] == ERROR_CODES["internal_error"][1]
    for leak in ("hunter2", "RuntimeError", "Traceback", "boom"):
        assert leak not in resp.text
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[0] is RuntimeError]
    assert logged, "the traceback must be logged server-side"


async def test_unreachable_dependency_is_503_not_500(client: httpx.AsyncClient) -> None:
    resp = await client.get("/db-down")
    error = assert_error(resp, 503, "service_unavailable")
    assert resp.headers["Retry-After"] == "1"
    # Nothing of the driver's error (its address, its words) reaches the caller; the request
    # id is random hex, which may hold "5432" by chance (a CI run met it).
    shown = resp.text.replace(resp.headers["X-Request-Id"], "")
    assert "5432" not in shown and "Refused" not in shown
    assert error["message"] == ERROR_CODES["service_unavailable"][1]


async def test_postgres_out_of_connection_slots_is_503_not_500(client: httpx.AsyncClient) -> None:
    # Found by the scale bench: a server with every slot taken made list routes answer 500.
    resp = await client.get("/db-full")
    assert_error(resp, 503, "service_unavailable")
    assert "too many clients" not in resp.text


async def test_text_postgres_cannot_hold_is_422_not_500(client: httpx.AsyncClient) -> None:
    # Found by the contract fuzz: `GET /emails?recipient=%00` answered 500 (Postgres text and
    # jsonb refuse U+0000).
    for path in ("/nul", "/nul-json"):
        error = assert_error(await client.get(path), 422, "validation_error")
        assert error["details"] == [{"field": None, "message": NUL_REFUSED}]
        assert "UTF8" not in str(error) and "escape" not in str(error)


async def test_api_errors_keep_message_details_and_headers(client: httpx.AsyncClient) -> None:
    error = assert_error(await client.get("/missing"), 404, "not_found")
    assert error["message"] == "Contact c_1 does not exist."

    error = assert_error(await client.get("/legacy-404"), 404, "not_found")
    assert error["message"] == "Campaign not found"

    resp = await client.get("/throttled")
    assert_error(resp, 429, "rate_limited")
    assert resp.headers["Retry-After"] == "7"

    error = assert_error(await client.get("/duplicate"), 409, "conflict")
    assert error["details"] == [{"field": "email", "message": "taken"}]


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    resp = await client.get("/whoami", headers={"X-Request-Id": "edge-01.abc_Z"})
    assert resp.headers["X-Request-Id"] == "edge-01.abc_Z"
    assert resp.json() == {"request_id": "edge-01.abc_Z"}
    assert request_id_var.get() is None, "the request id must not outlive the request"


@pytest.mark.parametrize("sent", [None, "", "x" * 129, "a b", "a/b", "<script>"])
async def test_request_id_is_generated_when_absent_or_unsafe(
    client: httpx.AsyncClient, sent: str | None
) -> None:
    headers = {} if sent is None else {"X-Request-Id": sent}
    resp = await client.get("/whoami", headers=headers)
    generated = resp.headers["X-Request-Id"]
    assert GENERATED_ID.fullmatch(generated)
    assert resp.json() == {"request_id": generated}


async def test_success_envelope(client: httpx.AsyncClient) -> None:
    resp = await client.post(
        "/contacts", json={"email": "ada@example.com"}, headers={"X-Request-Id": "r1"}
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["success"] is True
    assert body["data"] == {"email": "ada@example.com", "tags": []}
    assert body["meta"]["request_id"] == "r1"
    assert "pagination" not in body["meta"]
    offset = datetime.fromisoformat(body["meta"]["timestamp"]).utcoffset()
    assert offset is not None and offset.total_seconds() == 0

    listed = (await client.get("/contacts")).json()
    assert listed["data"] == []
    assert listed["meta"]["pagination"] == {"limit": 10, "next_cursor": "c_2", "has_more": True}


def test_ok_outside_a_request() -> None:
    envelope = ok({"id": 1}, request_id="r9", pagination={"limit": 5, "offset": 10, "total": 42})
    assert envelope["data"] == {"id": 1}
    assert envelope["meta"]["request_id"] == "r9"
    assert envelope["meta"]["timestamp"].endswith("Z")
    assert envelope["meta"]["pagination"] == {"limit": 5, "offset": 10, "total": 42}


def test_envelopes_are_documented_in_openapi() -> None:
    schema = build_app().openapi()
    names = set(schema["components"]["schemas"])
    assert {"ErrorEnvelope", "ErrorBody", "ErrorDetail"} <= names
    assert any(name.startswith("SuccessEnvelope") for name in names)


def test_error_code_registry_rules() -> None:
    register_error_code("test_only_code", 418, "Only for this test.")
    register_error_code("test_only_code", 418, "Only for this test.")  # same twice is fine
    with pytest.raises(ValueError, match="already registered"):
        register_error_code("test_only_code", 400, "Only for this test.")
    with pytest.raises(ValueError, match="snake_case"):
        register_error_code("NotSnake", 400, "x")
    with pytest.raises(ValueError, match="status"):
        register_error_code("not_an_error", 200, "x")
    with pytest.raises(ValueError, match="not registered"):
        ApiError(code="never_registered_code")
    del ERROR_CODES["test_only_code"]


def test_codes_take_their_status_from_the_registry() -> None:
    error = ApiError("Campaign is running.", code="conflict")
    assert (error.status_code, error.code, error.message) == (
        409,
        "conflict",
        "Campaign is running.",
    )
    assert NotFound().message == ERROR_CODES["not_found"][1]


def test_every_error_code_is_documented() -> None:
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \| (\d{3}) \|", DOCS.read_text(), re.M))
    for code, (status, _) in ERROR_CODES.items():
        assert (code, str(status)) in documented, f"{code} ({status}) missing from docs/errors.md"
