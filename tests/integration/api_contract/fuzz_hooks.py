"""Schemathesis hooks of the contract fuzz run (loaded with SCHEMATHESIS_HOOKS).

A cursor is opaque and sealed: no generator can make a valid one, and a made-up one is
rightly `400 invalid_cursor` (tests/integration/api_contract/test_fuzz.py checks that for
every list). So schema-valid (positive) cases leave `cursor` out instead of being refused
for it; negative cases keep whatever they send."""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis.generation import GenerationMode

OPAQUE_QUERY = ("cursor",)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: Any) -> None:
    meta = getattr(case, "meta", None)
    mode = getattr(getattr(meta, "generation", None), "mode", None)
    if mode == GenerationMode.POSITIVE and case.query:
        for name in OPAQUE_QUERY:
            case.query.pop(name, None)
