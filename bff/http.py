"""HTTP details every part of the gateway reads the same way, written once.

The handler type; a ``Content-Type`` taken apart (media type and charset) and what counts as
JSON; a body read up to a limit; a header's plain decimal; and the UTC timestamps that answers,
audit events and log lines carry.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

Handler = Callable[[Request], Awaitable[Response]]
"""A Starlette endpoint."""

_JSON_MEDIA = re.compile(r"application/(?:[a-z0-9.+-]+\+)?json")


class ContentType:
    """A ``Content-Type`` value: its media type (lower case, no parameters) and its charsets."""

    __slots__ = ("charsets", "media")

    def __init__(self, value: str | None) -> None:
        media, *params = (value or "").split(";")
        self.media = media.strip().lower()
        self.charsets = [
            value.strip().strip('"').lower()
            for name, _, value in (param.partition("=") for param in params)
            if name.strip().lower() == "charset"
        ]

    @property
    def is_json_media(self) -> bool:
        """``application/json`` or a ``+json`` type (RFC 6839)."""
        return bool(_JSON_MEDIA.fullmatch(self.media))

    @property
    def is_json(self) -> bool:
        """A JSON media type, in UTF-8 if a charset is named: what the API reads."""
        return self.is_json_media and self.charsets in ([], ["utf-8"])


def decimal(text: str, *, cap: int) -> int | None:
    """``text`` as a plain ASCII decimal, or None; any larger value comes back as ``cap``."""
    # isdigit() alone accepts "²", which int() refuses; int() also refuses over 4300 digits.
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0")
    if len(significant) > len(str(cap)):
        return cap
    return min(int(significant or "0"), cap)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request body, or None once it is (or says it will be) longer than ``limit`` bytes."""
    declared = decimal(request.headers.get("content-length", ""), cap=limit + 1)
    if declared is not None and declared > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


_second = -1
_second_text = ""


def rfc3339(epoch: float, *, millis: bool = True) -> str:
    """UTC: ``2026-12-02T12:47:53.123Z``, or ``2026-12-02T12:47:53Z`` without ``millis``."""
    global _second, _second_text
    whole = int(epoch)
    if whole != _second:  # one strftime per second, not per log line
        _second, _second_text = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    if not millis:
        return f"{_second_text}Z"
    return f"{_second_text}.{int((epoch - whole) * 1000):03d}Z"
