"""The development console: one static page at ``/`` that drives the dashboard API.

The page and its script and style sheet are package data (``bff/static/``), served as they are:
no templating, no build step, nothing fetched from elsewhere. Mount :data:`routes` at the root of
the app. Each response carries its own ``Content-Security-Policy`` (the app's middleware adds a
stricter ``default-src 'none'`` only where a response has none) that lets the page load its own
script, style and data-URI images and call its own origin, and nothing else: no inline script,
no framing, no foreign form targets.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["CONTENT_SECURITY_POLICY", "routes"]

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

_ASSETS = {
    "console.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


@cache
def _asset(name: str) -> bytes:
    return resources.files("bff").joinpath("static", name).read_bytes()


def _serve(path: str, name: str) -> Route:
    media_type = _ASSETS[name]

    async def endpoint(request: Request) -> Response:
        return Response(
            _asset(name),
            media_type=media_type,
            headers={
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                # Fetched anew on every load: a restarted BFF's new console is used at once.
                "Cache-Control": "no-cache",
            },
        )

    return Route(path, endpoint, methods=["GET"], name=f"console:{name}")


routes: list[Route] = [
    _serve("/", "console.html"),
    _serve("/console/console.js", "console.js"),
    _serve("/console/console.css", "console.css"),
]
"""``GET /`` (the page), ``GET /console/console.js`` and ``GET /console/console.css``."""
