"""Both overlays render with `kubectl kustomize`, and every rendered object is valid: core
objects strictly against the Kubernetes OpenAPI schemas (oldest supported and newest
release), CRD objects (KEDA, Prometheus Operator) against deploy/k8s/schemas/."""

from __future__ import annotations

import json

import jsonschema
import kubernetes_validate
import pytest

from tests.unit.deploy.manifests import K8S, OVERLAYS, Obj, render, render_all

# Oldest release the manifests target (preStop `sleep` is on by default from 1.30) and the
# newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CRD_SCHEMAS = {path.stem: json.loads(path.read_text()) for path in (K8S / "schemas").glob("*.json")}


def crd_schema(obj: Obj) -> dict[str, object] | None:
    group = obj["apiVersion"].replace("/", "-")
    return CRD_SCHEMAS.get(f"{obj['kind'].lower()}-{group}")


def is_crd(obj: Obj) -> bool:
    group = obj["apiVersion"].partition("/")[0]
    return "." in group and not group.endswith(".k8s.io")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_objects(overlay: str) -> None:
    kinds = {o["kind"] for o in render_all(overlay)}
    assert {"Deployment", "Service", "ConfigMap", "NetworkPolicy", "Job"} <= kinds


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_objects_validate_strictly(overlay: str, version: str) -> None:
    errors = []
    for obj in render_all(overlay):
        if is_crd(obj):
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_crd_objects_validate_against_shipped_schemas(overlay: str) -> None:
    crds = [o for o in render_all(overlay) if is_crd(o)]
    assert crds, "expected KEDA objects at least"
    for obj in crds:
        schema = crd_schema(obj)
        assert schema is not None, f"no schema in deploy/k8s/schemas for {obj['apiVersion']}"
        jsonschema.validate(obj, schema)


def test_the_validators_reject_broken_objects() -> None:
    """The checks above can fail: a typo'd field and a ScaledObject without triggers."""
    deployment = next(o for o in render("prod") if o["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
    scaled = next(o for o in render("prod") if o["kind"] == "ScaledObject")
    broken = json.loads(json.dumps(scaled))
    del broken["spec"]["triggers"]
    schema = crd_schema(scaled)
    assert schema is not None
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_no_secret_objects_are_committed() -> None:
    for overlay in OVERLAYS:
        assert not [o for o in render_all(overlay) if o["kind"] == "Secret"], (
            "secrets come from Vault, never from a Secret with values in git"
        )
