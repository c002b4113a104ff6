"""Each SDK's own test suite (node --test, pytest, minitest), run as a subprocess against one
real stack (tests/sdks/conftest.py): exit 0 required, output shown on failure. `make sdk-deps`
(part of `make test`) installs the npm packages and Ruby they need. The CLI: test_cli.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.sdks.conftest import SdkStack

TS = REPO / "sdks" / "typescript"
RUBY = REPO / "sdks" / "ruby"
PYTHON = REPO / "sdks" / "python"


def run_suite(cmd: list[str], cwd: Path, stack: SdkStack, timeout: float = 600) -> str:
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
