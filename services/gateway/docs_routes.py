"""The interactive API reference on the gateway: `GET /api/docs` (Swagger UI, served from the
files of the `swagger-ui-bundle` package, so it works offline and behind a strict CSP: no CDN,
no inline script) and `GET /api/openapi.json` (the committed public document). No
authentication: the reference is public; "Try it out" calls the API with the caller's key."""

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
  <title>PenguinMails API reference</title>
  <link rel="stylesheet" href="/api/docs/assets/swagger-ui.css">
  <link rel="icon" type="image/png" href="/api/docs/assets/favicon-32x32.png" sizes="32x32">
</head>
<body>
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
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout",
  });
};
"""
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'"
)
_ASSET_CACHE = "public, max-age=86400"


def docs_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/api/docs")
    async def swagger_ui() -> HTMLResponse:
        return HTMLResponse(_PAGE, headers={"Content-Security-Policy": _CSP})

    @router.get("/api/docs/assets/initializer.js")
    async def initializer() -> Response:
        return Response(_INITIALIZER, media_type="text/javascript; charset=utf-8")

    @router.get("/api/docs/assets/{name}")
    async def asset(name: str) -> FileResponse:
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
