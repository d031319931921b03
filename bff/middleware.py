"""Pure ASGI middleware wrapped around every request.

:class:`RequestContextMiddleware` gives each request its id (``X-Request-ID``: the caller's when
sane, else ``req_…``), refuses raw paths a URL layer could reinterpret before any routing happens,
adds the security headers, and turns anything unhandled into a 500 problem without internals.
"""

from __future__ import annotations

import logging
import re
import secrets

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .paths import API_PREFIX
from .problems import ProblemError, not_found

_TENANT_PREFIX = API_PREFIX + "/tenants/"
# The backend keeps ids of this shape too, so one id follows a call through both logs.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{7,127}")
_ID_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "cache-control": "no-store",
}

logger = logging.getLogger("bff.requests")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def request_id_of(scope: Scope) -> str | None:
    state = scope.get("state")
    return state.get("request_id") if state else None


def is_plain_api_path(raw_path: bytes) -> bool:
    """No percent-encoding, dot segments, empty segments, trailing slash or odd characters; ids
    well-formed."""
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        return False
    # A trailing slash would otherwise earn a redirect to the path without it.
    if not _PLAIN_PATH.fullmatch(path) or "//" in path or path.endswith("/"):
        return False
    segments = path.split("/")
    if any(segment in {".", ".."} for segment in segments):
        return False
    if path.startswith(_TENANT_PREFIX):
        return all(_ID_SEGMENT.fullmatch(s) for s in path[len(API_PREFIX) + 1 :].split("/"))
    return True


HSTS = "max-age=31536000; includeSubDomains"


class RequestContextMiddleware:
    """``hsts``: the app is served over https, so browsers may be told to never use http."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self.app = app
        self.headers = {**SECURITY_HEADERS, **({"strict-transport-security": HSTS} if hsts else {})}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        offered = headers.get("x-request-id", "")
        request_id = offered if _SANE_REQUEST_ID.fullmatch(offered) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                response_headers = MutableHeaders(scope=message)
                response_headers["x-request-id"] = request_id
                for name, value in self.headers.items():
                    response_headers.setdefault(name, value)
                for name in ("server", "set-cookie2", "x-powered-by"):
                    del response_headers[name]
            await send(message)

        raw_path = scope.get("raw_path") or scope["path"].encode()
        if scope["path"].startswith(API_PREFIX) and not is_plain_api_path(raw_path):
            await not_found().response(request_id)(scope, receive, send_with_headers)
            return
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            logger.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if started:
                return
            problem = ProblemError(500, "internal-error", "Something went wrong on our side.")
            await problem.response(request_id)(scope, receive, send_with_headers)
