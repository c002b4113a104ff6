"""The spec's Idempotency-Key pattern says exactly what the gateway accepts (found by the full
contract fuzz: a schema-valid key with a non-printable character got 400)."""

from __future__ import annotations

import re

import pytest

from libs.common.http import ApiError
from services.gateway.idempotency import KEY_PATTERN, validate_key


def _accepted(value: str) -> bool:
    try:
        validate_key(value)
    except ApiError:
        return False
    return True


def test_pattern_and_check_agree_on_every_latin1_character() -> None:
    pattern = re.compile(KEY_PATTERN)
    for code in range(256):
        c = chr(code)
        # A header value arrives without surrounding spaces: put the character inside.
        value = f"a{c}b"
        assert bool(pattern.fullmatch(value)) == _accepted(value), repr(c)
        if c != " ":
            assert bool(pattern.fullmatch(c)) == _accepted(c), repr(c)


@pytest.mark.parametrize("value", ["7f0c1f5e-2b7d-4a51-9a0c-3c2f1c9b8e11", "a b", "x" * 255, "é"])
def test_usual_keys_match(value: str) -> None:
    assert re.fullmatch(KEY_PATTERN, value) and _accepted(value)
