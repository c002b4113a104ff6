"""The manifests run exactly the processes the code declares, each the way it must run.

Expected processes come from `PROCESSES` in every `services/<name>/__main__.py`: a process
added without a manifest (or a manifest whose command the code does not know) fails here.
"""

from __future__ import annotations

import pytest

from libs.common.bus import EventBus
from libs.common.runner import HTTP_DRAIN_SECONDS
from libs.common.settings import SCHEMA_SERVICES
from tests.unit.deploy.manifests import (
    NON_CONSUMERS,
    OVERLAYS,
    VAULT_WRAPPER,
    Obj,
    commands,
    declared,
    has_main,
    module_command,
    of_kind,
    pod_spec,
    render,
    subscribed_queues,
)

DECLARED = sorted(declared())


def deployments_by_process(overlay: str) -> dict[tuple[str, str], Obj]:
    found: dict[tuple[str, str], Obj] = {}
    for name, dep in of_kind(render(overlay), "Deployment").items():
        cmd = module_command(pod_spec(dep)["containers"][0])
        assert cmd is not None, f"{name}: command is not `python -m services.<svc> <proc>`"
        assert cmd not in found, f"{cmd} runs in two Deployments"
        found[cmd] = dep
    return found


def app_container(dep: Obj) -> Obj:
    container: Obj = pod_spec(dep)["containers"][0]
    return container


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(("service", "process"), DECLARED)
def test_every_declared_process_has_a_deployment_with_probes(
    overlay: str, service: str, process: str
) -> None:
    dep = deployments_by_process(overlay).get((service, process))
    assert dep is not None, (
        f"no Deployment runs `python -m services.{service} {process}` in overlay {overlay}: "
        f"add deploy/k8s/base/processes/{service}-{process}/ (copy a sibling) and list it in "
        "deploy/k8s/base/kustomization.yaml"
    )
    assert dep["metadata"]["name"] == f"pm-{service}-{process}"
    c = app_container(dep)
    assert c["command"] == VAULT_WRAPPER
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    # The inbox's SMTP listener also listens for mail (PM_INBOUND_SMTP_PORT in inbox.env).
    extra = {"smtp": 2525} if (service, process) == ("inbox", "smtp") else {}
    assert ports == {"http": 8080, **extra}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    labels = dep["spec"]["selector"]["matchLabels"]
    assert labels["penguinmails.io/service"] == service
    assert labels["penguinmails.io/process"] == process


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_runs_a_process_the_code_declares(overlay: str) -> None:
    for (service, process), dep in deployments_by_process(overlay).items():
        name = dep["metadata"]["name"]
        assert has_main(service), f"{name}: services/{service}/__main__.py does not exist"
        assert (service, process) in declared(), (
            f"{name} runs `{process}`, which services.{service} PROCESSES does not declare"
        )
        for init in pod_spec(dep).get("initContainers", []):
            cmd = module_command(init)
            assert cmd == (service, "migrate"), f"{name}: unexpected init container {init}"
            assert "migrate" in commands(service)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_run_as_a_job_and_before_every_pod_of_a_schema_service(overlay: str) -> None:
    objs = render(overlay)
    jobs = {module_command(pod_spec(j)["containers"][0]) for j in of_kind(objs, "Job").values()}
    for service in SCHEMA_SERVICES:
        if not has_main(service):
            continue
        assert (service, "migrate") in jobs, f"no migration Job for {service}"
    for (service, _), dep in deployments_by_process(overlay).items():
        inits = [module_command(c) for c in pod_spec(dep).get("initContainers", [])]
        expected = [(service, "migrate")] if service in SCHEMA_SERVICES else []
        assert inits == expected, dep["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_locked_down(overlay: str) -> None:
    objs = render(overlay)
    workloads = [*of_kind(objs, "Deployment").values(), *of_kind(objs, "Job").values()]
    for obj in workloads:
        spec = pod_spec(obj)
        name = obj["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in [*spec["containers"], *spec.get("initContainers", [])]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (name, c["name"])
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), (name, c["name"])
            assert {"cpu", "memory"} <= set(c["resources"]["limits"]), (name, c["name"])
        # Python needs a writable /tmp; the root filesystem is read-only.
        assert {"name": "tmp", "mountPath": "/tmp"} in spec["containers"][0]["volumeMounts"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_process_kind_has_its_scaling_availability_and_network_objects(
    overlay: str,
) -> None:
    objs = render(overlay)
    pdbs, services = of_kind(objs, "PodDisruptionBudget"), of_kind(objs, "Service")
    hpas, scaled = of_kind(objs, "HorizontalPodAutoscaler"), of_kind(objs, "ScaledObject")
    for (_, process), dep in deployments_by_process(overlay).items():
        name = dep["metadata"]["name"]
        selector = dep["spec"]["selector"]["matchLabels"]
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == selector, name
        spread = pod_spec(dep)["topologySpreadConstraints"]
        assert {t["topologyKey"] for t in spread} >= {"kubernetes.io/hostname"}, name
        assert all(t["labelSelector"]["matchLabels"] == selector for t in spread), name
        # The inbox's SMTP listener is reached by mail servers: a Service and an HPA too.
        if process in ("api", "smtp"):
            assert services[name]["spec"]["selector"] == selector, name
            assert hpas[name]["spec"]["scaleTargetRef"]["name"] == name
            assert "replicas" not in dep["spec"], f"{name}: the HPA owns replicas"
        else:
            assert name not in services, f"{name} serves only probes and metrics"
        if process not in NON_CONSUMERS:
            so = scaled.get(name)
            assert so is not None, f"{name}: a consumer needs its own KEDA ScaledObject"
            assert so["spec"]["scaleTargetRef"]["name"] == name
            assert "replicas" not in dep["spec"], f"{name}: KEDA owns replicas"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_consumers_scale_on_their_own_queues(overlay: str) -> None:
    objs = render(overlay)
    owner: dict[str, str] = {}
    for name, so in of_kind(objs, "ScaledObject").items():
        service = name.removeprefix("pm-").split("-")[0]
        for trig in so["spec"]["triggers"]:
            assert trig["type"] == "rabbitmq", name
            assert trig["authenticationRef"]["name"] in of_kind(objs, "TriggerAuthentication")
            queue = trig["metadata"]["queueName"]
            assert queue.startswith(f"{service}."), f"{name} scales on another service's {queue}"
            assert queue not in owner, f"{queue} scales both {owner[queue]} and {name}"
            owner[queue] = name
    for service, process in DECLARED:
        if process in NON_CONSUMERS:
            continue
        missing = subscribed_queues(service) - set(owner)
        assert not missing, f"{service}: queues consumed in code but not scaled on: {missing}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_periods_cover_the_shutdown_the_code_performs(overlay: str) -> None:
    consumer_stop = EventBus(service="x", amqp_url="amqp://127.0.0.1/").broker.config
    for (_, process), dep in deployments_by_process(overlay).items():
        spec = pod_spec(dep)
        grace = spec["terminationGracePeriodSeconds"]
        if process == "api":
            pre_stop = app_container(dep)["lifecycle"]["preStop"]["sleep"]["seconds"]
            assert grace > pre_stop + HTTP_DRAIN_SECONDS, dep["metadata"]["name"]
        elif process not in NON_CONSUMERS:
            assert grace > consumer_stop.graceful_timeout, dep["metadata"]["name"]


def test_the_webhooks_worker_waits_for_attempts_in_flight() -> None:
    from services.webhooks.settings import WebhooksSettings

    dep = of_kind(render("prod"), "Deployment")["pm-webhooks-worker"]
    settings = WebhooksSettings()
    # Fan-out consumer stop, then Dispatcher.stop's wait for attempts in flight.
    needed = 25 + settings.webhooks_attempt_timeout_seconds + 5
    assert pod_spec(dep)["terminationGracePeriodSeconds"] > needed
