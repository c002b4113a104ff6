"""JSON-schema statements of the rules a model's validators enforce beyond single fields, so the
published spec says what the code refuses (issue 15 §5): "html or text", "contact_ids or tags,
not both", a tag that is not blank. Each helper returns a fragment for pydantic's
`json_schema_extra`; the validators stay the enforcement, these only describe them."""

from __future__ import annotations

from typing import Any

import orjson


def present(field: str, schema: dict[str, Any]) -> dict[str, Any]:
    """`field` is given and matches `schema` (which, without `nullable`, excludes null)."""
    return {"required": [field], "properties": {field: schema}}


def any_of(*branches: dict[str, Any]) -> dict[str, Any]:
    """At least one branch holds: `{"anyOf": [...]}` beside the model's own properties."""
    return {"anyOf": list(branches)}


def exactly_one(
    first: tuple[str, dict[str, Any]], second: tuple[str, dict[str, Any]]
) -> dict[str, Any]:
    """Exactly one of two fields is given (non-null); the given one matches its schema."""

    def given(field: str, schema: dict[str, Any]) -> dict[str, Any]:
        return present(field, {"type": schema["type"]})  # any non-null value of that type

    return {
        "oneOf": [
            {**present(*first), "not": given(*second)},
            {**present(*second), "not": given(*first)},
        ]
    }


NON_EMPTY_TEXT: dict[str, Any] = {"type": "string", "minLength": 1}
# What `check_tags` keeps: a string with something besides whitespace.
TAG_ITEM: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"\S"}


def not_nullable(schema: dict[str, Any]) -> None:
    """A field's `json_schema_extra`: drop the null branch of an optional field whose null the
    code refuses (`PUT` bodies where absent means "unchanged" but null is an error)."""
    variants = schema.pop("anyOf", None)
    if not variants:
        return
    rest = [v for v in variants if v.get("type") != "null"]
    if len(rest) == 1:
        schema.update(rest[0])
    else:
        schema["anyOf"] = rest


def json_storable(value: Any) -> Any:
    """A validator for free-form JSON objects (custom fields, variables, personalization):
    what the platform stores (JSONB) and publishes (events) must encode, and orjson takes
    integers within 64 bits only (JavaScript clients lose precision beyond 2**53 anyway).
    A larger integer is a 422, not a 500 at the first write."""
    try:
        orjson.dumps(value)
    except TypeError as exc:
        raise ValueError(f"cannot be stored as JSON: {exc}") from None
    return value
