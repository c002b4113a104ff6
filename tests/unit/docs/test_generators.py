"""SDK generators run clean on the committed `docs/openapi.yaml`.

- `openapi-python-client generate`: no warning but the unavoidable ones listed in
  `ALLOWED_PYTHON_WARNINGS` (each with its reason), no model dropped for a name clash, and the
  generated package imports.
- `openapi-typescript`: its output type-checks with `tsc` against `tests/tools/calls.ts`, calls
  an integrator writes (typed lists, errors with an open `code`, ...).

The npm tools are pinned in `tests/tools/package.json` + lockfile and installed with `npm ci`
into `tests/tools/node_modules` when absent (kept between runs). Node is required: without it
the test fails saying so, it is never skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.docs.collect import REPO

SPEC = REPO / "docs" / "openapi.yaml"
TOOLS = REPO / "tests" / "tools"

# (operation, message) → why it cannot be avoided.
ALLOWED_PYTHON_WARNINGS = {
    (
        "POST /api/v1/contacts/import",
        "Unsupported content type text/csv",
    ): "The import takes a CSV body besides JSON; the generator only writes JSON, "
    "form and multipart bodies, so it leaves the CSV variant out of that one operation.",
    (
        "POST /api/v1/contacts/imports",
        "Unsupported content type text/csv",
    ): "The import job takes a CSV body besides JSON, like the synchronous import.",
}


def _run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _python_warnings(output: str) -> set[tuple[str, str]]:
    """(operation, first line of the message) of each warning block the generator printed."""
    found: set[tuple[str, str]] = set()
    blocks = re.split(r"\n(?=WARNING|Unable to)", output)
    for block in blocks:
        head = re.match(r"WARNING parsing (\w+ \S+) within \S+\.\s*\n+(.+)", block)
        if head:
            found.add((head.group(1), head.group(2).strip()))
        elif block.startswith("Unable to"):
            found.add(("schema", " ".join(block.split("\n\n")[:2]).strip()))
    for line in output.splitlines():
        if "duplicate" in line.lower() or "not in PATH" in line:
            found.add(("generator", line.strip()))
    return found


def test_openapi_python_client_generates_without_unexpected_warnings(tmp_path: Path) -> None:
    out = tmp_path / "client"
    done = _run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(SPEC),
            "--output-path",
            str(out),
            "--meta",
            "none",
        ],
        cwd=tmp_path,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    unexpected = _python_warnings(output) - set(ALLOWED_PYTHON_WARNINGS)
    assert not unexpected, f"unexpected generator warnings: {sorted(unexpected)}\n{output}"
    models = {p.stem for p in (out / "models").glob("*.py")}
    # The models that used to be lost to name clashes, and a typed envelope per response.
    for name in (
        "campaign",
        "campaign_response",
        "campaign_list_response",
        "contact_list_response",
    ):
        assert name in models, name
    imported = _run(
        [
            sys.executable,
            "-c",
            "import sys; sys.path.insert(0, '.'); import client.models as m; "
            "print(m.CampaignListResponse.__name__, m.ErrorBody.__name__)",
        ],
        cwd=tmp_path,
    )
    assert imported.returncode == 0, imported.stderr
    assert "CampaignListResponse ErrorBody" in imported.stdout


def _node() -> str:
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "node and npm are required by the generator test (openapi-typescript, tsc); "
            "install Node.js 18+ (e.g. `apt-get install nodejs npm`)"
        )
    if not (TOOLS / "node_modules" / "openapi-typescript").is_dir():
        done = _run([npm, "ci", "--no-audit", "--no-fund"], cwd=TOOLS)
        assert done.returncode == 0, f"npm ci in tests/tools failed:\n{done.stderr[-4000:]}"
    return node


def test_openapi_typescript_output_type_checks_against_calls() -> None:
    node = _node()
    generated = TOOLS / "generated"
    generated.mkdir(exist_ok=True)
    done = _run(
        [
            node,
            "node_modules/openapi-typescript/bin/cli.js",
            str(SPEC),
            # A field with a default is optional in a request body, as the API treats it.
            "--default-non-nullable",
            "false",
            "-o",
            str(generated / "openapi.d.ts"),
        ],
        cwd=TOOLS,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warn" not in done.stderr.lower(), done.stderr
    checked = _run([node, "node_modules/typescript/bin/tsc", "-p", "tsconfig.json"], cwd=TOOLS)
    assert checked.returncode == 0, checked.stdout + checked.stderr
