"""Shared fixtures: the real Postgres, Redis, RabbitMQ and OpenBao servers, isolated for tests.

Isolation from a running dev stack (`make up`) and from other test runs on the same machine:
each pytest session gets its own database `pm_test_<pid>` (provisioned and migrated like the
real one) and RabbitMQ vhost `pm_test_<pid>`, both removed at the end (and leftovers of dead
sessions removed at the start), and Redis database 15.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import asyncpg
import httpx
import pytest

from libs.common.db import create_pool, migrate, pool_budget
from libs.common.settings import SCHEMA_SERVICES
from tests.fixtures_infra import *  # noqa: F403  (vault_dev)
from tests.ports import free_port as free_port  # the stacks and fixtures import it from here

REPO = Path(__file__).resolve().parents[1]
PG_HOST = os.environ.get("PM_TEST_PG_HOST", "127.0.0.1")
ADMIN_DSN = os.environ.get("PM_TEST_ADMIN_DSN", f"postgresql://postgres@{PG_HOST}:5432/postgres")
TEST_DB = f"pm_test_{os.getpid()}"
TEST_VHOST = TEST_DB
AMQP_BASE = os.environ.get("PM_TEST_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
REDIS_URL = os.environ.get("PM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def service_dsn(service: str, database: str = TEST_DB) -> str:
    return f"postgresql://pm_{service}@{PG_HOST}:5432/{database}"


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    return subprocess.run([exe, "-q", *args], capture_output=True, text=True, timeout=60)


def _dead_session(name: str) -> bool:
    """`pm_test_<pid>[_suffix]` of a process that no longer exists."""
    pid = name.removeprefix("pm_test_").split("_", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A fresh RabbitMQ vhost for this test session."""
    listed = _rabbitmqctl("list_vhosts", "name")
    for vhost in listed.stdout.split():
        if vhost.startswith("pm_test_") and _dead_session(vhost):
            _rabbitmqctl("delete_vhost", vhost)
    created = _rabbitmqctl("add_vhost", TEST_VHOST)
    if created.returncode != 0:
        pytest.fail(f"cannot create RabbitMQ vhost {TEST_VHOST}: {created.stderr.strip()}")
    _rabbitmqctl("set_permissions", "-p", TEST_VHOST, "guest", ".*", ".*", ".*")
    yield f"{AMQP_BASE}/{TEST_VHOST}"
    _rabbitmqctl("delete_vhost", TEST_VHOST)


async def _drop_database(admin: asyncpg.Connection, name: str) -> None:
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
    )
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


async def provisioned_database(name: str, services: Sequence[str]) -> str:
    """A database of its own (`pm_test_<pid>_<suffix>`, swept with the session's), provisioned
    and migrated for `services`: for a stack whose relays must not inherit what other tests
    left unpublished in the shared outboxes (drop it with `drop_database`)."""
    from libs.common.provision import provision_database

    await provision_database(ADMIN_DSN, database=name, services=services)
    for svc in services:
        await asyncio.to_thread(migrate, svc, service_dsn(svc, name))
    return name


async def drop_database(name: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await _drop_database(admin, name)
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def test_database() -> AsyncIterator[str]:
    """This session's database, provisioned (roles, schemas) and migrated for every service."""
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        for row in await admin.fetch("SELECT datname FROM pg_database"):
            if row["datname"].startswith("pm_test_") and _dead_session(row["datname"]):
                await _drop_database(admin, row["datname"])
    finally:
        await admin.close()
    yield await provisioned_database(TEST_DB, SCHEMA_SERVICES)
    await drop_database(TEST_DB)


@pytest.fixture(scope="session")
async def keys_pool(test_database: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool in the keys schema: the stand-in service for shared-library tests."""
    budget = pool_budget("api")  # stands in for a service's api process
    pool = await create_pool(
        service_dsn("keys"), "keys", min_size=budget.min_size, max_size=budget.max_size
    )
    yield pool
    await pool.close()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def redis_url() -> str:
    return REDIS_URL


def service_env(service: str, amqp_url: str, **extra: str) -> dict[str, str]:
    """Environment of a service process started by a test against the test infrastructure."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PM_")}
    env.update(
        PM_ENVIRONMENT="test",
        PM_DATABASE_URL=service_dsn(service),
        PM_AMQP_URL=amqp_url,
        PM_REDIS_URL=REDIS_URL,
        PYTHONPATH=str(REPO),
    )
    env.update(extra)
    return env


class ServiceProcess:
    """A real `python -m services.<name> <process>` child process."""

    def __init__(self, service: str, process: str, env: dict[str, str], port: int) -> None:
        self.service = service
        self.process = process
        self.port = port
        self.log_path = REPO / ".dev" / "test-logs" / f"{service}-{process}-{port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"services.{service}", process],
            env={**env, "PM_HTTP_PORT": str(port)},
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.service} {self.process} exited:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.service} {self.process} not ready:\n{self.logs()}")

    def logs(self) -> str:
        self._log.flush()
        return self.log_path.read_text()[-4000:]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._log.close()


@pytest.fixture
def spawn(amqp_url: str, test_database: str) -> Iterator[object]:
    """Start service processes for one test; all are killed at its end."""
    started: list[ServiceProcess] = []

    def _spawn(service: str, process: str, **env: str) -> ServiceProcess:
        p = ServiceProcess(service, process, service_env(service, amqp_url, **env), free_port())
        started.append(p)
        return p

    yield _spawn
    for p in started:
        p.close()
