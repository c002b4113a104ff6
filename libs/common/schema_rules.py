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
# What `check_tags` keeps: a string with something besides whitespace, and no U+0000.
TAG_ITEM: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$",
}


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


NUL_MESSAGE = "may not contain the NUL character (U+0000)"

# The description of every free-form JSON object of a request: what `storable_json` refuses
# and JSON Schema cannot state (it does not tell 1e24 from 1000000000000000000000000).
FREE_FORM_JSON = (
    "A free-form JSON object. Integers must fit in signed 64 bits (send larger numbers as "
    "strings); strings and keys may not contain the NUL character (U+0000)."
)


def refuse_nul(value: str, field: str) -> str:
    """`value`, unless it holds U+0000, which Postgres text cannot store (a ValueError naming
    `field` then, rather than a failed write)."""
    if "\x00" in value:
        raise ValueError(f"{field} {NUL_MESSAGE}")
    return value


def storable_json(value: Any) -> bytes:
    """`value` encoded as the platform stores (JSONB) and publishes (events) it. orjson takes
    integers within 64 bits only (JavaScript clients lose precision beyond 2**53 anyway), and
    JSONB refuses U+0000 in any string or key: either is a ValueError (a 422), not a 500 at
    the first write."""
    try:
        encoded = orjson.dumps(value)
    except TypeError as exc:
        raise ValueError(f"cannot be stored as JSON: {exc}") from None
    # orjson escapes every NUL as \u0000; the walk tells a real one from a literal backslash-u.
    if b"\\u0000" in encoded and _holds_nul(value):
        raise ValueError(f"cannot be stored as JSON: a string {NUL_MESSAGE}")
    return encoded


def json_storable(value: Any) -> Any:
    """A validator for free-form JSON objects (custom fields, variables, personalization):
    refuses what `storable_json` cannot store."""
    storable_json(value)
    return value


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in str(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    return False
