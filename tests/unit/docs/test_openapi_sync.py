"""The committed reference matches the code: the generated files are current, every route of
every service under /api/v1 is documented and every documented operation and status exists,
every error code is listed, and each operation carries the gateway's auth and scope."""

from __future__ import annotations

import re
from typing import Any

from libs.common.http import ERROR_CODES, ApiError
from scripts.docs.collect import REPO
from scripts.docs.openapi import METHODS
from scripts.docs.render import render_all
from services.gateway.routes import match_route


def _documented(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): item[method]
        for path, item in spec["paths"].items()
        for method in METHODS
        if method in item
    }


def _routes(collected: dict[str, dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (r["path"], r["method"]): {**r, "service": service}
        for service, info in collected.items()
        if service != "gateway"
        for r in info["routes"]
        if r["path"].startswith("/api/v1")
    }


def test_generated_files_are_current(collected: dict[str, dict[str, Any]]) -> None:
    stale = [
        rel
        for rel, text in render_all(collected).items()
        if not (REPO / rel).exists() or (REPO / rel).read_text() != text
    ]
    assert not stale, f"stale, run `uv run python -m scripts.docs`: {stale}"


def test_no_leftover_example_files(collected: dict[str, dict[str, Any]]) -> None:
    generated = set(render_all(collected))
    on_disk = {str(p.relative_to(REPO)) for p in (REPO / "docs" / "examples").glob("*.md")}
    assert on_disk <= generated


def test_every_route_is_documented_and_every_documented_route_exists(
    collected: dict[str, dict[str, Any]], committed_spec: dict[str, Any]
) -> None:
    routes = _routes(collected)
    documented = _documented(committed_spec)
    assert len(routes) > 40  # the collector really saw the services' routes
    assert sorted(set(routes) - set(documented)) == [], "routes without documentation"
    assert sorted(set(documented) - set(routes)) == [], "documented routes that do not exist"


def test_documented_status_codes_exist(
    collected: dict[str, dict[str, Any]], committed_spec: dict[str, Any]
) -> None:
    routes = _routes(collected)
    components = committed_spec["components"]["responses"]
    registered_statuses = {v["status"] for v in committed_spec["x-error-codes"].values()}
    for key, op in _documented(committed_spec).items():
        statuses = set(op["responses"])
        success = {s for s in statuses if s.startswith("2")}
        # The one success status the handler answers with, and no other.
        assert success == {str(routes[key]["status_code"])}, key
        for status in statuses - success:
            ref = op["responses"][status]["$ref"].rsplit("/", 1)[-1]
            assert ref == f"Error{status}" and ref in components, (key, status)
            # Every documented error status is one a registered error code answers with.
            assert int(status) in registered_statuses, (key, status)


def test_every_error_code_is_in_the_spec(
    collected: dict[str, dict[str, Any]], committed_spec: dict[str, Any]
) -> None:
    registered: dict[str, list[Any]] = {}
    for info in collected.values():
        registered.update(info["error_codes"])
    # Services add their own codes (the shared ones are always there, whatever this test
    # process happened to import before).
    assert set(ERROR_CODES) <= set(registered)
    assert {"auth_throttled", "invalid_cursor", "template_unsafe"} <= set(registered)
    listed = committed_spec["x-error-codes"]
    assert {c: [v["status"], v["meaning"]] for c, v in listed.items()} == registered
    code = committed_spec["components"]["schemas"]["ErrorBody"]["properties"]["code"]
    # An open string (a new code breaks no client), the known codes listed beside it.
    assert code["type"] == "string" and "enum" not in code
    assert sorted(code["x-known-codes"]) == sorted(registered)
    errors_md = (REPO / "docs" / "errors.md").read_text()
    missing = [c for c in registered if not re.search(rf"`{re.escape(c)}`", errors_md)]
    assert not missing, f"codes without a row in docs/errors.md: {missing}"


def test_security_and_scope_follow_the_gateway_route_map(committed_spec: dict[str, Any]) -> None:
    for (path, method), op in _documented(committed_spec).items():
        rule = match_route(re.sub(r"\{[^}]+\}", "x", path))
        assert rule is not None, f"the gateway forwards no rule for {path}"
        if rule.auth == "none":
            assert op["security"] == []
        elif rule.auth == "user":
            assert op["security"] == [{"Jwt": []}]
            assert op["x-required-roles"] == sorted(rule.roles)
        else:
            scopes = sorted(rule.scopes_for(method.upper()))
            if not scopes:  # any key; the service checks per type (e.g. /events/*)
                assert "x-required-scope" not in op and "Any API key" in op["description"]
            else:
                assert op["x-required-scope"] == " ".join(scopes)
                assert all(f"`{scope}`" in op["description"] for scope in scopes)
            roles = rule.roles_for(method.upper())
            assert op.get("x-required-roles") == (sorted(roles) if roles else None)
            assert op["security"] == [{"ApiKey": []}, {"Jwt": []}]
            ok = next(v for s, v in op["responses"].items() if s.startswith("2"))
            assert "X-RateLimit-Remaining" in ok["headers"]
            assert "429" in op["responses"]
        params = [p.get("$ref", "") for p in op["parameters"]]
        if method == "post" and rule.auth != "none":
            assert "#/components/parameters/IdempotencyKey" in params
        names = [p.get("name", "") for p in op["parameters"]]
        assert not any(n.lower().startswith("x-pm-") for n in names), "internal header leaked"


def test_document_is_openapi_3_0(committed_spec: dict[str, Any]) -> None:
    import schemathesis
    from schemathesis.core.result import Err, Ok

    assert committed_spec["openapi"].startswith("3.0.")
    text = (REPO / "docs" / "openapi.yaml").read_text()
    for construct in ("type: 'null'", "type: null", "\n      const:", "PMPrincipal"):
        assert construct not in text
    schema = schemathesis.openapi.from_dict(committed_spec)
    results = list(schema.get_all_operations())
    failed = [r.err() for r in results if isinstance(r, Err)]
    assert not failed, failed
    operations = [r.ok() for r in results if isinstance(r, Ok)]
    assert len(operations) == len(_documented(committed_spec))
    assert {"ApiKey", "Jwt"} == set(committed_spec["components"]["securitySchemes"])


def test_every_success_response_is_a_named_typed_schema(committed_spec: dict[str, Any]) -> None:
    """No `data: any`: each 2xx JSON body is a named envelope whose `data` has a type. A route
    without `response_model=SuccessEnvelope[Model]` fails here."""
    schemas = committed_spec["components"]["schemas"]
    untyped = []
    for (path, method), op in _documented(committed_spec).items():
        for status, response in op["responses"].items():
            content = response.get("content", {}).get("application/json")
            if not status.startswith("2") or content is None:
                continue
            ref = content["schema"].get("$ref", "")
            name = ref.rsplit("/", 1)[-1]
            data = schemas.get(name, {}).get("properties", {}).get("data", {})
            typed = "$ref" in data or "allOf" in data or data.get("type") == "array"
            if not name.endswith("Response") or not typed:
                untyped.append(f"{method.upper()} {path} {status}: {name or content['schema']}")
    assert not untyped, untyped
    assert "SuccessEnvelope" not in schemas


def test_lists_share_one_page_shape(committed_spec: dict[str, Any]) -> None:
    """Every list takes limit, offset, cursor, sort_by and order."""
    lists = [
        "/api/v1/contacts",
        "/api/v1/templates",
        "/api/v1/campaigns",
        "/api/v1/emails",
        "/api/v1/emails/suppressions",
        "/api/v1/webhooks",
        "/api/v1/webhooks/{endpoint_id}/deliveries",
        "/api/v1/platform/api-keys",
        "/api/v1/billing/payments",
    ]
    for path in lists:
        op = committed_spec["paths"][path]["get"]
        names = {p.get("name") for p in op["parameters"]}
        assert {"limit", "offset", "cursor", "sort_by", "order"} <= names, path
        sort_by = next(p for p in op["parameters"] if p.get("name") == "sort_by")
        assert sort_by["schema"].get("enum"), path


def test_spec_states_the_constraints_the_code_enforces(committed_spec: dict[str, Any]) -> None:
    """Schemathesis found requests valid by the spec but refused (issue 15 §5): the spec now
    says what the code checks, and checks nothing the code lets through."""
    from services.campaigns.service import parse_period

    op = committed_spec["paths"]["/api/v1/analytics/emails"]["get"]
    period = next(p for p in op["parameters"] if p.get("name") == "period")
    pattern = re.compile(period["schema"]["pattern"])
    for value in [f"{d}d" for d in range(0, 120)] + ["07d", "7", "d", "7dd", "1y"]:
        try:
            parse_period(value)
            accepted = True
        except ApiError:
            accepted = False
        assert accepted == bool(pattern.search(value)), value
    schemas = committed_spec["components"]["schemas"]
    for model in ("ContactCreate", "ContactUpdate", "SendEmailRequest", "SignupRequest"):
        email = schemas[model]["properties"].get("email") or schemas[model]["properties"]["to"]
        assert email.get("format") == "email", model
    # Any X-Request-Id is accepted (an unusable one is replaced), so the spec limits none.
    request_id = committed_spec["components"]["parameters"]["RequestId"]["schema"]
    assert request_id == {"type": "string"}


def test_every_link_names_a_field_the_create_answers(committed_spec: dict[str, Any]) -> None:
    """A link's `$response.body#/data/<field>` must exist in the create's answer: the
    stateful fuzz followed `DeleteSuppression` with `data.id`, which a suppression lacks."""
    schemas = committed_spec["components"]["schemas"]

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = schemas[node["$ref"].rsplit("/", 1)[1]]
        return node

    links = 0
    for path, item in committed_spec["paths"].items():
        created = item.get("post", {}).get("responses", {}).get("201", {})
        if "links" not in created:
            continue
        envelope = resolve(created["content"]["application/json"]["schema"])
        fields = set(resolve(envelope["properties"]["data"]).get("properties", {}))
        for name, link in created["links"].items():
            for expression in link["parameters"].values():
                found = re.fullmatch(r"\$response\.body#/data/(\w+)", expression)
                assert found and found.group(1) in fields, (path, name, expression)
                links += 1
    assert links >= 30, links
