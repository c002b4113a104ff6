"""The public OpenAPI 3.0 document of `/api/v1` as integrators see it through the gateway.

Built offline from each service's own FastAPI schema (collected in one subprocess per service)
and the gateway's route map (auth kind and scope per path and method): the services' paths are
merged, their internal principal header is replaced by the public security schemes, and the
gateway's behaviour is added to every operation (rate-limit headers, Idempotency-Key on POST,
the error responses it can answer with). Written to `docs/openapi.yaml`; the gateway serves
that file (see docs/versioning.md, "How the reference is produced").
"""

from __future__ import annotations

import copy
import re
from typing import Any

from scripts.docs.request_examples import REQUEST_EXAMPLES
from services.gateway.idempotency import KEY_PATTERN as IDEMPOTENCY_KEY_PATTERN
from services.gateway.routes import RouteRule, match_route

API_PREFIX = "/api/v1"
API_VERSION = "1.0.0"
OPENAPI_VERSION = "3.0.3"
METHODS = ("get", "put", "post", "patch", "delete")
# Codes between the gateway and the services (the signed principal): listed, never shown as
# examples, since an integrator can only meet them through a misconfigured deployment.
INTERNAL_CODE_PREFIX = "principal_"
# The relative server first: Swagger UI's "Try it out" then calls the host that served the
# page (a local stack, a staging host); paths keep their `/api/v1` prefix.
SERVERS = [
    {"url": "/", "description": "The host serving this document"},
    {"url": "https://api.penguinmails.com", "description": "Production (live and test keys)"},
    {"url": "https://sandbox-api.penguinmails.com", "description": "Sandbox"},
]
# FastAPI names a generic envelope `SuccessEnvelope_Contact_`; published as `ContactResponse`
# (and `SuccessEnvelope_list_Contact__` as `ContactListResponse`), names SDK generators keep.
# FastAPI's default 422 bodies: every 422 is documented as our ErrorEnvelope instead.
_FASTAPI_422 = ("HTTPValidationError", "ValidationError")
_ENVELOPE_NAME = re.compile(r"SuccessEnvelope_(list_)?([A-Za-z0-9]+)_+")

SCOPES = {
    "send_email": "Send transactional email (`POST /emails/send`, `/emails/send-bulk`).",
    "read_analytics": "Read emails, their events and analytics.",
    "manage_contacts": "Create, change, import and delete contacts.",
    "manage_campaigns": "Create, run and change campaigns.",
    "manage_templates": "Create, change and preview templates.",
    "manage_webhooks": "Manage webhook endpoints, their secrets and delivery log.",
}

DESCRIPTION = """\
The PenguinMails public REST API. Every path lives under `/api/v1` on the gateway.

* **Authentication**: `Authorization: Bearer pm_live_...` (or `pm_test_...` for sandbox data)
  with an API key, or `Authorization: Bearer <JWT>` with a dashboard access token.
  Each operation names the scope(s) it needs in `x-required-scope` (space-separated when it
  needs several) and in its description.
* **Envelopes**: success is `{"success": true, "data": ..., "meta": {...}}`, failure is
  `{"success": false, "error": {"code", "message", "details", "request_id"}}`. `code` is an
  open string: every code known today is listed in `x-error-codes` (and `x-known-codes` on the
  field) and in the guide `docs/errors.md`; handle an unknown one by its HTTP status.
* **Rate limits**: every authenticated response carries `X-RateLimit-*` and the IETF
  `RateLimit` / `RateLimit-Policy` fields; `429` carries `Retry-After`.
* **Idempotency**: send `Idempotency-Key` on POST; a retry with the same key and body
  returns the stored response for 24 h (header `Idempotent-Replayed: true`).
* **Lists**: `limit` with `offset` or `cursor` (opaque, sealed; a changed one is
  `400 invalid_cursor`), `sort_by` + `order`, and filters; `meta.pagination` returns
  `next_cursor` and `has_more`. An unknown query parameter is `422 validation_error` naming it.
  Guide: `docs/pagination.md`.

Inbound third-party hooks (`/hooks/esp/*`, `/hooks/stripe`), tracking links (`/t/*`) and
unsubscribe pages (`/unsubscribe/*`) are served by the gateway too but are not part of the
integrator API, so they are not described here.
"""

_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-Id": {
        "description": "The request's id (yours if you sent a valid one); quote it to support.",
        "schema": {"type": "string"},
    },
    "X-RateLimit-Limit": {
        "description": "Requests allowed in the current window of the tightest policy.",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Remaining": {
        "description": "Requests left in that window.",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Reset": {
        "description": "Unix time (seconds) when that window resets.",
        "schema": {"type": "integer"},
    },
    "RateLimit": {
        "description": 'IETF RateLimit field, e.g. `"minute";r=59;t=60`.',
        "schema": {"type": "string"},
    },
    "RateLimit-Policy": {
        "description": 'IETF RateLimit-Policy field, e.g. `"minute";q=60;w=60, "hour";q=...`.',
        "schema": {"type": "string"},
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored response of an earlier identical request, "
        "`false` on a first answer to a request with an `Idempotency-Key`.",
        "schema": {"type": "string", "enum": ["true", "false"]},
    },
}
_RATE_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit",
    "RateLimit-Policy",
)

_ERROR_DESCRIPTIONS = {
    400: "Malformed request (bad JSON, bad Idempotency-Key, ...).",
    401: "Missing, invalid, expired or revoked credentials.",
    403: "Authenticated, but the key lacks the scope or the user the role.",
    404: "No such resource in your account (another tenant's id is a 404 too).",
    409: "Conflicts with the current state, or Idempotency-Key reused with another body.",
    413: "Request body too large.",
    415: "Unsupported request media type.",
    422: "Validation failed; `error.details` names each field.",
    429: "Rate limit exceeded; wait `Retry-After` seconds.",
    500: "Unexpected error; retry with backoff and quote `request_id`.",
    502: "The owning service answered with an error.",
    503: "A service is temporarily unavailable; retry after `Retry-After`.",
    504: "The owning service did not answer in time.",
}


# --------------------------------------------------------------------- 3.1 → 3.0 schemas


def _downgrade(node: Any) -> Any:
    """FastAPI writes OpenAPI 3.1 (JSON Schema 2020-12); the published document is 3.0.3
    (seed 002 §4, and what Swagger UI, Postman and most generators read)."""
    if isinstance(node, list):
        return [_downgrade(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _downgrade(v) for k, v in node.items()}
    for key in ("anyOf", "oneOf"):
        variants = out.get(key)
        if isinstance(variants, list) and {"type": "null"} in variants:
            rest = [v for v in variants if v != {"type": "null"}]
            del out[key]
            if len(rest) == 1 and "$ref" not in rest[0]:
                out = {**rest[0], **out}
            elif len(rest) == 1:
                out["allOf"] = rest
            else:
                out[key] = rest
            out["nullable"] = True
    if isinstance(out.get("type"), list):
        types = [t for t in out["type"] if t != "null"]
        if len(types) < len(out["type"]):
            out["nullable"] = True
        out["type"] = types[0] if len(types) == 1 else types
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if "examples" in out and isinstance(out["examples"], list):
        examples = out.pop("examples")
        if examples:
            out.setdefault("example", examples[0])
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), int | float) and not isinstance(out.get(bound), bool):
            out[flag] = out.pop(bound)
            out[bound] = True
    if "contentMediaType" in out:
        out.pop("contentMediaType")
        out["format"] = "binary"
    if "$ref" in out and len(out) > 1:
        # 3.0 ignores siblings of $ref: keep them by wrapping the reference.
        out = {**{k: v for k, v in out.items() if k != "$ref"}, "allOf": [{"$ref": out["$ref"]}]}
    return out


def _refs(node: Any, rename: dict[str, str]) -> Any:
    if isinstance(node, list):
        return [_refs(v, rename) for v in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            name = value.rsplit("/", 1)[-1]
            out[key] = f"#/components/schemas/{rename.get(name, name)}"
        else:
            out[key] = _refs(value, rename)
    return out


# --------------------------------------------------------------------- shared components


def _shared_schemas(error_codes: dict[str, list[Any]]) -> dict[str, Any]:
    codes = sorted(error_codes)
    return {
        "ErrorDetail": {
            "type": "object",
            "required": ["message"],
            "properties": {
                "field": {"type": "string", "nullable": True, "example": "body.email"},
                "message": {"type": "string"},
            },
        },
        "ErrorBody": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {
                    # An open string, not an enum: a code added later must not break a
                    # generated client; the codes known today are listed beside it.
                    "type": "string",
                    "description": "Stable, machine-readable; branch on this, not on text. "
                    "New codes may be added at any time: treat an unknown code by its HTTP "
                    "status. The codes known to this version are in `x-known-codes`.",
                    "x-known-codes": codes,
                    "example": "validation_error",
                },
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/ErrorDetail"},
                },
                "request_id": {"type": "string", "nullable": True},
            },
        },
        "ErrorEnvelope": {
            "type": "object",
            "required": ["success", "error"],
            "properties": {
                "success": {"type": "boolean", "enum": [False]},
                "error": {"$ref": "#/components/schemas/ErrorBody"},
            },
        },
        "Pagination": {
            "type": "object",
            "properties": {
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
                "total": {"type": "integer"},
                "next_cursor": {"type": "string", "nullable": True},
                "has_more": {"type": "boolean"},
            },
        },
        "ResponseMeta": {
            "type": "object",
            "required": ["timestamp"],
            "properties": {
                "request_id": {"type": "string", "nullable": True},
                "timestamp": {"type": "string", "format": "date-time"},
                "pagination": {"$ref": "#/components/schemas/Pagination"},
            },
        },
    }


def _error_example(code: str, status: int, meaning: str) -> dict[str, Any]:
    return {
        "summary": code,
        "value": {
            "success": False,
            "error": {
                "code": code,
                "message": meaning,
                "details": (
                    [{"field": "body.email", "message": "value is not a valid email address"}]
                    if code == "validation_error"
                    else []
                ),
                "request_id": "req_01J9Z3X8Q4",
            },
        },
    }


def _components(error_codes: dict[str, list[Any]]) -> dict[str, Any]:
    responses = {}
    for status, text in _ERROR_DESCRIPTIONS.items():
        examples = {
            code: _error_example(code, s, meaning)
            for code, (s, meaning) in sorted(error_codes.items())
            if s == status and not code.startswith(INTERNAL_CODE_PREFIX)
        }
        headers = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}
        if status in (429, 503):
            headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
        content: dict[str, Any] = {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}
        if examples:
            content["examples"] = examples
        responses[f"Error{status}"] = {
            "description": text,
            "headers": headers,
            "content": {"application/json": content},
        }
    return {
        "securitySchemes": {
            "ApiKey": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "pm_live_… / pm_test_… API key",
                "description": "An API key created in the dashboard or with "
                "`POST /api/v1/platform/api-keys`; `pm_test_` keys see only sandbox data.",
            },
            "Jwt": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "A dashboard access token from `POST /api/v1/auth/login` "
                "(15 min; renew with `/api/v1/auth/refresh`).",
            },
        },
        "headers": _HEADERS,
        "parameters": {
            "IdempotencyKey": {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "1-255 printable characters, unique per logical operation "
                "(a UUID). Same key + same body within 24 h → the stored response; same key "
                "+ another body → 409 `idempotency_key_reused`.",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 255,
                    "pattern": IDEMPOTENCY_KEY_PATTERN,
                },
                "example": "7f0c1f5e-2b7d-4a51-9a0c-3c2f1c9b8e11",
            },
            "RequestId": {
                "name": "X-Request-Id",
                "in": "header",
                "required": False,
                # No maxLength/pattern in the schema: any value is accepted (never a 4xx), and
                # one that is not 1-128 of `A-Za-z0-9._-` is replaced, as described.
                "description": "Your correlation id, 1-128 characters from `A-Z a-z 0-9 . _ -`; "
                "echoed back. Absent or any other value: a new id is made and returned instead.",
                "schema": {"type": "string"},
                "example": "req-7f0c1f5e",
            },
        },
        "responses": responses,
    }


# --------------------------------------------------------------------- operations


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


def _rule(path: str) -> RouteRule:
    rule = match_route(_concrete(path))
    if rule is None:
        raise ValueError(f"{path}: no gateway route forwards this path")
    return rule


def _access(rule: RouteRule, method: str) -> tuple[list[dict[str, list[str]]], str, str | None]:
    """(security requirement, sentence for the description, required scope)."""
    if rule.auth == "none":
        return [], "No authentication.", None
    if rule.auth == "user":
        roles = ", ".join(sorted(rule.roles))
        return (
            [{"Jwt": []}],
            f"Dashboard users only (JWT), role: {roles}. API keys are refused with 403.",
            None,
        )
    scopes = sorted(rule.scopes_for(method.upper()))
    if not scopes:
        return (
            [{"ApiKey": []}, {"Jwt": []}],
            "Any API key or dashboard JWT; the service checks the scope this operation names.",
            None,
        )
    names = " and ".join(f"`{s}`" for s in scopes)
    sentence = f"Requires scope{'s' if len(scopes) > 1 else ''} {names} (API key or dashboard JWT)."
    method_roles = rule.roles_for(method.upper())
    if method_roles:
        sentence += (
            f" Role: {', '.join(sorted(method_roles))} (a dashboard user's, or for an API key the"
            " role of the user who created it)."
        )
    # OAuth style: several scopes are one space-separated string.
    return [{"ApiKey": []}, {"Jwt": []}], sentence, " ".join(scopes)


def _success(response: dict[str, Any], status: str) -> dict[str, Any]:
    # Every route declares `response_model=SuccessEnvelope[Model]`; one that does not keeps
    # its untyped body here, and tests/unit/docs/test_openapi_sync.py names it.
    return response


# One Server-Sent Event as clients (and Schemathesis) parse it: the `text/event-stream`
# schema describes each event, not the whole body.
SSE_EVENT = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "The event id: send it back as Last-Event-ID."},
        "event": {"type": "string", "description": "The event type, e.g. `email.opened`."},
        "data": {"type": "string", "description": "The webhook payload (2026-12-01), as JSON."},
        "retry": {"type": "integer", "description": "Reconnection delay in milliseconds."},
    },
}


def _describe_event_streams(op: dict[str, Any]) -> None:
    for response in op.get("responses", {}).values():
        media = response.get("content", {}).get("text/event-stream")
        if media is not None:
            media["schema"] = copy.deepcopy(SSE_EVENT)


def _operation(
    op: dict[str, Any], path: str, method: str, op_id: str, rule: RouteRule
) -> dict[str, Any]:
    security, access, scope = _access(rule, method)
    op = copy.deepcopy(op)
    op["operationId"] = op_id
    media = op.get("requestBody", {}).get("content", {}).get("application/json")
    if media is not None and op_id in REQUEST_EXAMPLES:
        media["example"] = copy.deepcopy(REQUEST_EXAMPLES[op_id])
    op["security"] = security
    if scope:
        op["x-required-scope"] = scope
    if rule.auth == "user":
        op["x-required-roles"] = sorted(rule.roles)
    elif rule.auth == "credentials" and rule.roles_for(method.upper()):
        op["x-required-roles"] = sorted(rule.roles_for(method.upper()) or ())
    description = op.get("description", "").strip()
    op["description"] = f"{description}\n\n**Access**: {access}".strip()
    if not op.get("tags"):
        op["tags"] = [rule.name]
    params = [
        p
        for p in op.get("parameters", [])
        if not (p.get("in") == "header" and p["name"].lower().startswith("x-pm-"))
    ]
    params.append({"$ref": "#/components/parameters/RequestId"})
    if method == "post" and rule.auth != "none":
        params.append({"$ref": "#/components/parameters/IdempotencyKey"})
    op["parameters"] = params

    _describe_event_streams(op)
    responses: dict[str, Any] = {}
    authed = rule.auth != "none"
    for status, response in op.get("responses", {}).items():
        if status.startswith("2"):
            response = _success(response, status)
            headers = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}
            if authed:
                for name in _RATE_HEADERS:
                    headers[name] = {"$ref": f"#/components/headers/{name}"}
            if method == "post" and authed:
                headers["Idempotent-Replayed"] = {
                    "$ref": "#/components/headers/Idempotent-Replayed"
                }
            response["headers"] = headers
            responses[status] = response
    errors = {400, 404, 422, 500, 502, 503, 504}
    if authed:
        errors |= {401, 403, 429}
    else:
        # login is rate-limited per address; wrong credentials or a stale refresh token are a
        # 401 there too, and signing up with a taken email a 409.
        errors |= {401, 429}
    if method == "post":
        errors |= {409}
    for status in op.get("responses", {}):
        if status[0] in "45" and int(status) in _ERROR_DESCRIPTIONS:
            errors.add(int(status))
    for status in sorted(errors):
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    op["responses"] = dict(sorted(responses.items()))
    return op


def _operation_ids(collected: dict[str, dict[str, Any]]) -> dict[tuple[str, str], str]:
    """The handler's name where unique across services, else `<service>_<name>`."""
    names: dict[tuple[str, str], tuple[str, str]] = {}
    for service, info in collected.items():
        for r in info["routes"]:
            names[(r["path"], r["method"])] = (service, r["name"])
    counts: dict[str, int] = {}
    for _service, name in names.values():
        counts[name] = counts.get(name, 0) + 1
    return {
        key: name if counts[name] == 1 else f"{service}_{name}"
        for key, (service, name) in names.items()
    }


def _data_properties(response: dict[str, Any], schemas: dict[str, Any]) -> set[str]:
    """The property names of a response envelope's `data` object (following $refs)."""

    def resolve(node: Any) -> dict[str, Any]:
        while isinstance(node, dict) and "$ref" in node:
            node = schemas.get(node["$ref"].rsplit("/", 1)[1], {})
        return node if isinstance(node, dict) else {}

    envelope = resolve(response.get("content", {}).get("application/json", {}).get("schema"))
    data = resolve(envelope.get("properties", {}).get("data"))
    return set(data.get("properties", {}))


def _add_links(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """OpenAPI links from each create (a POST on a collection answering 201) to the
    operations on the object it made (`/contacts` → `/contacts/{contact_id}` and below):
    clients and Schemathesis' stateful phase follow them (create → get/update/delete). A
    `{..._id}` parameter takes the created object's `data.id`, any other (`{email}`) the
    `data` field of its own name; a link is made only when the answer has that field."""
    for path, item in paths.items():
        created = item.get("post", {}).get("responses", {}).get("201")
        if created is None:
            continue
        fields = _data_properties(created, schemas)
        links: dict[str, Any] = {}
        for other, other_item in paths.items():
            found = re.fullmatch(re.escape(path) + r"/\{(\w+)\}(/[^{}]*)?", other)
            if found is None:
                continue
            param = found.group(1)
            field = "id" if param.endswith("_id") else param
            if field not in fields:
                continue
            for method in METHODS:
                if method in other_item:
                    op_id = other_item[method]["operationId"]
                    links[_pascal(op_id)] = {
                        "operationId": op_id,
                        "parameters": {param: f"$response.body#/data/{field}"},
                    }
        if links:
            created["links"] = dict(sorted(links.items()))


def _pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


# What the gateway refuses in every query parameter and JSON body (`nul_in_request`), stated
# on each request string that no pattern, enum or checked format already confines.
NO_NUL = "^[^\\u0000]*$"
_CHECKED_FORMATS = frozenset({"uuid", "date-time", "date", "email", "uri", "idn-hostname"})


def _no_nul(node: Any, schemas: dict[str, Any], seen: set[str]) -> None:
    """Give every plain string under `node` (following $refs into `schemas`) the NO_NUL
    pattern."""
    if isinstance(node, list):
        for item in node:
            _no_nul(item, schemas, seen)
        return
    if not isinstance(node, dict):
        return
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        name = ref.rsplit("/", 1)[1]
        if name not in seen and name in schemas:
            seen.add(name)
            _no_nul(schemas[name], schemas, seen)
        return
    confined = {"pattern", "enum", "const"} & node.keys() or node.get("format") in _CHECKED_FORMATS
    if node.get("type") == "string" and not confined:
        node["pattern"] = NO_NUL
    for key in ("properties", "patternProperties"):
        for child in (node.get(key) or {}).values():
            _no_nul(child, schemas, seen)
    for key in ("items", "additionalProperties", "not"):
        _no_nul(node.get(key), schemas, seen)
    for key in ("anyOf", "oneOf", "allOf"):
        _no_nul(node.get(key), schemas, seen)


def _tighten_request_schemas(paths: dict[str, Any], schemas: dict[str, Any]) -> None:
    """NO_NUL on request strings; header and cookie parameters not nullable."""
    seen: set[str] = set()
    for item in paths.values():
        for op in item.values():
            for param in op.get("parameters", []):
                if param.get("in") == "query":
                    _no_nul(param.get("schema"), schemas, seen)
                if param.get("in") in ("header", "cookie"):
                    # Absent or a string, never null: a tool sending `nullable` values
                    # sends the text "null" (the fuzz's `Last-Event-ID: null`).
                    (param.get("schema") or {}).pop("nullable", None)
            content = (op.get("requestBody") or {}).get("content", {})
            for media, body in content.items():
                if "json" in media:
                    _no_nul(body.get("schema"), schemas, seen)


def build_spec(collected: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The public document from `collect_all()`'s output."""
    upstream = {s: i for s, i in collected.items() if s != "gateway"}
    error_codes: dict[str, list[Any]] = {}
    for info in collected.values():
        error_codes.update(info["error_codes"])
    op_ids = _operation_ids(upstream)
    shared = _shared_schemas(error_codes)
    schemas: dict[str, Any] = dict(shared)
    paths: dict[str, Any] = {}
    tags: dict[str, str] = {}
    for service, info in sorted(upstream.items()):
        spec = _downgrade(info["openapi"])
        own = spec.get("components", {}).get("schemas", {})
        rename: dict[str, str] = {}
        for name in own:
            found = _ENVELOPE_NAME.fullmatch(name)
            if found:
                rename[name] = f"{found.group(2)}{'List' if found.group(1) else ''}Response"
        for name, schema in own.items():
            if name in shared:
                continue  # the envelope pieces are documented once, by the shared definitions
            public = rename.get(name, name)
            if public in schemas and schemas[public] != _refs(schema, rename):
                rename[name] = f"{service.capitalize()}{public}"
        for name, schema in own.items():
            if name in shared or name in _FASTAPI_422:
                continue
            public = rename.get(name, name)
            schemas[public] = _refs(schema, rename)
            if public != name and "title" in schema:
                # Generators name classes after the title (`SuccessEnvelope[Campaign]`).
                schemas[public]["title"] = public
        for path, item in sorted(spec.get("paths", {}).items()):
            if not path.startswith(API_PREFIX):
                continue
            rule = _rule(path)
            out: dict[str, Any] = {}
            for method in METHODS:
                if method in item:
                    op = _refs(item[method], rename)
                    out[method] = _operation(op, path, method, op_ids[(path, method)], rule)
                    for tag in out[method]["tags"]:
                        tags.setdefault(tag, service)
            paths[path] = out
    _add_links(paths, schemas)
    _tighten_request_schemas(paths, schemas)
    components = _components(error_codes)
    components["schemas"] = dict(sorted(schemas.items()))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "PenguinMails API",
            "version": API_VERSION,
            "description": DESCRIPTION,
            "contact": {"name": "PenguinMails developer support"},
        },
        "servers": SERVERS,
        "tags": [
            {"name": t, "description": f"Served by the {s} service."}
            for t, s in sorted(tags.items())
        ],
        "security": [{"ApiKey": []}, {"Jwt": []}],
        "paths": paths,
        "components": components,
        "x-scopes": SCOPES,
        "x-error-codes": {
            code: {"status": status, "meaning": meaning}
            for code, (status, meaning) in sorted(error_codes.items())
        },
    }
