"""Pages for people: what a browser sees when a sign-in it navigated to fails.

``/auth/login`` and ``/auth/callback`` are navigations: the user clicked "Sign in", or the
provider sent the browser back. When one of them fails, a browser that navigated (its
``Sec-Fetch-Mode: navigate``, or, from a browser too old to say, an ``Accept`` that asks for HTML)
gets a small page that says what happened in plain words, with the request id to quote and a way
back; a script that calls the same route (``fetch``) keeps problem+json. The page's one style
sheet is served from here too (:data:`routes`): nothing is loaded from elsewhere.
"""

from __future__ import annotations

from functools import cache
from html import escape
from importlib import resources
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..paths import API_PREFIX, CALLBACK_PATH, LOGIN_PATH
from ..problems import TITLES, ProblemError
from .return_to import safe_return_to

__all__ = ["PAGE_CSS_PATH", "failure_page", "routes", "wants_page"]

PAGE_CSS_PATH = API_PREFIX + "/auth/page.css"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)
_NAVIGATIONS = frozenset({LOGIN_PATH, CALLBACK_PATH})
_HEADINGS = {
    "login-failed": "Sign-in failed",
    "upstream-unavailable": "Sign-in is unavailable right now",
    "service-unavailable": "Sign-in is unavailable right now",
    "rate-limited": "Too many sign-ins from here",
    "validation-error": "This sign-in link is not valid",
}


def wants_page(request: Request) -> bool:
    """A browser's navigation to a sign-in route, rather than a script's call."""
    if request.method != "GET" or request.url.path not in _NAVIGATIONS:
        return False
    mode = request.headers.get("sec-fetch-mode")
    if mode is not None:
        return mode == "navigate"
    return "text/html" in request.headers.get("accept", "")


def failure_page(problem: ProblemError, request: Request, request_id: str | None) -> Response:
    """The page for a failed sign-in: the problem in plain words, the request id, a way back."""
    return_to = "/"
    if request.url.path == LOGIN_PATH:
        return_to = safe_return_to(request.query_params.get("returnTo"))
    try_again = f"{LOGIN_PATH}?{urlencode({'returnTo': return_to})}"
    heading = _HEADINGS.get(problem.slug, TITLES.get(problem.slug, "Something went wrong"))
    wait = problem.headers.get("Retry-After")
    later = f" Wait {escape(wait)} seconds before you try again." if wait else ""
    reference = (
        f'<p class="meta">If it keeps happening, quote this request id: '
        f"<code>{escape(request_id)}</code></p>"
        if request_id
        else ""
    )
    body = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(heading)} · Flows</title>
<link rel="stylesheet" href="{PAGE_CSS_PATH}">
</head>
<body>
<main>
<h1>{escape(heading)}</h1>
<p>{escape(problem.detail)}{later}</p>
<p class="actions"><a class="button" href="{escape(try_again)}">Try again</a>
<a href="{escape(return_to)}">Back to the dashboard</a></p>
{reference}
</main>
</body>
</html>
"""
    headers = {**problem.headers, "Content-Security-Policy": CONTENT_SECURITY_POLICY}
    headers.pop("WWW-Authenticate", None)
    return Response(
        body, status_code=problem.status, headers=headers, media_type="text/html; charset=utf-8"
    )


@cache
def _style_sheet() -> bytes:
    return resources.files("bff").joinpath("static", "page.css").read_bytes()


async def _page_css(request: Request) -> Response:
    return Response(
        _style_sheet(),
        media_type="text/css; charset=utf-8",
        headers={"Cache-Control": "public, max-age=3600"},
    )


routes = [Route("/auth/page.css", _page_css, methods=["GET"])]
"""``GET /auth/page.css``, to mount under :data:`~bff.paths.API_PREFIX`."""
