"""Real processes for key and gateway tests: keys api/relay/worker, two gateway replicas and
an echo upstream that stands in for the services still being built (campaigns, delivery,
webhooks, billing). Started once per test session; imported by the gateway, keys and e2e
tests (`from tests.integration.keys.platform_stack import platform`)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from libs.common.plans import limits_for
from libs.common.principal import SCOPES
from libs.common.provision import provision_vault
from tests.conftest import REPO, ServiceProcess, free_port, service_env

NAMESPACE = f"pmt{os.getpid()}"
ALL_SCOPES = list(SCOPES)


@dataclass
class Platform:
    keys: ServiceProcess
    gateways: list[ServiceProcess]
    echo_url: str
    amqp_url: str
    keys_env: dict[str, str]
    gateway_env: dict[str, str]
    processes: list[ServiceProcess] = field(default_factory=list)

    @property
    def gw(self) -> str:
        return self.gateways[0].url

    def logs(self) -> str:
        return "\n".join(p.log_path.read_text() for p in self.processes)


class EchoUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        log_path = REPO / ".dev" / "test-logs" / f"echo-{self.port}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)  # a fresh clone has no .dev yet
        log = log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.gateway.echo_upstream", str(self.port)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        # Generous: on a loaded shared host, Python alone takes seconds to import the app.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("echo upstream did not start")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


# Gateway port -> its metrics URL (the gateway serves /metrics on a port of its own).
METRICS_URLS: dict[int, str] = {}


def start(service: str, process: str, env: dict[str, str]) -> ServiceProcess:
    if service == "gateway":
        metrics_port = free_port()
        env = {**env, "PM_METRICS_PORT": str(metrics_port)}
    proc = ServiceProcess(service, process, env, free_port())
    if service == "gateway":
        METRICS_URLS[proc.port] = f"http://127.0.0.1:{metrics_port}/metrics"
    return proc


def metrics_url(gateway_url: str) -> str:
    """Where the gateway at `gateway_url` serves /metrics."""
    return METRICS_URLS[int(gateway_url.rsplit(":", 1)[1])]


def gateway_env(amqp_url: str, keys_url: str, echo_url: str, **extra: str) -> dict[str, str]:
    return service_env(
        "gateway",
        amqp_url,
        PM_KEYS_URL=keys_url,
        PM_CAMPAIGNS_URL=echo_url,
        PM_DELIVERY_URL=echo_url,
        PM_WEBHOOKS_URL=echo_url,
        PM_BILLING_URL=echo_url,
        PM_INBOX_URL=echo_url,
        PM_REDIS_NAMESPACE=NAMESPACE,
        PM_BAD_SECRET_LIMIT="5",
        **extra,
    )


@pytest.fixture(scope="session")
def keys_vault(vault_dev: Any) -> dict[str, str]:
    """Vault settings of the keys service: its own AppRole (the production policy)."""
    creds = provision_vault(vault_dev.addr, vault_dev.token, ["keys"])
    role_id, secret_id = creds["keys"]
    return {
        "PM_VAULT_ADDR": vault_dev.addr,
        "PM_VAULT_ROLE_ID": role_id,
        "PM_VAULT_SECRET_ID": secret_id,
    }


# The gateway, keys and e2e test directories each import the fixture, which makes three
# fixture definitions: they share one set of processes, stopped when the last one ends.
_shared: dict[str, Any] = {"platform": None, "users": 0}


@pytest.fixture(scope="session")
def platform(amqp_url: str, test_database: str, keys_vault: dict[str, str]) -> Iterator[Platform]:
    if _shared["platform"] is None:
        _shared["stack"] = _start_platform(amqp_url, keys_vault)
        _shared["platform"] = next(_shared["stack"])
    _shared["users"] += 1
    try:
        yield _shared["platform"]
    finally:
        _shared["users"] -= 1
        if _shared["users"] == 0:
            _shared["platform"] = None
            next(_shared["stack"], None)


def _start_platform(amqp_url: str, keys_vault: dict[str, str]) -> Iterator[Platform]:
    keys_env = service_env(
        "keys",
        amqp_url,
        PM_BCRYPT_ROUNDS="4",
        PM_REDIS_NAMESPACE=NAMESPACE,
        PM_USAGE_FLUSH_INTERVAL_SECONDS="0.2",
        PM_LOGIN_MAX_FAILURES_PER_IP="100000",
        PM_SIGNUP_MAX_PER_IP="100000",
        **keys_vault,
    )
    echo = EchoUpstream()
    keys = start("keys", "api", keys_env)
    relay = start("keys", "relay", keys_env)
    worker = start("keys", "worker", keys_env)
    env = gateway_env(amqp_url, keys.url, echo.url)
    gw1 = start("gateway", "api", env)
    # The second replica's billing service is down: a prefix whose service is down → 503.
    gw2 = start("gateway", "api", {**env, "PM_BILLING_URL": f"http://127.0.0.1:{free_port()}"})
    processes = [keys, relay, worker, gw1, gw2]
    try:
        echo.wait_ready()
        for p in processes:
            p.wait_ready(300)  # a shared 2-core host under load starts them slowly
        yield Platform(keys, [gw1, gw2], echo.url, amqp_url, keys_env, env, processes)
    finally:
        for p in processes:
            p.close()
        echo.close()
        _forget_redis_keys(keys_env["PM_REDIS_URL"])


def _forget_redis_keys(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for name in client.scan_iter(match=f"{NAMESPACE}:*", count=1000):
            client.delete(name)
    finally:
        client.close()


# ---------------------------------------------------------------- API helpers


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def signup(client: httpx.AsyncClient, gw: str, unique: str) -> dict[str, Any]:
    resp = await client.post(
        f"{gw}/api/v1/auth/signup",
        json={
            "email": f"owner-{unique}@example.com",
            "password": "correct horse battery",
            "company": f"Acme {unique}",
        },
    )
    assert resp.status_code == 201, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


async def create_key(
    client: httpx.AsyncClient,
    gw: str,
    token: str,
    scopes: list[str],
    mode: str = "live",
    name: str = "test key",
) -> dict[str, Any]:
    resp = await client.post(
        f"{gw}/api/v1/platform/api-keys",
        json={"name": name, "scopes": scopes, "mode": mode},
        headers=bearer(token),
    )
    assert resp.status_code == 201, resp.text
    data: dict[str, Any] = resp.json()["data"]
    return data


def set_plan(platform: Platform, tenant_id: str, plan: str) -> None:
    """The admin command (`python -m services.keys set-plan`), as an operator runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "services.keys", "set-plan", tenant_id, plan],
        env=platform.keys_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def await_plan(gw: str, headers: dict[str, str], plan: str) -> None:
    """Until the gateway applies `plan` to the caller of `headers` (it learns of a change
    from the keys service's event): its rate-limit headers then carry the plan's limit."""
    want = str(limits_for(plan).per_minute)
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=gw, timeout=30) as client:
        while (
            client.get("/api/v1/events/types", headers=headers).headers.get("X-RateLimit-Limit")
            != want
        ):
            assert time.monotonic() < deadline, f"the gateway never saw the {plan} plan"
            time.sleep(0.5)
