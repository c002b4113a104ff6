"""`/api/docs` and `/api/openapi.json` as the gateway mounts them: Swagger UI from local files
only (no CDN), the committed document as JSON, no path ever reaching the filesystem."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from libs.common.http import install_error_handlers
from services.gateway.docs_routes import ASSET_TYPES, docs_router


def _client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(docs_router())
    return TestClient(app)


def test_swagger_ui_uses_local_assets_only() -> None:
    client = _client()
    page = client.get("/api/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text), "external asset in the page"
    for url in re.findall(r"(?:src|href)=\"([^\"]+)\"", page.text):
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 0
    init = client.get("/api/docs/assets/initializer.js")
    assert '"/api/openapi.json"' in init.text
    assert "swagger-ui-bundle.js" in ASSET_TYPES


def test_unknown_assets_are_404_envelopes() -> None:
    client = _client()
    for name in ("index.html", "..%2F..%2Fpyproject.toml", "swagger-ui.js.map"):
        resp = client.get(f"/api/docs/assets/{name}")
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "not_found"


def test_openapi_json_is_the_committed_document(committed_spec: dict[str, Any]) -> None:
    resp = _client().get("/api/openapi.json")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == committed_spec


def test_swagger_ui_is_branded_and_never_calls_the_validator() -> None:
    client = _client()
    page = client.get("/api/docs")
    assert "PenguinMails" in page.text and "<title>PenguinMails API reference</title>" in page.text
    init = client.get("/api/docs/assets/initializer.js").text
    assert "validatorUrl: null" in init
    assert "StandaloneLayout" not in init  # no Swagger top bar
    logo = client.get("/api/docs/assets/penguinmails.svg")
    assert logo.headers["content-type"].startswith("image/svg+xml")


def test_try_it_out_works_from_any_host(committed_spec: dict[str, Any]) -> None:
    servers = [s["url"] for s in committed_spec["servers"]]
    # Relative first: the page calls the host that served it, whatever that host is.
    assert servers == ["/", "https://api.penguinmails.com", "https://sandbox-api.penguinmails.com"]
    assert all(p.startswith("/api/v1/") for p in committed_spec["paths"])
    csp = _client().get("/api/docs").headers["content-security-policy"]
    connect = next(d for d in csp.split(";") if d.strip().startswith("connect-src")).split()
    assert "'self'" in connect
    assert {"https://api.penguinmails.com", "https://sandbox-api.penguinmails.com"} <= set(connect)


def test_ingress_routes_the_reference_to_the_gateway() -> None:
    import yaml

    from scripts.docs.collect import REPO

    ingress = yaml.safe_load((REPO / "deploy/k8s/base/platform/ingress.yaml").read_text())
    paths = {
        p["path"]: p["backend"]["service"]["name"]
        for rule in ingress["spec"]["rules"]
        for p in rule["http"]["paths"]
    }
    assert paths["/api/docs"] == "pm-gateway-api"
    assert paths["/api/openapi.json"] == "pm-gateway-api"
