"""deploy/k8s/pgbouncer renders, every object validates strictly, and the pooler is the one
docs/operations.md counts on: transaction mode, prepared statements kept (asyncpg), the
pools' startup parameters tracked, server connections bounded."""

from __future__ import annotations

import configparser
import subprocess

import kubernetes_validate
import pytest
import yaml

from tests.unit.deploy.manifests import K8S, kubectl
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
