"""CSRF and origin checks for calls authenticated by the session cookie.

A browser attaches the cookie to any request to our origin, including ones a hostile page starts.
So a cookie-authenticated call must also prove it comes from our own page's script: every call
carries ``X-CSRF: 1`` (a custom header no cross-site form or simple request can set), and every
unsafe one names an allowed ``Origin`` (or ``Sec-Fetch-Site: same-origin``) and sends JSON. Fetch
Metadata is a second line behind the origin: a browser that says ``Sec-Fetch-Site: cross-site``
is refused whatever the ``Origin``. Bearer-token calls carry no ambient credential and need none
of this.
"""

from __future__ import annotations

from starlette.requests import Request

from ..http import ContentType
from ..problems import ProblemError

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _csrf_failed(detail: str) -> ProblemError:
    return ProblemError(403, "csrf-check-failed", detail)


def check_csrf(request: Request, allowed_origins: frozenset[str]) -> None:
    """Raise 403 ``csrf-check-failed`` unless the call comes from our own page's script."""
    if request.headers.get("x-csrf") != "1":
        raise _csrf_failed("Send the X-CSRF: 1 header with every API call.")
    if request.method in SAFE_METHODS:
        return
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise _csrf_failed("Changes from another site are not accepted.")
    origin = request.headers.get("origin")
    if origin is not None:
        if origin.lower() not in allowed_origins:
            raise _csrf_failed("This origin may not make changes.")
    elif request.headers.get("sec-fetch-site") != "same-origin":
        raise _csrf_failed("Changes need an Origin header from the dashboard.")
    content_type = request.headers.get("content-type")
    has_body = request.headers.get("content-length", "0") != "0" or (
        "transfer-encoding" in request.headers
    )
    # A JSON type is one no cross-site form can send; the charset is the body reader's concern.
    if (content_type is not None or has_body) and not ContentType(content_type).is_json_media:
        raise _csrf_failed("Changes must be sent as application/json.")
