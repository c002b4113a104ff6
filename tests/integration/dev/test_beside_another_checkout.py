"""A checkout's test session passes while ANOTHER checkout's stack runs (issue 16): the
other checkout has its own OpenBao (its own `scripts/dev/infra.sh` picked a port of its own,
with its own root token) and its own service processes whose pools hold their full budget;
a test session of this checkout (a pytest of its own, `beside_probe.py`) still picks this
checkout's OpenBao, passes, and its peak of Postgres connections fits a default server
(`max_connections` 100, 3 reserved) beside the whole dev stack's worst case.

The other stack's every process is not started (two cores, shared servers): three real keys
processes hold their budget rows at full size, and the stack's worst case is taken from the
same budget table (`POOL_BUDGET`) the processes size their pools from. Holding 59
connections of the shared server would starve the machine's other users.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from libs.common.db import migrate, pool_budget
from libs.common.provision import provision_database, provision_vault, service_dsn
from libs.common.settings import SCHEMA_SERVICES, SERVICE_NAMES
from tests.conftest import (
    ADMIN_DSN,
    AMQP_BASE,
    REDIS_URL,
    REPO,
    TEST_DB,
    ServiceProcess,
    _drop_database,
    _rabbitmqctl,
    free_port,
)
from tests.fixtures_infra import ADDR_FILE

# docs/operations.md "Connection budget": a default Postgres, less its superuser reserve.
DEFAULT_POSTGRES_BUDGET = 100 - 3


def stack_worst_case() -> int:
    """Connections the dev stack's database processes may hold at most (POOL_BUDGET)."""
    total = 0
    for svc in SERVICE_NAMES:
        if svc not in SCHEMA_SERVICES:
            continue
        main = importlib.import_module(f"services.{svc}.__main__")
        total += sum(pool_budget(proc).max_size for proc in main.PROCESSES)
    return total


@dataclass
class OtherCheckout:
    root: Path
    vault_addr: str
    vault_token: str
    database: str
    processes: list[ServiceProcess]


def _infra(root: Path, command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PM_", "VAULT_", "BAO_"))}
    return subprocess.run(
        ["bash", str(root / "scripts" / "dev" / "infra.sh"), command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def other_checkout(tmp_path: Path, vault_dev: Any) -> Iterator[OtherCheckout]:
    """A second checkout (a copy of the infra script, the same OpenBao binary) with its own
    OpenBao dev server and keys api/relay/worker whose pools hold their full budget."""
    root = tmp_path / "other-checkout"
    (root / "scripts" / "dev").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "dev" / "infra.sh", root / "scripts" / "dev" / "infra.sh")
    (root / ".venv" / "bin").mkdir(parents=True)
    (root / ".venv" / "bin" / "bao").symlink_to(REPO / ".venv" / "bin" / "bao")
    started = _infra(root, "start-vault")
    assert started.returncode == 0, started.stdout + started.stderr
    addr = (root / ".dev" / "vault-addr").read_text().strip()
    token = (root / ".dev" / "vault-root-token").read_text().strip()
    database, vhost = f"{TEST_DB}_other", f"{TEST_DB}_other"
    processes: list[ServiceProcess] = []
    try:
        asyncio.run(provision_database(ADMIN_DSN, database=database, services=["keys"]))
        dsn = service_dsn(ADMIN_DSN, "keys", database)
        migrate("keys", dsn)
        _rabbitmqctl("add_vhost", vhost)
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        role_id, secret_id = provision_vault(addr, token, ["keys"])["keys"]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PM_")},
            "PYTHONPATH": str(REPO),
            "PM_ENVIRONMENT": "test",
            "PM_DATABASE_URL": dsn,
            "PM_AMQP_URL": f"{AMQP_BASE}/{vhost}",
            "PM_REDIS_URL": REDIS_URL,
            "PM_REDIS_NAMESPACE": f"pmother{os.getpid()}",
            "PM_VAULT_ADDR": addr,
            "PM_VAULT_ROLE_ID": role_id,
            "PM_VAULT_SECRET_ID": secret_id,
        }
        for process in ("api", "relay", "worker"):
            size = str(pool_budget(process).max_size)
            # min = max: the pool opens its whole budget at start and keeps it.
            held = {**env, "PM_DB_POOL_MIN": size, "PM_DB_POOL_MAX": size}
            processes.append(ServiceProcess("keys", process, held, free_port()))
        for p in processes:
            p.wait_ready(120)
        yield OtherCheckout(root, addr, token, database, processes)
    finally:
        for p in processes:
            p.close()
        _rabbitmqctl("delete_vhost", vhost)
        asyncio.run(_drop(database))
        stopped = _infra(root, "stop-vault")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


async def _drop(database: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await _drop_database(admin, database)
    finally:
        await admin.close()


def _accepts(addr: str, token: str) -> bool:
    r = httpx.get(f"{addr}/v1/auth/token/lookup-self", headers={"X-Vault-Token": token}, timeout=5)
    return r.status_code == 200


async def test_a_session_passes_beside_another_checkouts_stack(
    other_checkout: OtherCheckout, vault_dev: Any, tmp_path: Path
) -> None:
    other = other_checkout
    ours = ADDR_FILE.read_text().strip().rstrip("/")
    # Two OpenBao servers, neither taking the other's root token: the situation in which a
    # session borrowing the wrong one failed 117 tests with "OpenBao rejects the root token".
    assert other.vault_addr.rstrip("/") != ours
    assert not _accepts(ours, other.vault_token)
    assert not _accepts(other.vault_addr, vault_dev.token)

    out = tmp_path / "probe.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_TEST_VAULT_")}
    session = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(Path(__file__).with_name("beside_probe.py")),
        ],
        cwd=REPO,
        env={**env, "PM_PROBE_OUT": str(out)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    session_db = f"pm_test_{session.pid}"
    peak = {"session": 0, "other": 0}
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        while session.poll() is None:
            rows = await admin.fetch(
                "SELECT datname, count(*) AS n FROM pg_stat_activity"
                " WHERE datname = ANY($1::text[]) GROUP BY datname",
                [session_db, other.database],
            )
            counts = {r["datname"]: r["n"] for r in rows}
            peak["session"] = max(peak["session"], counts.get(session_db, 0))
            peak["other"] = max(peak["other"], counts.get(other.database, 0))
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
        if session.poll() is None:
            session.kill()
    output = session.stdout.read() if session.stdout else ""
    assert session.returncode == 0, output

    probe = json.loads(out.read_text())
    assert probe["pid"] == session.pid and probe["database"] == session_db
    # The session's fixtures picked this checkout's OpenBao, never the other one.
    assert probe["vault_addr"].rstrip("/") == ours
    assert probe["keys_vault_addr"].rstrip("/") == ours

    # The other stack's processes held their budget the whole time, and are still serving.
    held = sum(pool_budget(p.process).max_size for p in other.processes)
    assert peak["other"] >= held, peak
    for p in other.processes:
        assert httpx.get(f"{p.url}/readyz", timeout=10).status_code == 200
    # The session's own peak fits a default Postgres beside the whole stack's worst case.
    assert peak["session"] > 0, "the session never connected (sampling missed it?)"
    assert peak["session"] + stack_worst_case() <= DEFAULT_POSTGRES_BUDGET, (
        peak,
        stack_worst_case(),
    )
    print(
        f"session peak {peak['session']} + stack worst case {stack_worst_case()}"
        f" <= {DEFAULT_POSTGRES_BUDGET}; other stack held {peak['other']}"
    )
