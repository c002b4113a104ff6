"""Schemathesis 4 against the live gateway, with every check (`--checks all`) and the
stateful phase following the spec's links (create → get/update/delete), over every
documented operation (issue 15 §5): the spec states every constraint the code enforces and
the code enforces every constraint the spec states.

`make test` runs a bounded budget (a few examples per operation, no coverage phase); `make
fuzz` sets PM_FUZZ=full (more examples, the coverage phase, every phase at full length).
Failures are printed with the curl command that reproduces each."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from scripts.docs.collect import REPO
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.integration.api_contract.conftest import Account
from tests.integration.keys.platform_stack import Platform, await_plan, set_plan

FULL = os.environ.get("PM_FUZZ") == "full"
MAX_EXAMPLES = os.environ.get("PM_FUZZ_MAX_EXAMPLES", "25" if FULL else "2")
# (No response-time limit is set: speed is measured in bench/, never asserted in a test.)


def run_schemathesis(
    account: Account, tmp_path: Path, *extra: str
) -> subprocess.CompletedProcess[str]:
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        str(REPO / "docs" / "openapi.yaml"),
        "--url",
        account.gw,
        "--checks",
        "all",
        "--header",
        f"Authorization: Bearer {account.test_key}",
        "--max-examples",
        MAX_EXAMPLES,
        "--workers",
        "2",
        "--seed",
        os.environ.get("PM_FUZZ_SEED", "1"),
        "--report",
        "ndjson",
        "--report-dir",
        str(tmp_path),
        "--warnings",
        "off",
        "--request-timeout",
        "30",
        # The coverage phase (every boundary value of every parameter: ~6,000 cases, 13 min
        # on 2 cores) runs in `make fuzz`; `make test` keeps the examples, fuzzing and
        # stateful phases, so the suite stays under its 30 minutes.
        *(() if FULL else ("--phases", "examples,fuzzing,stateful")),
        # More `st run` options while working on the spec, e.g. "--phases stateful".
        *shlex.split(os.environ.get("PM_FUZZ_ARGS", "")),
        *extra,
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.integration.api_contract.fuzz_hooks"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with WebhookReceiver(record=False) as receiver:
        env["PM_FUZZ_WEBHOOK_URL"] = receiver.url  # see fuzz_hooks.py
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
            cwd=tmp_path,
            env=env,
        )


# The bounded run (a few hundred requests) fits the enterprise plan's 1,000 a minute, as issue
# 15 runs it; the full run sends ~9,000 cases in about 14 minutes and takes the internal unlimited
# plan. On the starter plan's 60 a minute most cases tested the rate limiter only (a 429
# passes every check): 7,534 of a full run's 8,275 responses were 429s.
FUZZ_PLAN = "unlimited" if FULL else "enterprise"


@pytest.fixture
def fuzz_account(account: Account, platform: Platform) -> Account:
    """The account on FUZZ_PLAN, ready when the gateway answers with the plan's limit."""
    set_plan(platform, account.tenant_id, FUZZ_PLAN)
    await_plan(account.gw, account.headers(), FUZZ_PLAN)
    return account


def test_the_live_api_matches_its_spec(fuzz_account: Account, tmp_path: Path) -> None:
    done = run_schemathesis(fuzz_account, tmp_path)
    report = os.environ.get("PM_FUZZ_REPORT")
    if report:
        Path(report).write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-4000:]


MADE_UP_CURSORS = ["made-up", "\u00f1\u2603\U0001f600", "eyJvIjoxfQ.c2lnbmF0dXJl", "0" * 300]


def test_a_made_up_cursor_is_400_invalid_cursor_on_every_list(account: Account) -> None:
    """The fuzz run leaves made-up cursors out of its schema-valid cases (fuzz_hooks.py): this
    is where they are sent, to every operation taking one."""
    spec = yaml.safe_load((REPO / "docs" / "openapi.yaml").read_text())
    lists = [
        path
        for path, item in spec["paths"].items()
        if "get" in item
        and "{" not in path
        and any(p.get("name") == "cursor" for p in item["get"].get("parameters", []))
    ]
    assert len(lists) >= 8, lists
    with httpx.Client(base_url=account.gw, timeout=30) as client:
        for path in lists:
            for cursor in MADE_UP_CURSORS:
                r = client.get(path, params={"cursor": cursor}, headers=account.headers())
                if r.status_code == 403 and "user_session_required" in r.text:
                    # A dashboard route (billing, keys): the owner's session, not a key.
                    session = {"Authorization": f"Bearer {account.access_token}"}
                    r = client.get(path, params={"cursor": cursor}, headers=session)
                assert r.status_code == 400, (path, cursor, r.text)
                assert r.json()["error"]["code"] == "invalid_cursor", (path, r.text)
