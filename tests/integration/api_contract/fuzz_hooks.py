"""Schemathesis hooks of the contract fuzz run (loaded with SCHEMATHESIS_HOOKS).

A cursor is opaque and sealed: no generator can make a valid one, and a made-up one is
rightly `400 invalid_cursor` (tests/integration/api_contract/test_fuzz.py checks that for
every list). So schema-valid (positive) cases leave `cursor` out instead of being refused
for it; negative cases keep whatever they send.

A webhook endpoint's URL must resolve (to a public address, or one of the allowed networks):
that is the world's state, not the schema's, and this host resolves no name on the internet
(`example.com` included). Schema-valid cases creating or changing an endpoint get the
loopback receiver of the test (PM_FUZZ_WEBHOOK_URL) instead.

`ast.parse` is serialised: CPython 3.11's AST construction keeps its recursion depth in
interpreter-wide state, so two worker threads building ASTs at once (hypothesis describing
lambdas of the coverage phase's strategies) fail with "AST constructor recursion depth
mismatch" (python/cpython#106905)."""

from __future__ import annotations

import ast
import functools
import os
import threading
from typing import Any

import schemathesis
from schemathesis.generation import GenerationMode

OPAQUE_QUERY = ("cursor",)
WEBHOOK_URL = os.environ.get("PM_FUZZ_WEBHOOK_URL")

_ast_lock = threading.Lock()
_parse = ast.parse


@functools.wraps(_parse)
def _serialised_parse(*args: Any, **kwargs: Any) -> Any:
    with _ast_lock:
        return _parse(*args, **kwargs)


ast.parse = _serialised_parse


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    meta = getattr(case, "meta", None)
    mode = getattr(getattr(meta, "generation", None), "mode", None)
    if mode != GenerationMode.POSITIVE:
        return
    if case.query:
        for name in OPAQUE_QUERY:
            case.query.pop(name, None)
    path = case.operation.path
    if (
        WEBHOOK_URL
        and path.startswith("/api/v1/webhooks")
        and case.method.upper() in ("POST", "PATCH", "PUT")
        and isinstance(case.body, dict)
        and "url" in case.body
    ):
        case.body["url"] = WEBHOOK_URL
