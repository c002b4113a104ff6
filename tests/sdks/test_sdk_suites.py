"""Each SDK's own test suite (node --test, pytest, minitest), run as a subprocess against one
real stack (tests/sdks/conftest.py): exit 0 required, output shown on failure. `make sdk-deps`
(part of `make test`) installs the npm packages and Ruby they need."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import REPO
from tests.sdks.conftest import SdkStack

TS = REPO / "sdks" / "typescript"
RUBY = REPO / "sdks" / "ruby"
PYTHON = REPO / "sdks" / "python"


def run_suite(cmd: list[str], cwd: object, stack: SdkStack, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENGUINMAILS_")}
    env.update(stack.env())
    done = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    output = f"$ {' '.join(cmd)}\n{done.stdout}\n{done.stderr}"
    print(output)
    assert done.returncode == 0, output[-12000:]
    return output


def _needs(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} not found: {hint}")
    return path


def test_typescript_sdk_suite(sdk_stack: SdkStack) -> None:
    npm = _needs("npm", "run `make sdk-deps` (installs the SDK suites' tools)")
    if not (TS / "node_modules" / "typescript").exists():
        pytest.fail("sdks/typescript/node_modules missing: run `make sdk-deps`")
    run_suite([npm, "run", "--silent", "build"], TS, sdk_stack)
    out = run_suite([_needs("node", "install Node.js >= 18"), "--test", "test/"], TS, sdk_stack)
    assert "# fail 0" in out


def test_python_sdk_suite(sdk_stack: SdkStack) -> None:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PYTHON / "tests")]
    out = run_suite(cmd, REPO, sdk_stack)
    assert " passed" in out and " failed" not in out


def test_ruby_sdk_suite(sdk_stack: SdkStack) -> None:
    ruby = _needs("ruby", "run `make sdk-deps` (installs Ruby from Debian packages)")
    cmd = [
        ruby,
        "-Ilib",
        "-Itest",
        "-e",
        'Dir["test/**/*_test.rb"].sort.each { |f| require_relative f }',
    ]
    out = run_suite(cmd, RUBY, sdk_stack)
    assert " 0 failures, 0 errors" in out


def _cli(
    args: list[str], env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("penguinmails", path=str(REPO / ".venv" / "bin")) or "penguinmails"
    done = subprocess.run(
        [exe, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    print(f"$ penguinmails {' '.join(args)}\n{done.stdout}{done.stderr}")
    return done


def test_cli_login_keys_and_emails_send(sdk_stack: SdkStack, tmp_path: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENGUINMAILS_")}
    env.update(
        PENGUINMAILS_BASE_URL=sdk_stack.gateway,
        XDG_CONFIG_HOME=str(tmp_path),
        PENGUINMAILS_NO_KEYRING="1",
    )
    assert "Not signed in" in _cli(["keys", "list"], env).stderr

    login = _cli(
        ["login", "--email", sdk_stack.email, "--password-stdin"], env, sdk_stack.password + "\n"
    )
    assert login.returncode == 0, login.stderr
    stored = tmp_path / "penguinmails" / "credentials.json"
    assert stored.stat().st_mode & 0o777 == 0o600
    assert json.loads(stored.read_text())[sdk_stack.gateway]["refresh_token"]

    created = _cli(
        ["--json", "keys", "create", "--name", "cli", "--scope", "send_email", "--mode", "test"],
        env,
    )
    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    assert key["key"].startswith("pm_test_")
    listed = _cli(["--json", "keys", "list"], env)
    assert listed.returncode == 0, listed.stderr
    assert key["id"] in {k["id"] for k in json.loads(listed.stdout)}

    send = ["--json", "emails", "send", "--from", "hello@example.com", "--to", "jo@example.com"]
    send += ["--subject", "From the CLI", "--text", "Hello"]
    assert "API key is needed" in _cli(send, env).stderr
    sent = _cli(send, {**env, "PENGUINMAILS_API_KEY": key["key"]})
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["status"] == "queued"
    bad_to = [a if a != "jo@example.com" else "not-an-address" for a in send]
    bad = _cli(bad_to, {**env, "PENGUINMAILS_API_KEY": key["key"]})
    assert bad.returncode == 1 and "error:" in bad.stderr

    assert _cli(["keys", "revoke", key["id"]], env).returncode == 0
    revoked = _cli([*send[1:], "--api-key", key["key"]], env)
    assert revoked.returncode == 1 and "error:" in revoked.stderr

    assert _cli(["logout"], env).returncode == 0
    assert sdk_stack.gateway not in json.loads(stored.read_text())
    assert "Not signed in" in _cli(["keys", "list"], env).stderr
