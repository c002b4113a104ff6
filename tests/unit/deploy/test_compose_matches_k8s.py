"""docker-compose.yml and the Kubernetes manifests run the same processes with the same
settings (compose-only plumbing aside), so neither drifts from the other."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.deploy.manifests import (
    OVERLAYS,
    REPO,
    configmap_env,
    load_yaml,
    module_command,
    of_kind,
    pod_spec,
    render,
)

# Compose-only mechanics: the credentials file its entrypoint sources (Kubernetes: Vault
# Agent) and the per-process port (Kubernetes: every container listens on 8080).
COMPOSE_ONLY = {"PM_CREDS_FILE", "PM_HTTP_PORT"}
# Values that must be identical in both: the same Vault secret, the same listen address.
SAME_VALUE = ("PM_PRINCIPAL_PUBLIC_KEYS", "PM_HTTP_HOST")


def compose_processes() -> dict[tuple[str, str], dict[str, Any]]:
    services: dict[str, dict[str, Any]] = load_yaml(REPO / "docker-compose.yml")["services"]
    found = {}
    for spec in services.values():
        cmd = spec.get("command")
        if isinstance(cmd, list) and len(cmd) == 4 and str(cmd[2]).startswith("services."):
            found[(str(cmd[2]).removeprefix("services."), str(cmd[3]))] = spec
    return found


def k8s_processes(overlay: str) -> dict[tuple[str, str], dict[str, str]]:
    objs = render(overlay)
    found = {}
    for dep in of_kind(objs, "Deployment").values():
        container = pod_spec(dep)["containers"][0]
        cmd = module_command(container)
        assert cmd is not None
        found[cmd] = configmap_env(objs, container)
    return found


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_compose_and_k8s_name_the_same_processes(overlay: str) -> None:
    compose, k8s = set(compose_processes()), set(k8s_processes(overlay))
    assert compose - k8s == set(), f"in docker-compose.yml only: {sorted(compose - k8s)}"
    assert k8s - compose == set(), (
        f"in deploy/k8s only: {sorted(k8s - compose)} (regenerate docker-compose.yml: "
        "uv run python -m scripts.dev.stack compose > docker-compose.yml)"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_compose_and_k8s_set_the_same_settings(overlay: str) -> None:
    k8s = k8s_processes(overlay)
    for key, spec in compose_processes().items():
        if key not in k8s:
            continue  # reported by the test above
        compose_env = {k: str(v) for k, v in spec["environment"].items() if k.startswith("PM_")}
        missing = set(compose_env) - COMPOSE_ONLY - set(k8s[key])
        assert not missing, f"{key}: set in compose but not in Kubernetes: {sorted(missing)}"
        for name in SAME_VALUE:
            assert compose_env[name] == k8s[key][name], f"{key}: {name} differs"


def test_compose_builds_the_image_from_this_dockerfile() -> None:
    compose = load_yaml(REPO / "docker-compose.yml")
    images = {spec.get("build") for spec in compose["services"].values() if "build" in spec}
    assert images == {"."} and (REPO / "Dockerfile").is_file()
