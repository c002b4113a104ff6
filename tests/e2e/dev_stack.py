"""The stack `make up` starts, for tests that must run against it (the getting-started guide).

`dev_stack` is this checkout's running `make up` stack when there is one (supervisord of
`.dev/` answers and `.dev/stack.env` names a gateway and a fake Stripe that are ready): the
test then runs beside the developer's stack, as the developer would. Otherwise (a CI run, or
`PM_TEST_OWN_STACK=1`) it starts a separate instance with the same code path,
`python -m scripts.dev.stack up` with `PM_DEV_DIR` (state in `.dev/test-stack-<pid>/`),
`PM_DEV_PORT_OFFSET` (ports shifted to a free block) and this session's database
(`pm_test_<pid>_stack`), RabbitMQ vhost, Redis database and OpenBao; it stops it at the end
(and an instance left by a dead session at the start). So `make test` never touches the
ports, database or Vault paths of a running `make up` stack.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from libs.common.settings import SERVICE_NAMES, default_port
from libs.common.vault import make_client
from tests.conftest import (
    ADMIN_DSN,
    AMQP_BASE,
    REDIS_URL,
    REPO,
    _dead_session,
    _drop_database,
    _rabbitmqctl,
)

DEV = REPO / ".dev"
INSTANCE_PREFIX = "test-stack-"
# Port offsets a separate instance may take: every port of the plan (8000-8725) shifted
# stays below the kernel's ephemeral range (32768+), where free_port() picks test ports.
_OFFSETS = range(11000, 24001, 1000)


@dataclass(frozen=True)
class DevStack:
    gateway: str
    fake_stripe: str
    mail_capture: str
    own: bool  # started by this test session
    # The inbox's inbound SMTP listener (host, port): replies are delivered here.
    inbound_smtp: tuple[str, int] = ("127.0.0.1", 0)


def _env_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    pairs = (line.partition("=") for line in path.read_text().splitlines() if "=" in line)
    return {k: v for k, _, v in pairs}


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=3.0).status_code == 200
    except httpx.HTTPError:
        return False


def running_stack() -> DevStack | None:
    """This checkout's `make up` stack, if it runs and answers."""
    from scripts.dev.stack import supervisord_running

    values = _env_file(DEV / "stack.env")
    urls = [values.get(k, "") for k in ("PM_GATEWAY_URL", "PM_FAKE_STRIPE_URL")]
    if not all(urls) or not supervisord_running() or not all(_ready(u) for u in urls):
        return None
    mail = values.get("PM_MAIL_CAPTURE_URL", "")
    return DevStack(urls[0], urls[1], mail, own=False, inbound_smtp=_inbound_smtp(values))


def _inbound_smtp(values: dict[str, str]) -> tuple[str, int]:
    return values.get("PM_INBOUND_SMTP_HOST", "127.0.0.1"), int(
        values.get("PM_INBOUND_SMTP_PORT", "0")
    )


def _plan_ports() -> list[int]:
    from scripts.dev.stack import discover_processes

    processes, _ = discover_processes()
    return [default_port(s, p) for s, p in processes if s in SERVICE_NAMES] + [8700, 8701, 8725]


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_offset() -> int:
    ports = _plan_ports()
    start = os.getpid() % len(_OFFSETS)
    for i in range(len(_OFFSETS)):
        offset = _OFFSETS[(start + i) % len(_OFFSETS)]
        if all(_free(port + offset) for port in ports):
            return offset
    pytest.fail("no free block of ports for a separate dev stack instance")


def _stack_cli(
    command: str, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts.dev.stack", command],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _base_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PM_")}


def reap_dead_instances() -> None:
    """Stop the instances of test sessions that died without stopping theirs."""
    for path in DEV.glob(f"{INSTANCE_PREFIX}*"):
        pid = path.name.removeprefix(INSTANCE_PREFIX)
        if path.is_dir() and _dead_session(f"pm_test_{pid}"):
            _stack_cli("down", {**_base_env(), "PM_DEV_DIR": str(path)}, 120)
            shutil.rmtree(path, ignore_errors=True)


def _instance(vault: Any) -> Iterator[DevStack]:
    reap_dead_instances()
    name = f"pm_test_{os.getpid()}_stack"
    dev_dir = DEV / f"{INSTANCE_PREFIX}{os.getpid()}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    env = {
        **_base_env(),
        "PM_DEV_DIR": str(dev_dir),
        "PM_DEV_PORT_OFFSET": str(_free_offset()),
        "PM_ADMIN_DATABASE_URL": ADMIN_DSN,
        "PM_DATABASE_NAME": name,
        "PM_AMQP_URL": f"{AMQP_BASE}/{name}",
        "PM_REDIS_URL": REDIS_URL,
        "PM_VAULT_ADDR": vault.addr,
        "PM_VAULT_ROOT_TOKEN": vault.token,
        # A test stack may raise the signup throttle (docs/rate-limits.md): its counter is
        # per address in the shared Redis, where every other stack of this session (the
        # dashboard's, the platform's) signs up from 127.0.0.1 too.
        "PM_SIGNUP_MAX_PER_IP": "100000",
    }
    try:
        up = _stack_cli("up", env, 600)
        assert up.returncode == 0, f"scripts.dev.stack up failed:\n{up.stdout}\n{up.stderr}"
        values = _env_file(dev_dir / "stack.env")
        yield DevStack(
            values["PM_GATEWAY_URL"],
            values["PM_FAKE_STRIPE_URL"],
            values["PM_MAIL_CAPTURE_URL"],
            own=True,
            inbound_smtp=_inbound_smtp(values),
        )
    finally:
        _stack_cli("down", env, 180)
        asyncio.run(_drop(name))
        _forget_redis_users(name)
        _rabbitmqctl("delete_vhost", name)
        _forget_vault_paths(vault, dev_dir.name)
        shutil.rmtree(dev_dir, ignore_errors=True)


async def _drop(database: str) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await _drop_database(admin, database)
    finally:
        await admin.close()


def _forget_redis_users(database: str) -> None:
    """The instance's Redis ACL users (scripts.dev.stack.redis_user_suffix)."""
    import redis

    from libs.common.provision import REDIS_KEY_PATTERNS, redis_user_name
    from scripts.dev.stack import REDIS_NAMESPACE

    client = redis.Redis.from_url(REDIS_URL)
    try:
        users = [redis_user_name(s, REDIS_NAMESPACE, f"-{database}") for s in REDIS_KEY_PATTERNS]
        client.execute_command("ACL", "DELUSER", *users)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def _forget_vault_paths(vault: Any, instance: str) -> None:
    """The fakes' credentials the instance wrote (scripts.dev.stack.fake_vault_paths)."""
    client = make_client(vault.addr, token=vault.token)
    tag = f"dev-{instance}"
    paths = (f"billing/{tag}/stripe", f"billing/{tag}/stripe-webhook", f"delivery/{tag}/esp/smtp")
    for path in paths:
        client.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point="secret")


@pytest.fixture(scope="module")
def dev_stack(vault_dev: Any) -> Iterator[DevStack]:
    if not os.environ.get("PM_TEST_OWN_STACK"):
        running = running_stack()
        if running is not None:
            yield running
            return
    yield from _instance(vault_dev)
