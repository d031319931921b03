"""Request ids, and the one place where errors become problem+json responses."""

from __future__ import annotations

import logging
import re
import secrets

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.problems import Problem, not_found

logger = logging.getLogger("sandbox")
request_log = logging.getLogger("sandbox.requests")

_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "DELETE")


class RequestContextMiddleware:
    """Assigns the request id, echoes it as ``X-Request-ID``, turns crashes into a 500, and logs
    one line per request with the ``traceparent`` it came with (logger ``sandbox.requests``), so
    that a trace id can be followed from the gateway's log into this one.

    A caller's ``X-Request-ID`` is kept when it is 1 to 128 characters of letters, digits, ``.``,
    ``_`` and ``-`` starting with a letter or digit; otherwise a ``req_…`` id is generated.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id_from(scope)
        scope["state"] = {**scope.get("state", {}), "request_id": request_id}
        started = False
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("unhandled error in request %s", request_id)
            if started:
                return
            problem = Problem(500, "internal-error", "The server could not complete the request.")
            await problem.response(request_id)(scope, receive, send_with_id)
        finally:
            if request_log.isEnabledFor(logging.INFO):
                request_log.info(
                    "%s %r %d request_id=%s traceparent=%s",
                    scope["method"],
                    scope["path"],
                    status,
                    request_id,
                    _header(scope, b"traceparent") or "-",
                )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            # Shown as received, but never able to start a line of its own.
            return repr(bytes(value).decode("latin-1"))[1:-1]
    return None


def _request_id_from(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = bytes(value).decode("latin-1")
            if _REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return f"req_{secrets.token_hex(12)}"


def request_id(request: Request) -> str:
    """The id assigned to ``request`` by :class:`RequestContextMiddleware`."""
    value: str = request.state.request_id
    return value


async def problem_handler(request: Request, exc: Exception) -> Response:
    """Render a raised :class:`Problem`."""
    assert isinstance(exc, Problem)
    return exc.response(request_id(request))


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Render Starlette's routing errors (404, 405) as problems."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        offered = {m.strip() for m in (exc.headers or {}).get("Allow", "").split(",")}
        # Starlette keeps methods in a set; a stable order keeps the header predictable.
        allow = ", ".join(m for m in _METHOD_ORDER if m in offered)
        problem = Problem(
            405,
            "method-not-allowed",
            f"{request.method} is not allowed here; use {allow}.",
            headers={"Allow": allow},
        )
    elif exc.status_code == 404:
        problem = not_found("No resource exists at this path.")
    else:
        problem = Problem(exc.status_code, "validation-error", str(exc.detail))
    return problem.response(request_id(request))
