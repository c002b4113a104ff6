"""The interactive API reference on the gateway: `GET /api/docs` (Swagger UI, served from the
files of the `swagger-ui-bundle` package, so it works offline and behind a strict CSP: no CDN,
no inline script) and `GET /api/openapi.json` (the committed public document). No
authentication: the reference is public; "Try it out" calls the API with the caller's key, on
the host that served the page (the document's first server is `/`), or on the public hosts."""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from fastapi import APIRouter
from starlette.responses import FileResponse, HTMLResponse, Response

from libs.common.http import NotFound
from services.gateway.openapi import spec_json

ASSETS = Path(swagger_ui_bundle.swagger_ui_path)
# Only these files are served: a fixed list, so no request path ever reaches the filesystem.
ASSET_TYPES = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui-standalone-preset.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>PenguinMails API reference</title>
  <link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">
  <link rel="stylesheet" href="/api/docs/assets/penguinmails.css">
  <link rel="icon" type="image/svg+xml" href="/api/docs/assets/penguinmails.svg">
</head>
<body>
  <header class="pm-brand">
    <img src="/api/docs/assets/penguinmails.svg" alt="" width="28" height="28">
    <span>PenguinMails</span> <small>API reference</small>
  </header>
  <div id="swagger-ui"></div>
  <script src="/api/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/api/docs/assets/swagger-ui-standalone-preset.js"></script>
  <script src="/api/docs/assets/initializer.js"></script>
</body>
</html>
"""
_INITIALIZER = """window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: false,
    // No call to validator.swagger.io (it would leak the document and break the CSP).
    validatorUrl: null,
    displayRequestDuration: true,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    // BaseLayout: no Swagger top bar (its URL box and logo); the page has its own header.
    layout: "BaseLayout",
  });
};
"""
# "Try it out" may call this host (server `/`) or the public hosts the document lists.
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self' https://api.penguinmails.com "
    "https://sandbox-api.penguinmails.com; font-src 'self'"
)
_BRAND_CSS = """.pm-brand { display: flex; align-items: center; gap: .5rem; padding: .75rem 1.5rem;
  background: #0b1f3a; color: #fff; font: 600 1.1rem/1.2 system-ui, sans-serif; }
.pm-brand small { font-weight: 400; opacity: .8; }
.swagger-ui .info .title small.version-stamp { background: #0b7ac2; }
"""
_LOGO_SVG = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32">
<ellipse cx="16" cy="18" rx="11" ry="13" fill="#0b1f3a"/>
<ellipse cx="16" cy="20" rx="7" ry="9" fill="#fff"/>
<circle cx="13" cy="11" r="1.6" fill="#fff"/><circle cx="19" cy="11" r="1.6" fill="#fff"/>
<path d="M14 14h4l-2 3z" fill="#f5a623"/></svg>
"""
# Served from memory, like the initializer: our own small files beside the bundle's.
_OWN_ASSETS = {
    "initializer.js": ("text/javascript; charset=utf-8", _INITIALIZER),
    "penguinmails.css": ("text/css; charset=utf-8", _BRAND_CSS),
    "penguinmails.svg": ("image/svg+xml", _LOGO_SVG),
}
_ASSET_CACHE = "public, max-age=86400"


def docs_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/api/docs")
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(_PAGE, headers={"Content-Security-Policy": _CSP})

    @router.get("/api/docs/assets/{name}")
    async def asset(name: str) -> Response:
        own = _OWN_ASSETS.get(name)
        if own is not None:
            return Response(own[1], media_type=own[0], headers={"Cache-Control": _ASSET_CACHE})
        media_type = ASSET_TYPES.get(name)
        if media_type is None:
            raise NotFound("No such documentation asset.")
        return FileResponse(
            ASSETS / name, media_type=media_type, headers={"Cache-Control": _ASSET_CACHE}
        )

    @router.get("/api/openapi.json")
    async def openapi() -> Response:
        return Response(spec_json(), media_type="application/json")

    return router
