"""Deterministic example values from JSON/OpenAPI schemas, for the code examples, the Postman
collection and the webhook event reference (same schema → same example, so generated files
only change when a schema does)."""

from __future__ import annotations

from typing import Any

_BY_NAME: dict[str, Any] = {
    "email": "jane@example.com",
    "to": "jane@example.com",
    "from_email": "sales@yourdomain.example",
    "from": "sales@yourdomain.example",
    "reply_to": "sales@yourdomain.example",
    "url": "https://example.com/webhooks/penguinmails",
    "name": "Example",
    "first_name": "Jane",
    "last_name": "Doe",
    "company": "Acme Inc.",
    "subject": "Hello {{first_name}}",
    "password": "correct horse battery staple",
    "tenant_id": "0192f5b4-8c1e-7a3d-9f00-5e2b7c1d4a10",
    "ip": "203.0.113.10",
    "user_agent": "Mozilla/5.0",
    "provider": "postmark",
    "plan_id": "pro",
}
_BY_FORMAT = {
    "date-time": "2026-01-15T09:30:00Z",
    "date": "2026-01-15",
    "email": "jane@example.com",
    "uri": "https://example.com/",
    "uuid": "0192f5b4-8c1e-7a3d-9f00-5e2b7c1d4a10",
    "binary": "<file>",
}


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        ref = schema["$ref"]
        node: Any = root
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def sample(schema: dict[str, Any], root: dict[str, Any], name: str = "", depth: int = 0) -> Any:
    """An example value of `schema` (refs resolved in `root`)."""
    schema = _resolve(schema, root)
    if depth > 6:
        return None
    for key in ("example", "default"):
        if key in schema and schema[key] is not None:
            return schema[key]
    if schema.get("examples"):
        examples = schema["examples"]
        return examples[0] if isinstance(examples, list) else next(iter(examples.values()))
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("allOf", "anyOf", "oneOf"):
        variants = [v for v in schema.get(key, []) if _resolve(v, root).get("type") != "null"]
        if variants:
            if key == "allOf" and len(variants) > 1:
                merged: dict[str, Any] = {}
                for v in variants:
                    value = sample(v, root, name, depth + 1)
                    if isinstance(value, dict):
                        merged.update(value)
                return merged
            return sample(variants[0], root, name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        # The required fields; the first few when none is required (examples stay short).
        chosen = [k for k in props if k in required] or list(props)[:3]
        return {k: sample(props[k], root, k, depth + 1) for k in chosen}
    if kind == "array":
        item = sample(schema.get("items", {}), root, name.rstrip("s"), depth + 1)
        return [] if item is None else [item]
    if kind == "string":
        if schema.get("format") in _BY_FORMAT:
            return _BY_FORMAT[schema["format"]]
        if name in _BY_NAME:
            return _BY_NAME[name]
        if name.endswith("_id") or name == "id":
            return f"{name.removesuffix('_id') or 'obj'}_0001"
        length = max(int(schema.get("minLength", 0)), 1)
        text = "example"
        return (text * (length // len(text) + 1))[: max(length, len(text))]
    if kind == "integer":
        return int(schema.get("minimum", 1) or 1)
    if kind == "number":
        return float(schema.get("minimum", 1) or 1)
    if kind == "boolean":
        return True
    return None
