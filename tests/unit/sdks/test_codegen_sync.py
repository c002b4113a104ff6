"""The SDKs' generated models and resources are what sdks/codegen/generate.py makes of the
committed docs/openapi.yaml: after a spec change, run the generator and commit its output."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[3]


def _generator() -> ModuleType:
    path = REPO / "sdks" / "codegen" / "generate.py"
    spec = importlib.util.spec_from_file_location("sdk_codegen", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["sdk_codegen"] = module
    spec.loader.exec_module(module)
    return module


def test_generated_sdk_code_matches_the_spec() -> None:
    gen = _generator()
    stale = [
        str(path.relative_to(REPO))
        for path, text in gen.render_all().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, (
        f"stale generated SDK files {stale}: run "
        "`uv run --frozen python sdks/codegen/generate.py` and commit the result"
    )


def test_every_operation_of_the_spec_has_a_method_in_each_sdk() -> None:
    gen = _generator()
    spec = gen.load()
    files = gen.render_all()
    ts = files[gen.TS_OUT / "resources.ts"]
    py = files[gen.PY_OUT / "resources.py"]
    rb = files[gen.RB_OUT / "resources.rb"]
    assert spec.operations
    for op in spec.operations:
        assert f"  {gen.camel(op.name)}(" in ts, op.op_id
        assert f"def {gen._py_arg(op.name)}(" in py, op.op_id
        assert f"def {op.name}(" in rb, op.op_id
    # The names seed 004 uses.
    for name in ("contacts", "campaigns", "emails", "analytics", "webhooks", "apiKeys"):
        assert f"readonly {name}:" in ts
    assert "  sendBulk(" in ts and "def send_bulk(" in py and "def send_bulk(" in rb


def test_camel_and_method_names() -> None:
    gen = _generator()
    assert gen.camel("send_bulk") == "sendBulk"
    assert gen.camel("api-keys") == "apiKeys"
    assert gen.pascal("api-keys") == "ApiKeys"
    names = {op.op_id: op.name for op in gen.load().operations}
    assert names.get("create_contact") == "create"
    assert names.get("send_email") == "send"
    assert names.get("list_endpoints") == "list"
    assert names.get("revoke_key") == "revoke"


SMALL_SPEC = """
openapi: 3.1.0
info: {title: t, version: '1'}
paths:
  /api/v1/events/stream:
    get:
      operationId: stream_events
      tags: [events]
      responses:
        '200': {content: {text/event-stream: {schema: {type: string}}}}
  /api/v1/events/types:
    get:
      operationId: list_event_types
      tags: [events]
      parameters:
        - {name: cursor, in: query, schema: {type: [string, 'null']}}
      responses:
        '200':
          content:
            application/json:
              schema:
                type: object
                properties:
                  data: {type: array, items: {$ref: '#/components/schemas/EventType'}}
  /api/v1/events/report:
    get:
      operationId: event_report
      tags: [events]
      parameters:
        - {name: cursor, in: query, schema: {type: string}}
      responses:
        '200':
          content:
            application/json:
              schema:
                type: object
                properties:
                  data: {$ref: '#/components/schemas/EventType'}
  /api/v1/events/trigger:
    post:
      operationId: trigger_event
      tags: [events]
      parameters:
        - {name: Idempotency-Key, in: header, schema: {type: string}}
      requestBody:
        required: true
        content: {application/json: {schema: {$ref: '#/components/schemas/Trigger'}}}
      responses:
        '202': {content: {application/json: {schema: {type: object, properties: {data: {}}}}}}
components:
  schemas:
    EventType:
      type: object
      required: [type]
      properties:
        type: {type: string}
        description: {type: [string, 'null']}
    Trigger:
      type: object
      required: [type]
      properties:
        type: {type: string}
        from: {type: string}
"""


def test_a_new_spec_renders_streams_skipped_lists_paged_and_valid_python(tmp_path: Path) -> None:
    gen = _generator()
    spec_path = tmp_path / "openapi.yaml"
    spec_path.write_text(SMALL_SPEC)
    files = gen.render_all(spec_path)
    ts = files[gen.TS_OUT / "resources.ts"]
    assert "stream" not in ts  # text/event-stream: no generated JSON method
    assert "  listTypes(query?: Params<EventsListTypesQuery>" in ts
    assert "PagePromise<T.EventType>" in ts
    # A report with a paged part is one object, not a list.
    assert (
        "  report(query?: Params<EventsReportQuery>, options?: RequestOptions): "
        "Promise<T.EventType>" in ts
    )
    assert "  trigger(body: Params<T.Trigger>" in ts and "idempotent: true" in ts
    assert "description?: string | null;" in files[gen.TS_OUT / "types.ts"]
    for name in ("types.py", "resources.py"):
        compile(files[gen.PY_OUT / name], name, "exec")
    py_types = files[gen.PY_OUT / "types.py"]
    # A keyword key (`from`) in the functional syntax, as the base of a class with `type`.
    assert "_TriggerOptional = TypedDict(" in py_types and '"from": "str"' in py_types
    assert "class Trigger(_TriggerOptional):" in py_types
    assert "def list_types(" in files[gen.PY_OUT / "resources.py"]
    assert "def trigger(" in files[gen.RB_OUT / "resources.rb"]
