"""The fast email path accepts, refuses and normalises exactly as email-validator (strict) does."""

from __future__ import annotations

import re

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, EmailStr, TypeAdapter, ValidationError

from libs.common.emails import Email, InvalidEmail, normalize_email

EMAIL = TypeAdapter(Email)
EMAIL_STR = TypeAdapter(EmailStr)


def reference(value: str) -> str | None:
    try:
        return str(validate_email(value, check_deliverability=False, strict=True).normalized)
    except EmailNotValidError:
        return None


def ours(value: str) -> str | None:
    try:
        return normalize_email(value)
    except InvalidEmail:
        return None


CASES = [
    "a@example.com",
    "A.B@Example.COM",
    "first.last+tag@sub.example.co.uk",
    "!#$%&'*+/=?^_`{|}~-@example.com",
    "a..b@example.com",
    ".a@example.com",
    "a.@example.com",
    "a@localhost",
    "a@x.c",
    "a@1.2.3.4",
    "a@[127.0.0.1]",
    "a@-x.com",
    "a@x-.com",
    "a@x_y.com",
    "a@example.test",
    "a@host.local",
    "a@example.invalid",
    "a@example.com.",
    "a@example..com",
    "a@example.123",
    '"a b"@example.com',
    "j@xn--bcher-kva.example",
    "j@bücher.example",
    "ü@example.com",
    " a@example.com",
    "a@example.com ",
    "John <john@example.com>",
    "a@b@example.com",
    "@example.com",
    "a@",
    "",
    "x" * 64 + "@example.com",
    "x" * 65 + "@example.com",
    "a@" + "b" * 63 + ".com",
    "a@" + "b" * 64 + ".com",
    "a@" + ".".join(["c" * 60] * 4) + ".com",
    "a@EXAMPLE.com",
    "a\n@example.com",
]


@pytest.mark.parametrize("value", CASES)
def test_fast_path_agrees_with_email_validator(value: str) -> None:
    assert ours(value) == reference(value)


ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-."


@settings(max_examples=2000, deadline=None)
@given(
    local=st.text(alphabet=ATEXT + "ü @\"", min_size=0, max_size=70),
    domain=st.sampled_from(
        ["example.com", "EXAMPLE.org", "x.test", "localhost", "a-b.io", "xn--bcher-kva.example",
         "1.2.3.4", "ex_ample.com", "example.c0m", "e.x.a.m.p.l.e", "example.com."]
    ),
)  # fmt: skip
def test_generated_addresses_agree(local: str, domain: str) -> None:
    value = f"{local}@{domain}"
    assert ours(value) == reference(value)


@pytest.mark.parametrize("value", CASES)
def test_pydantic_type_is_a_drop_in_for_email_str(value: str) -> None:
    def run(adapter: TypeAdapter[str]) -> str:
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            return "error: " + exc.errors()[0]["msg"]

    if len(value.rpartition("@")[0]) > 64:  # the one rule EmailStr leaves out
        assert run(EMAIL).startswith("error: value is not a valid email address: ")
        assert "too long before the @-sign" in run(EMAIL)
    else:
        assert run(EMAIL) == run(EMAIL_STR)


def test_json_schema_is_email_strs_and_states_the_refused_special_use_domains() -> None:
    class A(BaseModel):
        e: Email

    class B(BaseModel):
        e: EmailStr

    schema = A.model_json_schema()["properties"]["e"]
    refused = schema.pop("not")
    assert schema == B.model_json_schema()["properties"]["e"]
    assert schema == {"format": "email", "title": "E", "type": "string"}
    # The `not` pattern says what the rule refuses beyond `format: email`, and only that.
    pattern = re.compile(refused["pattern"])
    for address in ("a@x.test", "a@b.LOCAL", "a@localhost", "a@x.onion", "a@in-addr.arpa"):
        assert pattern.search(address), address
        with pytest.raises(InvalidEmail):
            normalize_email(address)
    for address in ("a@test.io", "a@x.testing", "a@local.example.com", "a@example.com"):
        assert not pattern.search(address), address
        normalize_email(address)


def test_invalid_email_names_the_reason() -> None:
    with pytest.raises(InvalidEmail, match="period"):
        normalize_email("a..b@example.com")
