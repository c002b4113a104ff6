"""The Dockerfile (not buildable here: no Docker engine) has what the image must have:
several stages, dependencies exactly as locked, a non-root runtime user, and no build tools
or secrets in the final stage; .dockerignore keeps local state and secrets out."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from tests.unit.deploy.manifests import REPO

SECRETISH = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|_KEY|APIKEY|CREDENTIAL)", re.I)
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|clang|cargo|rustc|uv|pip)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(text: str) -> tuple[list[tuple[str, str]], list[Stage]]:
    """(global ARGs, stages): instructions with continuation lines joined, comments dropped."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    preamble: list[tuple[str, str]] = []
    stages: list[Stage] = []
    for line in joined.splitlines():
        if not line.strip():
            continue
        op, _, rest = line.strip().partition(" ")
        op = op.upper()
        if op == "FROM":
            words = rest.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((op, rest.strip()))
        else:
            preamble.append((op, rest.strip()))
    return preamble, stages


PREAMBLE, STAGES = parse((REPO / "Dockerfile").read_text())
FINAL = STAGES[-1]


def test_multi_stage_with_a_slim_python_runtime() -> None:
    assert len(STAGES) >= 2
    args = dict(a.split("=", 1) for op, a in PREAMBLE if op == "ARG" and "=" in a)
    base = args.get(FINAL.base.strip("${}"), FINAL.base)
    assert re.match(r"python:3\.11[.\d]*-slim", base), base


def test_dependencies_are_installed_exactly_as_locked_without_dev() -> None:
    runs = [a for s in STAGES[:-1] for op, a in s.instructions if op == "RUN"]
    sync = [r for r in runs if "uv sync" in r]
    assert sync, "a builder stage must run `uv sync`"
    assert all("--frozen" in r and "--no-dev" in r for r in sync), sync
    copies = [a for op, a in FINAL.instructions if op == "COPY"]
    assert any(c.startswith("--from=") for c in copies), "the runtime copies the built venv"


def test_runtime_runs_as_an_unprivileged_numeric_user() -> None:
    users = [a for op, a in FINAL.instructions if op == "USER"]
    assert users, "the final stage must set USER"
    user = users[-1].split(":")[0]
    assert user.isdigit() and int(user) >= 1000, users[-1]
    # The manifests' runAsUser is the same uid (runAsNonRoot is checked against it).
    manifest = (REPO / "deploy/k8s/base/templates/api/deployment.yaml").read_text()
    assert f"runAsUser: {user}" in manifest


def test_no_build_tools_or_whole_context_in_the_runtime_stage() -> None:
    for op, arg in FINAL.instructions:
        if op == "RUN":
            assert not BUILD_TOOLS.search(arg.replace("useradd", "").replace("groupadd", "")), arg
        if op in ("COPY", "ADD"):
            sources = [w for w in shlex.split(arg) if not w.startswith("--")][:-1]
            assert "." not in sources, f"the runtime stage must not copy the context: {arg}"


def test_no_secret_values_in_env_or_args() -> None:
    for op, arg in [*PREAMBLE, *(i for s in STAGES for i in s.instructions)]:
        if op not in ("ENV", "ARG", "LABEL"):
            continue
        for pair in shlex.split(arg):
            name, _, value = pair.partition("=")
            if SECRETISH.search(name):
                assert not value, f"{op} {name} carries a value; secrets come from Vault"


def test_dockerignore_keeps_local_state_and_secrets_out() -> None:
    rules = [
        ln.strip()
        for ln in (REPO / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    for excluded in (".env", ".dev", ".venv", ".git"):
        assert excluded in rules or ("**" in rules and f"!{excluded}" not in rules), excluded
    # Allow-list: only what the image needs is let back in.
    assert rules[0] == "**"
    allowed = {r.removeprefix("!").rstrip("/") for r in rules if r.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "uv.lock",
        "libs",
        "services",
        "scripts",
        "deploy/vault",
        "docs/openapi.yaml",
    }


def test_parser_sees_a_root_user_and_a_secret() -> None:
    """The checks above can fail."""
    _, stages = parse("FROM python:3.11-slim AS a\nENV PM_VAULT_TOKEN=abc\nUSER root\n")
    env = [a for op, a in stages[0].instructions if op == "ENV"]
    assert SECRETISH.search(env[0].split("=")[0])
    assert [a for op, a in stages[0].instructions if op == "USER"] == ["root"]
