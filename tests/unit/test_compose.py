"""docker-compose.yml runs exactly the processes the code declares, wired like `make up`.

Processes come from the `PROCESSES` dict of every `services/<name>/__main__.py`; a service
without one yet is left out of both directions. Regenerate the file with
`uv run python -m scripts.dev.stack compose > docker-compose.yml`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from libs.common.settings import SERVICE_NAMES, default_port
from scripts.dev.stack import discover_processes

REPO = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]


def _has_main(service: str) -> bool:
    return (REPO / "services" / service / "__main__.py").is_file()


def _declared() -> list[tuple[str, str]]:
    # Each service imported in its own interpreter, as the dev stack does.
    found, broken = discover_processes()
    assert not broken, f"services whose __main__ does not import: {broken}"
    return found


def _composed() -> dict[tuple[str, str], str]:
    """(service, process) -> compose service name, for every `python -m services.X P`."""
    found: dict[tuple[str, str], str] = {}
    for name, spec in SERVICES.items():
        cmd = spec.get("command")
        if isinstance(cmd, list) and cmd[:2] == ["python", "-m"] and len(cmd) >= 3:
            module = str(cmd[2])
            if module.startswith("services."):
                assert len(cmd) == 4, f"{name}: command must be python -m services.<svc> <proc>"
                key = (module.removeprefix("services."), str(cmd[3]))
                assert key not in found, f"{key} runs in both {found[key]} and {name}"
                found[key] = name
    return found


DECLARED = _declared()
COMPOSED = _composed()


@pytest.mark.parametrize(("service", "process"), DECLARED)
def test_every_declared_process_has_a_compose_service(service: str, process: str) -> None:
    name = COMPOSED.get((service, process))
    assert name is not None, (
        f"no compose service runs `python -m services.{service} {process}`; regenerate "
        "docker-compose.yml (python -m scripts.dev.stack compose)"
    )
    assert SERVICES[name]["command"] == ["python", "-m", f"services.{service}", process]


def test_every_compose_process_exists_in_code() -> None:
    for (service, process), name in COMPOSED.items():
        assert service in SERVICE_NAMES, f"{name}: unknown service {service!r}"
        if not _has_main(service):
            continue  # that service's processes are not written yet
        assert (service, process) in DECLARED, (
            f"compose service {name} runs `{process}`, which services.{service} does not declare"
        )


@pytest.mark.parametrize(("service", "process"), list(COMPOSED))
def test_process_containers_are_wired_like_the_dev_stack(service: str, process: str) -> None:
    spec = SERVICES[COMPOSED[(service, process)]]
    port = default_port(service, process)
    assert spec["build"] == "."
    env = spec["environment"]
    assert env["PM_HTTP_PORT"] == str(port)
    assert env["PM_HTTP_HOST"] == "0.0.0.0"
    assert env["PM_CREDS_FILE"] == f"/run/pm-creds/{service}.env"
    for var in ("PM_AMQP_URL", "PM_REDIS_URL", "PM_VAULT_ADDR", "PM_PRINCIPAL_PUBLIC_KEYS"):
        assert env.get(var), var
    assert f"127.0.0.1:{port}/readyz" in " ".join(spec["healthcheck"]["test"])
    depends = spec["depends_on"]
    assert depends["provision"]["condition"] == "service_completed_successfully"
    for infra in ("postgres", "redis", "rabbitmq", "openbao"):
        assert depends[infra]["condition"] == "service_healthy"


def test_infrastructure_and_provisioning_services() -> None:
    assert SERVICES["postgres"]["image"] == "postgres:15"
    assert SERVICES["redis"]["image"].startswith("redis:7")
    assert SERVICES["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert SERVICES["openbao"]["image"].startswith("openbao/openbao:")
    assert "-dev" in SERVICES["openbao"]["command"]
    for infra in ("postgres", "redis", "rabbitmq", "openbao"):
        assert SERVICES[infra]["healthcheck"]["test"], infra
    provision = SERVICES["provision"]
    assert provision["build"] == "."
    assert provision["command"][:4] == ["python", "-m", "scripts.dev.stack", "provision"]
    assert provision["restart"] == "no"


def test_each_process_connects_to_rabbitmq_as_its_own_user() -> None:
    """Like `make up` and Kubernetes (issue 13): provisioning creates one RabbitMQ user per
    service through the management API and hands each its URL in its creds file; the
    service containers hold no broker credentials of their own (the admin's stay with the
    provisioning job)."""
    provision = SERVICES["provision"]
    assert provision["environment"]["PM_RABBITMQ_MANAGEMENT_URL"].startswith("http://pm:${")
    assert provision["environment"]["PM_AMQP_URL"].startswith("amqp://pm:${")
    assert provision["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    for (service, _process), name in COMPOSED.items():
        env = SERVICES[name]["environment"]
        assert "@" not in env["PM_AMQP_URL"], f"{name}: no AMQP credentials in the file"
        assert env["PM_CREDS_FILE"] == f"/run/pm-creds/{service}.env"
        assert "PM_RABBITMQ_MANAGEMENT_URL" not in env


def test_the_file_says_no_secret() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    for name in ("BAO_DEV_ROOT_TOKEN_ID", "POSTGRES_PASSWORD", "RABBITMQ_DEFAULT_PASS"):
        line = next(line for line in text.splitlines() if f"{name}:" in line)
        assert "${" in line, f"{name} must come from the environment (.env), not the file"


def test_private_token_keys_reach_only_the_minting_service() -> None:
    minted_by = {
        "PM_PRINCIPAL_PRIVATE_KEY": "gateway",
        "PM_USER_TOKEN_PRIVATE_KEY": "keys",
    }
    for (service, _process), name in COMPOSED.items():
        env = SERVICES[name]["environment"]
        for var, minter in minted_by.items():
            assert (var in env) == (service == minter), (name, var)
