"""The derived documents say true things: code examples exist for every operation and parse
in their language, the Postman collection covers every operation, the AsyncAPI document has
every event type and every consumer queue, and every webhook event example is valid for the
event catalog."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from libs.common.events import EVENT_TYPES, PUBLIC_EVENT_TYPES
from scripts.docs.collect import REPO
from scripts.docs.render import RETRY_SCHEDULE_TEXT, operations

EXAMPLES = REPO / "docs" / "examples"


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)\n```", text, flags=re.S)


def test_every_operation_has_examples_in_four_languages(committed_spec: dict[str, Any]) -> None:
    """cURL, Node.js, Python, PHP for every operation; the SDK calls beside them where the
    SDKs have a method (not for a stream or a file upload)."""
    text = "\n".join(p.read_text() for p in EXAMPLES.glob("*.md"))
    for _path, method, op in operations(committed_spec):
        section = text.split(f"operationId `{op['operationId']}`", 1)
        assert len(section) == 2, op["operationId"]
        following = section[1].split("\n## ", 1)[0]
        for lang in ("bash", "javascript", "python", "php"):
            assert f"```{lang}\n" in following, (op["operationId"], lang)
        assert f"{method.upper()} " in following and (
            "--fail-with-body -X" in following or "curl -N" in following
        )


def test_python_examples_parse() -> None:
    blocks = [b for p in EXAMPLES.glob("*.md") for b in _blocks(p.read_text(), "python")]
    assert len(blocks) > 40
    for block in blocks:
        ast.parse(block)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_examples_parse(tmp_path: Path) -> None:
    blocks = [b for p in EXAMPLES.glob("*.md") for b in _blocks(p.read_text(), "javascript")]
    script = tmp_path / "examples.mjs"
    # Each example in its own block scope, as a module (top-level await), checked not run.
    script.write_text("\n".join(f"{{\n{b}\n}}" for b in blocks))
    done = subprocess.run(["node", "--check", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("php") is None, reason="php is not installed")
def test_php_examples_parse(tmp_path: Path) -> None:
    for i, block in enumerate(
        b for p in EXAMPLES.glob("*.md") for b in _blocks(p.read_text(), "php")
    ):
        script = tmp_path / f"example{i}.php"
        script.write_text(block)
        done = subprocess.run(["php", "-l", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout


def test_postman_collection_covers_every_operation(committed_spec: dict[str, Any]) -> None:
    collection = json.loads((REPO / "docs" / "postman_collection.json").read_text())
    assert collection["info"]["schema"].endswith("/v2.1.0/collection.json")
    requests = [item["request"] for folder in collection["item"] for item in folder["item"]]
    seen = {(r["method"], "/" + "/".join(r["url"]["path"])) for r in requests}
    # A stream never ends, so a collection run cannot hold one: the stream is left out.
    expected = {
        (m.upper(), re.sub(r"\{([^}]+)\}", r":\1", p))
        for p, m, op in operations(committed_spec)
        if "text/event-stream" not in str(op["responses"].get("200", {}).get("content", {}))
    }
    assert seen == expected
    for r in requests:
        assert r["url"]["raw"].startswith("{{baseUrl}}/api/v1/")
        if r.get("body", {}).get("mode") == "raw":
            json.loads(r["body"]["raw"].replace("{{signupEmail}}", "x@example.com"))
    # Each request asserts its status; ids travel in collection variables, deletes come last.
    items = [item for folder in collection["item"] for item in folder["item"]]
    for item in items:
        tests = next(e for e in item["event"] if e["listen"] == "test")["script"]["exec"]
        assert any("to.be.within(200, 299)" in line for line in tests), item["name"]
    methods = [item["request"]["method"] for item in items]
    assert methods.index("DELETE") == len(methods) - methods.count("DELETE")
    variables = {v["key"] for v in collection["variable"]}
    assert {"apiKey", "baseUrl", "contact_id", "campaign_id", "endpoint_id"} <= variables
    assert next(v for v in collection["variable"] if v["key"] == "apiKey")["value"].startswith(
        "pm_test_"
    )


def test_every_json_request_body_has_an_example_the_schema_accepts(
    committed_spec: dict[str, Any],
) -> None:
    """The examples every code sample and the Postman collection send (request_examples.py)
    are published in the spec, and each is valid for its schema (Schemathesis sends them in
    its examples phase)."""
    import jsonschema

    for _path, _method, op in operations(committed_spec):
        media = op.get("requestBody", {}).get("content", {}).get("application/json")
        if media is None:
            continue
        assert "example" in media, op["operationId"]
        schema = {
            "allOf": [_nullable(media["schema"])],
            "components": {"schemas": _nullable(committed_spec["components"]["schemas"])},
        }
        validator = jsonschema.Draft4Validator(schema)
        errors = [e.message for e in validator.iter_errors(media["example"])]
        assert not errors, (op["operationId"], errors)


def _nullable(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` in JSON Schema terms (`type` or null)."""
    if isinstance(node, list):
        return [_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _nullable(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    elif node.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def test_asyncapi_has_every_event_and_queue(collected: dict[str, dict[str, Any]]) -> None:
    doc = yaml.safe_load((REPO / "docs" / "asyncapi.yaml").read_text())
    assert doc["asyncapi"].startswith("2.")
    assert set(doc["channels"]) == set(EVENT_TYPES)
    queues = {q["name"]: q["bindings"] for q in doc["x-queues"]}
    expected = {
        q["queue"]: q["patterns"] for info in collected.values() for q in info["subscriptions"]
    }
    assert queues == expected and "webhooks.fanout" in queues
    for event_type, channel in doc["channels"].items():
        assert channel["bindings"]["amqp"]["exchange"]["name"] == "pm.events"
        message = doc["components"]["messages"][event_type.replace(".", "_")]
        assert message["x-public"] == (event_type in PUBLIC_EVENT_TYPES)
    # email.opened reaches both the analytics read model and the webhook fan-out.
    assert "`campaigns.analytics`" in doc["channels"]["email.opened"]["description"]
    assert "`webhooks.fanout`" in doc["channels"]["email.opened"]["description"]


def test_webhook_event_reference_is_complete_and_valid() -> None:
    from services.webhooks.settings import WebhooksSettings

    text = (REPO / "docs" / "webhooks-events.md").read_text()
    examples = [json.loads(b) for b in _blocks(text, "json")]
    documented = {e["type"] for e in examples}
    assert documented == set(PUBLIC_EVENT_TYPES)
    nested = 0
    for example in examples:
        assert set(example) == {"id", "type", "created", "data"}
        entity = example["type"].split(".")[0]
        # Payload version 2026-12-01: only the entity nested (a flat `goal.converted` also
        # has a `goal` field, so the key alone does not tell).
        if entity in example["data"] and set(example["data"]) <= {entity, "analytics"}:
            assert example["data"][entity]["id"]
            nested += 1
            continue
        # Each flat example's data is accepted by the catalog model the platform publishes with.
        EVENT_TYPES[example["type"]].model_validate(example["data"])
    assert nested == len(PUBLIC_EVENT_TYPES)  # both versions shown for every type
    internal = set(EVENT_TYPES) - set(PUBLIC_EVENT_TYPES)
    assert not any(f"### `{t}`" in text for t in internal)
    schedule = WebhooksSettings.model_fields["webhooks_retry_schedule"].get_default(
        call_default_factory=True
    )
    assert (
        ", ".join(f"{s:g}" for s in schedule[:-1]) + (f" and {schedule[-1]:g} seconds")
        == RETRY_SCHEDULE_TEXT
    )
