"""The customer dashboard on the gateway: `GET /dashboard/...` serves the built single-page
app of `web/dashboard` (`make dashboard` builds it into `web/dashboard/dist`).

Hashed assets (`/dashboard/assets/*`) are cached for a year as immutable; every other path
under `/dashboard/` answers the app's `index.html` (SPA fallback, revalidated on each load), so a
deep link such as `/dashboard/settings/billing?checkout=success` loads the app. The files are
listed once at start-up: a request path is looked up in that list and never joined to a
filesystem path. Every answer carries a strict Content-Security-Policy (scripts, styles and
API calls from this origin only, no inline script, no framing).
"""

from __future__ import annotations

import gzip
import mimetypes
from pathlib import Path

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from libs.common.http import ServiceUnavailable

DEFAULT_DIST = Path(__file__).resolve().parents[2] / "web" / "dashboard" / "dist"
PREFIX = "/dashboard"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"


# Text files are gzipped once at start-up and sent compressed to clients that accept it
# (the app's JS is ~320 kB raw, ~100 kB gzip).
COMPRESSIBLE = (".js", ".css", ".html", ".svg", ".json", ".txt")


class DashboardFiles:
    """The built app's files, keyed by their URL path below `/dashboard/`."""

    def __init__(self, dist: Path) -> None:
        self.dist = dist
        self.files: dict[str, Path] = {}
        self.gzipped: dict[str, bytes] = {}
        self._build: tuple[int | None, int | None] | None = None
        self._load()

    def _stamp(self) -> tuple[int | None, int | None]:
        """build.sh touches `.build-stamp` once Vite has written everything; index.html's
        time covers a dist built without it."""

        def mtime(name: str) -> int | None:
            try:
                return (self.dist / name).stat().st_mtime_ns
            except OSError:
                return None

        return mtime(".build-stamp"), mtime("index.html")

    def _load(self) -> None:
        """Read the build again when it changed (a rebuild under a running gateway, as `make
        up` does: files and gzipped bodies read at start-up were served stale, and a
        deep link's index.html named assets the rebuild had removed)."""
        stamp = self._stamp()
        if stamp == self._build:
            return
        files: dict[str, Path] = {}
        gzipped: dict[str, bytes] = {}
        if stamp[1] is not None:
            for path in self.dist.rglob("*"):
                if path.is_file():
                    rel = path.relative_to(self.dist).as_posix()
                    files[rel] = path
                    if path.suffix in COMPRESSIBLE:
                        gzipped[rel] = gzip.compress(path.read_bytes(), 9, mtime=0)
        self.files, self.gzipped, self._build = files, gzipped, stamp

    @property
    def built(self) -> bool:
        return "index.html" in self.files

    def response(self, rel: str, accept_encoding: str = "") -> Response:
        self._load()  # two stats per dashboard request
        if not self.built:
            raise ServiceUnavailable(
                "The dashboard is not built here; run `make dashboard` (needs Node.js 20+)."
            )
        if rel not in self.files:
            rel = "index.html"
        cache = IMMUTABLE if rel.startswith("assets/") else REVALIDATE
        path = self.files[rel]
        media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if media.startswith("text/") or media in ("application/javascript", "image/svg+xml"):
            media += "; charset=utf-8"
        headers = {"Cache-Control": cache, **SECURITY_HEADERS}
        if rel in self.gzipped:
            headers["Vary"] = "Accept-Encoding"
            if "gzip" in accept_encoding.lower():
                headers["Content-Encoding"] = "gzip"
                return Response(self.gzipped[rel], media_type=media, headers=headers)
        return FileResponse(path, media_type=media, headers=headers)


def dashboard_router(dist: Path | None = None) -> APIRouter:
    files = DashboardFiles(dist or DEFAULT_DIST)
    router = APIRouter(include_in_schema=False)

    @router.get(PREFIX)
    async def dashboard_root() -> Response:
        return RedirectResponse(PREFIX + "/", status_code=308)

    @router.get(PREFIX + "/{rel:path}")
    async def dashboard_file(rel: str, request: Request) -> Response:
        return files.response(rel, request.headers.get("accept-encoding", ""))

    return router
