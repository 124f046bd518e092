"""The web UI's HTTP side: ``/ui/`` serves the static files in ``agent/ui/``, ``/`` redirects.

Owns which files are served, their content types and caching headers. The files are read once
when the router is built (they ship inside the package, see pyproject's package-data) and are
served from memory; only names found in that directory exist, so no request path ever reaches
the file system. Caching: there is no build step that would put a hash in each file name, so
every file is sent with ``Cache-Control: no-cache`` and an ``ETag``; the browser revalidates and
gets ``304 Not Modified`` while the agent's copy is unchanged.

As Consul: ``GET /`` answers ``301`` to ``/ui/`` when the UI is on, and a plain-text hint when
it is off (``-ui=false`` / ``ui_config { enabled = false }``); ``/ui/...`` is then 404.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from agent.http.routing import Router
from agent.http.types import Request, Response

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
UI_PATH = "/ui/"
DISABLED_TEXT = ("rumor agent: UI disabled. To enable, set ui_config.enabled=true in the agent "
                 "configuration (or pass -ui=true) and restart.")

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}
# The page loads nothing from elsewhere and runs no inline script: say so to the browser.
SECURITY_HEADERS = [
    ("Content-Security-Policy",
     "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
     "frame-ancestors 'none'; form-action 'self'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load_files(directory: Path = UI_DIR) -> dict[str, StaticFile]:
    """Every servable file under ``directory`` by its path relative to it ("app.js")."""
    files: dict[str, StaticFile] = {}
    for path in sorted(directory.rglob("*")):
        content_type = CONTENT_TYPES.get(path.suffix)
        if not path.is_file() or content_type is None:
            continue
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        files[path.relative_to(directory).as_posix()] = StaticFile(body, content_type, etag)
    if "index.html" not in files:
        raise FileNotFoundError(f"the web UI's index.html is missing from {directory}")
    return files


def _not_modified(req: Request, etag: str) -> bool:
    header = req.header("if-none-match")
    if header is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return etag in tags or "*" in tags


def add_routes(router: Router, enabled: bool, files: dict[str, StaticFile] | None = None) -> None:
    """Route ``/``, and with the UI on ``/ui`` and ``/ui/{file}``, into ``router``."""
    if not enabled:
        async def disabled(req: Request) -> Response:
            return Response.text(DISABLED_TEXT, 200)

        router.add("GET", "/", disabled)
        return
    table = load_files() if files is None else files

    async def index(req: Request) -> Response:
        return Response(301, b"", [("Location", UI_PATH)])

    async def static(req: Request) -> Response:
        name = req.params.get("file", "") or "index.html"
        found = table.get(name)
        if found is None:
            return Response.text("404 page not found", 404)
        headers = [("ETag", found.etag), ("Cache-Control", "no-cache"), *SECURITY_HEADERS]
        if _not_modified(req, found.etag):
            return Response(304, b"", headers)
        return Response(200, found.body, [("Content-Type", found.content_type), *headers])

    router.add("GET", "/", index)
    router.add("GET", "/ui", index)
    router.add("GET", "/ui/{file...}", static)
