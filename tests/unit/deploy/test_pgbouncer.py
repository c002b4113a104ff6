"""deploy/k8s/pgbouncer renders, every object validates strictly, and the pooler is the one
docs/operations.md counts on: transaction mode, prepared statements kept (asyncpg), the
pools' startup parameters tracked, server connections bounded."""

from __future__ import annotations

import configparser
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.unit.deploy.manifests import (
    K8S,
    OVERLAYS,
    configmap_env,
    is_third_party,
    kubectl,
    of_kind,
    pod_spec,
    render_all,
)
from tests.unit.deploy.test_k8s_render import K8S_VERSIONS


def _render() -> list[dict[str, object]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(K8S / "pgbouncer")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_pgbouncer_objects_validate_strictly(version: str) -> None:
    objs = _render()
    assert {o["kind"] for o in objs} >= {"Deployment", "Service", "ConfigMap", "NetworkPolicy"}
    for obj in objs:
        kubernetes_validate.validate(obj, version, strict=True)


def test_pgbouncer_pools_transactions_and_bounds_server_connections() -> None:
    ini = configparser.ConfigParser(inline_comment_prefixes=(";",))
    ini.read(K8S / "pgbouncer" / "pgbouncer.ini")
    conf = ini["pgbouncer"]
    assert conf["pool_mode"] == "transaction"
    assert int(conf["max_prepared_statements"]) > 0  # asyncpg's statement cache
    assert "search_path" in conf["track_extra_parameters"]
    assert int(conf["max_db_connections"]) == 60  # docs/operations.md's arithmetic uses it
    configmap = next(o for o in _render() if o["kind"] == "ConfigMap")
    assert "pool_mode = transaction" in configmap["data"]["pgbouncer.ini"]  # type: ignore[index]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_run_pgbouncer_and_keep_session_work_direct(overlay: str) -> None:
    """Each overlay deploys the pooler, and every service with a database also gets the
    direct (session) DSN its relay's LISTEN and its `migrate` advisory lock need."""
    objs = render_all(overlay)
    pooler = [o for o in objs if is_third_party(o)]
    assert {(o["kind"], o["metadata"]["name"]) for o in pooler} >= {
        ("Deployment", "pm-pgbouncer"),
        ("Service", "pm-pgbouncer"),
    }
    relays = {
        d["metadata"]["labels"]["penguinmails.io/service"]: d
        for d in of_kind(objs, "Deployment").values()
        if d["metadata"].get("labels", {}).get("penguinmails.io/process") == "relay"
    }
    assert set(relays) == {"keys", "campaigns", "delivery", "webhooks", "billing", "inbox"}
    for service, relay in relays.items():
        env = configmap_env(objs, pod_spec(relay)["containers"][0])
        assert env["PM_DATABASE_URL"] == f"vault:secret/{service}/database#url"
        assert env["PM_DATABASE_DIRECT_URL"] == f"vault:secret/{service}/database#direct_url"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_every_platform_pod_reach_pgbouncer(overlay: str) -> None:
    """Default deny both ways: platform pods may open 6432 to PgBouncer's pods, and PgBouncer
    accepts from every platform pod (not only from its own pods)."""
    objs = render_all(overlay)
    policies = of_kind(objs, "NetworkPolicy")
    pooler_labels = next(
        o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "pm-pgbouncer"
    )["spec"]["template"]["metadata"]["labels"]
    a_platform_pod = {
        "app.kubernetes.io/part-of": "penguinmails",
        "penguinmails.io/service": "keys",
    }

    def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())

    egress_ok = any(
        selects(p["spec"]["podSelector"], a_platform_pod)
        and any(
            any(
                selects(peer.get("podSelector", {"matchLabels": {"-": "-"}}), pooler_labels)
                for peer in rule.get("to", [])
            )
            and any(port["port"] == 6432 for port in rule.get("ports", []))
            for rule in p["spec"].get("egress", [])
        )
        for p in policies.values()
    )
    assert egress_ok, "no NetworkPolicy lets platform pods connect to pm-pgbouncer:6432"
    ingress = policies["pm-pgbouncer"]["spec"]
    assert selects(ingress["podSelector"], pooler_labels)
    assert any(
        any(selects(peer["podSelector"], a_platform_pod) for peer in rule["from"])
        for rule in ingress["ingress"]
    ), "PgBouncer must accept connections from every platform pod"
