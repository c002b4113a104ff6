"""Configuration and network rules of the manifests: settings the code knows, secrets only
as `vault:` references the service's own Vault policy can read, and only the gateway
reachable from outside."""

from __future__ import annotations

import fnmatch
import importlib
import re

import pytest
from pydantic import SecretStr

from libs.common.settings import SERVICE_NAMES, ServiceSettings
from libs.common.vault import VaultRef
from tests.unit.deploy.manifests import (
    OVERLAYS,
    REPO,
    Obj,
    configmap_env,
    has_main,
    of_kind,
    pod_spec,
    render,
)

# Settings whose value is a credential or carries one (a DSN or URL with a password).
SECRET_HINT = re.compile(r"(key|secret|token|password|database_url|amqp_url|redis_url)$")
POLICY_PATH = re.compile(r'^path\s+"([^"]+)"\s*\{[^}]*capabilities\s*=\s*\[([^\]]*)\]', re.M)


def settings_class(service: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"services.{service}.settings")
    found: type[ServiceSettings] = next(
        v
        for k, v in vars(module).items()
        if k.endswith("Settings") and getattr(v, "__module__", "") == module.__name__
    )
    return found


def readable_paths(service: str) -> list[str]:
    hcl = (REPO / "deploy" / "vault" / "policies" / f"{service}.hcl").read_text()
    return [p for p, caps in POLICY_PATH.findall(hcl) if '"read"' in caps]


def policy_allows_read(service: str, ref: VaultRef) -> bool:
    api_path = f"{ref.mount}/data/{ref.path}"  # KV v2
    return any(fnmatch.fnmatchcase(api_path, pattern) for pattern in readable_paths(service))


def service_containers(overlay: str) -> list[tuple[str, Obj, Obj]]:
    """(service, workload, container) for every container of every Deployment and Job."""
    objs = render(overlay)
    out = []
    for obj in [*of_kind(objs, "Deployment").values(), *of_kind(objs, "Job").values()]:
        service = obj["metadata"]["labels"]["penguinmails.io/service"]
        spec = pod_spec(obj)
        out += [(service, obj, c) for c in [*spec["containers"], *spec.get("initContainers", [])]]
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_configured_setting_exists_in_the_service_settings(overlay: str) -> None:
    for service, obj, container in service_containers(overlay):
        if not has_main(service):
            continue
        fields = settings_class(service).model_fields
        for key in configmap_env(render(overlay), container):
            assert key.startswith("PM_"), f"{obj['metadata']['name']}: {key} is not a setting"
            field = key.removeprefix("PM_").lower()
            assert field in fields, (
                f"{obj['metadata']['name']}: {key} is not a setting of {service} (typo?)"
            )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_are_vault_references_the_service_may_read(overlay: str) -> None:
    for service, obj, container in service_containers(overlay):
        name = obj["metadata"]["name"]
        fields = settings_class(service).model_fields
        for key, value in configmap_env(render(overlay), container).items():
            field = key.removeprefix("PM_").lower()
            annotation = str(fields[field].annotation)
            if SECRET_HINT.search(field) or SecretStr.__name__ in annotation:
                assert value.startswith("vault:"), f"{name}: {key} must be a vault: reference"
            if value.startswith("vault:"):
                ref = VaultRef.parse(value)
                assert policy_allows_read(service, ref), (
                    f"{name}: {key}={value} is outside deploy/vault/policies/{service}.hcl"
                )


def test_the_policy_check_can_fail() -> None:
    assert policy_allows_read("keys", VaultRef.parse("vault:secret/keys/database#url"))
    assert not policy_allows_read("keys", VaultRef.parse("vault:secret/billing/database#url"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_service_process_has_its_database_and_broker(overlay: str) -> None:
    for service, obj, container in service_containers(overlay):
        env = configmap_env(render(overlay), container)
        assert env["PM_HTTP_PORT"] == "8080" and env["PM_HTTP_HOST"] == "0.0.0.0"
        assert env["PM_AMQP_URL"] == f"vault:secret/{service}/rabbitmq#url", obj["metadata"]
        if service != "gateway":
            assert env["PM_DATABASE_URL"] == f"vault:secret/{service}/database#url"
        assert env["PM_OTEL_EXPORTER_OTLP_ENDPOINT"].startswith("http")


def test_overlays_set_their_environment() -> None:
    expected = {"dev": "dev", "prod": "production"}
    for overlay, environment in expected.items():
        for _, _, container in service_containers(overlay):
            assert configmap_env(render(overlay), container)["PM_ENVIRONMENT"] == environment


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_reachable_from_outside(overlay: str) -> None:
    objs = render(overlay)
    for name, svc in of_kind(objs, "Service").items():
        assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", name
    backends = {
        p["backend"]["service"]["name"]
        for ing in of_kind(objs, "Ingress").values()
        for rule in ing["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert backends == {"pm-gateway-api"}
    paths = {
        p["path"]
        for ing in of_kind(objs, "Ingress").values()
        for rule in ing["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    # The public API, its reference (Swagger UI and the document), ESP/Stripe hooks, links.
    assert paths == {"/api/v1", "/api/docs", "/api/openapi.json", "/hooks", "/t", "/unsubscribe"}
    policies = of_kind(objs, "NetworkPolicy")
    deny = policies["pm-default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    for name, pol in policies.items():
        for rule in pol["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                ns = peer.get("namespaceSelector", {}).get("matchLabels", {})
                if ns.get("kubernetes.io/metadata.name") == "ingress-nginx":
                    selected = pol["spec"]["podSelector"]["matchLabels"]
                    assert selected["penguinmails.io/service"] == "gateway", name
                assert "ipBlock" not in peer, f"{name}: ingress from addresses"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_service_apis_accept_only_the_gateway(overlay: str) -> None:
    pol = of_kind(render(overlay), "NetworkPolicy")["pm-service-apis-from-gateway"]["spec"]
    peers = [peer for rule in pol["ingress"] for peer in rule["from"]]
    assert peers == [
        {"podSelector": {"matchLabels": {"penguinmails.io/service": "gateway",
                                         "penguinmails.io/process": "api"}}}
    ]  # fmt: skip


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_scraped_and_traced(overlay: str) -> None:
    objs = render(overlay)
    for name, dep in of_kind(objs, "Deployment").items():
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/path"] == "/metrics", name
        assert annotations["vault.hashicorp.com/agent-inject"] == "true", name
        service = dep["metadata"]["labels"]["penguinmails.io/service"]
        assert annotations["vault.hashicorp.com/role"] == f"pm-{service}-bootstrap"
        assert pod_spec(dep)["serviceAccountName"] == f"pm-{service}"
    if overlay == "prod":
        monitor = of_kind(objs, "PodMonitor")["penguinmails"]["spec"]
        assert monitor["selector"]["matchLabels"] == {"app.kubernetes.io/part-of": "penguinmails"}


def test_every_service_has_a_service_account() -> None:
    accounts = of_kind(render("prod"), "ServiceAccount")
    assert {f"pm-{s}" for s in SERVICE_NAMES} <= set(accounts)
