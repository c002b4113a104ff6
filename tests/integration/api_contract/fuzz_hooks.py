"""Schemathesis hooks of the contract fuzz run (loaded with SCHEMATHESIS_HOOKS).

A cursor is opaque and sealed: no generator can make a valid one, and a made-up one is
rightly `400 invalid_cursor` (tests/integration/api_contract/test_fuzz.py checks that for
every list). So schema-valid (positive) cases leave `cursor` out instead of being refused
for it; negative cases keep whatever they send.

A webhook endpoint's URL must resolve (to a public address, or one of the allowed networks):
that is the world's state, not the schema's, and this host resolves no name on the internet
(`example.com` included). Schema-valid cases creating or changing an endpoint get the
loopback receiver of the test (PM_FUZZ_WEBHOOK_URL) instead.

Free-form JSON objects (`custom_fields`, `variables`, ...) take integers within signed 64
bits only and no U+0000 in strings or keys, which their description states and JSON Schema
cannot (it does not tell `1e24` from `1000000000000000000000000`, and a `pattern` cannot reach
every nested string): schema-valid cases get larger integers in them clamped to that range and
NULs removed.

A password is at most 72 bytes in UTF-8 (bcrypt's limit; the description says so, and JSON
Schema's `maxLength` counts characters): schema-valid passwords are cut to 72 bytes.

Event types are data, not schema (the catalog, `GET /api/v1/events/types`, grows without a new
spec, as error codes do): `type` of `POST /api/v1/events/trigger` and the `events` patterns of
a webhook endpoint (and `event_type` of its test) are strings that must name (or, as a glob,
match) a type of the catalog.
Schema-valid cases get catalog types there.

A `Cookie` header cannot carry `;`, `,`, spaces, quotes or backslashes (RFC 6265
cookie-octets): a negative case's cookie value that holds one reaches the server cut at the
`;` or unquoted, i.e. as another value, often a valid one. Such characters are replaced with
`x`, which keeps the value's length and so its violation (the cookies' only constraint is a
`maxLength`).

A header value is visible Latin-1 text, spaces and tabs on the wire (RFC 9110 field-value):
a generated value with other characters (an emoji in `X-Request-Id`, whose schema admits any
string) cannot be sent at all, and the HTTP client fails the run; a control character makes
the server refuse the request before any route (`400 Invalid HTTP request`, plain text).
Such characters are replaced with NBSP (`\xa0`), which a header can carry and no header
pattern of the spec admits, so a negative case stays negative.

An `Idempotency-Key` names one operation: the same key with the same body is answered with
the first answer (Stripe semantics), so two scenarios of the stateful phase that happen to
draw the same key and body (hypothesis draws small values often: `0`, `a`) get the first
create's answer, an object a step of the first scenario may have deleted since (ST302,
"created resource not found"). Schema-valid cases that carry a key get a fresh one, as a
client makes one per operation; replays are tested in tests/integration/gateway.

`ast.parse` is serialised: CPython 3.11's AST construction keeps its recursion depth in
interpreter-wide state, so two worker threads building ASTs at once (hypothesis describing
lambdas of the coverage phase's strategies) fail with "AST constructor recursion depth
mismatch" (python/cpython#106905)."""

from __future__ import annotations

import ast
import functools
import os
import re
import threading
import uuid
from typing import Any

import schemathesis
from schemathesis.generation import GenerationMode

from libs.common.events import EVENT_TYPES, read_scope_of

OPAQUE_QUERY = ("cursor",)
CATALOG = tuple(t for t in EVENT_TYPES if read_scope_of(t) is not None)
WEBHOOK_URL = os.environ.get("PM_FUZZ_WEBHOOK_URL")

_ast_lock = threading.Lock()
_parse = ast.parse


@functools.wraps(_parse)
def _serialised_parse(*args: Any, **kwargs: Any) -> Any:
    with _ast_lock:
        return _parse(*args, **kwargs)


ast.parse = _serialised_parse


INT64 = (-(2**63), 2**63 - 1)
# RFC 9110 field-value characters: HTAB, SP, VCHAR, obs-text.
_NOT_FIELD_VALUE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
# RFC 6265 cookie-octet: %x21 / %x23-2B / %x2D-3A / %x3C-5B / %x5D-7E
_NOT_COOKIE_OCTET = re.compile(r"[^\x21\x23-\x2B\x2D-\x3A\x3C-\x5B\x5D-\x7E]")


# The request fields that are free-form JSON objects (FREE_FORM_JSON in their description).
FREE_FORM_FIELDS = frozenset({"custom_fields", "variables", "data", "personalization"})


def _storable(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return min(max(value, INT64[0]), INT64[1])
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def _free_form_storable(body: Any) -> Any:
    """`body` with its free-form objects made storable (other fields untouched: an
    out-of-range integer there is the spec's business)."""
    if isinstance(body, list):
        return [_free_form_storable(v) for v in body]
    if isinstance(body, dict):
        return {
            k: _storable(v) if k in FREE_FORM_FIELDS else _free_form_storable(v)
            for k, v in body.items()
        }
    return body


def _catalog_type(drawn: Any) -> str:
    """A catalog type chosen by the drawn value (so hypothesis still varies it)."""
    return CATALOG[len(str(drawn)) % len(CATALOG)]


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    if case.headers:
        for name, value in case.headers.items():
            if isinstance(value, str) and _NOT_FIELD_VALUE.search(value):
                case.headers[name] = _NOT_FIELD_VALUE.sub("\xa0", value)
    meta = getattr(case, "meta", None)
    mode = getattr(getattr(meta, "generation", None), "mode", None)
    if mode != GenerationMode.POSITIVE:
        if case.cookies:
            for name, value in case.cookies.items():
                if isinstance(value, str):
                    case.cookies[name] = _NOT_COOKIE_OCTET.sub("x", value)
        return
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    if isinstance(case.body, dict | list):
        case.body = _free_form_storable(case.body)
    if case.query:
        for name in OPAQUE_QUERY:
            case.query.pop(name, None)
    path = case.operation.path
    writes = case.method.upper() in ("POST", "PATCH", "PUT") and isinstance(case.body, dict)
    if writes and path.startswith("/api/v1/webhooks"):
        if WEBHOOK_URL and "url" in case.body:
            case.body["url"] = WEBHOOK_URL
        if isinstance(case.body.get("events"), list):
            case.body["events"] = [_catalog_type(e) for e in case.body["events"]]
    if writes and path == "/api/v1/events/trigger" and "type" in case.body:
        case.body["type"] = _catalog_type(case.body["type"])
    if writes and path == "/api/v1/webhooks/{endpoint_id}/test" and "event_type" in case.body:
        case.body["event_type"] = _catalog_type(case.body["event_type"])
    if writes and path.startswith("/api/v1/auth/") and isinstance(case.body.get("password"), str):
        cut = case.body["password"].encode("utf-8", "surrogatepass")[:72]
        case.body["password"] = cut.decode(errors="ignore")
