"""The dashboard's built-in lists match the platform's catalogs, and the gateway module that
serves it answers the app, its assets and its headers as documented."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from libs.common.http import install_error_handlers
from libs.common.principal import SCOPES
from services.gateway.dashboard import CONTENT_SECURITY_POLICY, dashboard_router
from services.webhooks.service import WEBHOOK_EVENT_TYPES

CATALOG = Path(__file__).resolve().parents[3] / "web" / "dashboard" / "src" / "catalog.ts"


def _list(name: str) -> list[str]:
    text = CATALOG.read_text()
    block = re.search(rf"export const {name}\b[^=]*= \[(.*?)\]", text, re.S)
    assert block, name
    return re.findall(r'"([^"]+)"', block.group(1))


def test_fallback_event_types_equal_the_webhooks_catalog() -> None:
    assert _list("EVENT_TYPES") == list(WEBHOOK_EVENT_TYPES)


def test_scopes_equal_the_scope_catalog() -> None:
    assert _list("SCOPES") == list(SCOPES)


def _app(dist: Path) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(dashboard_router(dist))
    return TestClient(app)


def test_serves_the_app_assets_and_fallback(tmp_path: Path) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text('<div id="root"></div>')
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log(1)")
    client = _app(tmp_path)

    assert client.get("/dashboard", follow_redirects=False).headers["location"] == "/dashboard/"
    for path in ("/dashboard/", "/dashboard/settings/webhooks/whe_1", "/dashboard/index.html"):
        page = client.get(path)
        assert page.status_code == 200 and 'id="root"' in page.text
        assert page.headers["cache-control"] == "no-cache"
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert page.headers["x-frame-options"] == "DENY"
    js = client.get("/dashboard/assets/index-abc123.js")
    assert js.text == "console.log(1)"
    assert js.headers["content-encoding"] == "gzip"  # TestClient asks for gzip and inflates
    assert js.headers["vary"] == "Accept-Encoding"
    plain = client.get("/dashboard/assets/index-abc123.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.text == "console.log(1)"
    assert js.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert js.headers["content-type"].startswith("text/javascript")
    # A path outside the listed files never reaches the filesystem: it gets the app.
    escape = client.get("/dashboard/assets/..%2F..%2Fetc%2Fpasswd")
    assert 'id="root"' in escape.text


def test_not_built_is_a_503_in_words(tmp_path: Path) -> None:
    r = _app(tmp_path / "missing").get("/dashboard/settings/billing")
    assert r.status_code == 503
    assert "make dashboard" in r.json()["error"]["message"]


def test_a_rebuild_under_a_running_gateway_is_served(tmp_path: Path) -> None:
    """`make up` rebuilds the app while the gateway runs: the gateway served the start-up
    build (gzipped in memory) until restarted, so deep links loaded the removed assets."""
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text('<script src="assets/index-old.js"></script>')
    (tmp_path / "assets" / "index-old.js").write_text("old()")
    client = _app(tmp_path)
    assert "index-old.js" in client.get("/dashboard/settings/webhooks").text

    (tmp_path / "assets" / "index-old.js").unlink()  # Vite empties dist, writes the new build
    (tmp_path / "assets" / "index-new.js").write_text("fresh()")
    (tmp_path / "index.html").write_text('<script src="assets/index-new.js"></script>')
    (tmp_path / ".build-stamp").touch()  # build.sh, once Vite is done

    assert "index-new.js" in client.get("/dashboard/settings/webhooks").text
    assert client.get("/dashboard/assets/index-new.js").text == "fresh()"
