"""Free-form JSON objects of request bodies must be storable: an integer beyond 64 bits is a
422 at validation, not a 500 at the first JSONB write or event (found by the contract fuzz:
`PUT /api/v1/contacts/{id}` with such a number in `custom_fields`)."""

from __future__ import annotations

from typing import Any

import orjson
import pydantic
import pytest

from libs.common.schema_rules import storable_json
from services.campaigns.schemas import ContactCreate, ContactUpdate, PreviewRequest, TemplateCreate
from services.delivery.schemas import BulkRecipient

HUGE = 1740931486531909268275200  # the fuzz's number


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (ContactUpdate, {"custom_fields": {"a": {"b": [HUGE]}}}),
        (ContactCreate, {"email": "a@example.com", "custom_fields": {"n": HUGE}}),
        (TemplateCreate, {"name": "n", "subject": "s", "text": "t", "variables": {"n": HUGE}}),
        (PreviewRequest, {"data": {"n": -HUGE}}),
        (BulkRecipient, {"email": "a@example.com", "personalization": {"n": HUGE}}),
    ],
)
def test_an_integer_beyond_64_bits_is_a_validation_error(
    model: type[pydantic.BaseModel], body: dict[str, Any]
) -> None:
    with pytest.raises(pydantic.ValidationError, match="cannot be stored as JSON"):
        model.model_validate(body)


def test_64_bit_integers_and_tiny_floats_are_kept() -> None:
    fields = {"max": 2**63 - 1, "min": -(2**63), "tiny": 2.2250738585e-313}
    assert ContactUpdate.model_validate({"custom_fields": fields}).custom_fields == fields


@pytest.mark.parametrize(
    ("model", "body"),
    [
        (ContactUpdate, {"custom_fields": {"a": ["x\x00"]}}),
        (ContactUpdate, {"custom_fields": {"k\x00": 1}}),
        (TemplateCreate, {"name": "n", "subject": "s", "text": "t", "variables": {"v": "\x00"}}),
        (BulkRecipient, {"email": "a@example.com", "personalization": {"n": {"m": "\x00"}}}),
    ],
)
def test_a_nul_character_is_a_validation_error(
    model: type[pydantic.BaseModel], body: dict[str, Any]
) -> None:
    # JSONB refuses U+0000 (SQLSTATE 22P05): a 422 naming the field, not a failed write.
    with pytest.raises(pydantic.ValidationError, match=r"NUL character \(U\+0000\)"):
        model.model_validate(body)


def test_a_literal_backslash_u0000_is_kept() -> None:
    fields = {"path": "C:\\u0000", "escaped": "\\\\u0000"}
    assert storable_json(fields) == orjson.dumps(fields)
    assert ContactUpdate.model_validate({"custom_fields": fields}).custom_fields == fields


@pytest.mark.parametrize(
    "body",
    [{"tags": ["a\x00"]}, {"first_name": "A\x00da"}, {"company": "\x00"}],
)
def test_a_nul_character_in_contact_text_is_a_validation_error(body: dict[str, Any]) -> None:
    with pytest.raises(pydantic.ValidationError, match="NUL character"):
        ContactCreate.model_validate({"email": "a@example.com", **body})
