"""The gateway's logs on standard output: one access line per request, and everything else.

``[log] format = "json"`` (the default of ``bff serve``) writes one JSON object per line, marked
``"log": "access"`` for request lines and ``"log": "app"`` for the rest, so that a collector can
route them (audit events, when they go to stdout, are marked ``"log": "audit"``). ``"text"`` (the
default of ``bff dev``) writes the same facts for a person at a terminal. Either way a value that
came from outside (a header, a claim, a path segment) cannot start a new line or forge a field:
JSON escapes it, and the text form quotes anything outside plain printable ASCII.

Records logged while a request is answered carry its ``request_id`` and ``trace_id``.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, Literal

import msgspec

from . import context

ACCESS_LOGGER = "bff.access"
_access = logging.getLogger(ACCESS_LOGGER)
_encode = msgspec.json.Encoder().encode
_PLAIN = re.compile(r"[!-~]+", re.ASCII)


def rfc3339(epoch: float) -> str:
    """UTC with milliseconds: ``2026-12-02T12:47:53.123Z``."""
    whole = int(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + (
        f".{int((epoch - whole) * 1000):03d}Z"
    )


def access(fields: dict[str, Any]) -> None:
    """Log one request (the fields are those of the access line; see ``README.md``)."""
    if _access.isEnabledFor(logging.INFO):
        _access.info("", extra={"access": fields})


def access_enabled() -> bool:
    return _access.isEnabledFor(logging.INFO)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        head = {"time": rfc3339(record.created), "level": record.levelname.lower()}
        fields: dict[str, Any] | None = getattr(record, "access", None)
        if fields is not None:
            return _encode({**head, "log": "access", **fields}).decode()
        line: dict[str, Any] = {
            **head,
            "log": "app",
            "logger": record.name,
            "message": record.getMessage(),
        }
        request = context.current()
        if request is not None:
            line["request_id"] = request.request_id
            line["trace_id"] = request.trace_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _encode(line).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        head = f"{rfc3339(record.created)} {record.levelname:<7}"
        fields: dict[str, Any] | None = getattr(record, "access", None)
        if fields is not None:
            return f"{head} {_text_access(fields)}"
        # A message may quote what a caller sent: its line breaks are shown, not obeyed.
        message = record.getMessage().replace("\r", "\\r").replace("\n", "\\n")
        line = f"{head} {record.name}: {message}"
        request = context.current()
        if request is not None:
            line += f" request_id={request.request_id}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text(value: object) -> str:
    if value is None:
        return "-"
    text = str(value)
    return text if _PLAIN.fullmatch(text) else _encode(text).decode()


def _text_access(f: dict[str, Any]) -> str:
    return (
        f"{_text(f['method'])} {_text(f['route'])} {f['status']} {f['duration_ms']}ms "
        f"upstream={f['upstream_ms']}ms/{f['upstream_calls']} retries={f['retries']} "
        f"cache={f['cache']} tenant={_text(f['tenant_id'])} cluster={_text(f['cluster_id'])} "
        f"sub={_text(f['sub'])} request_id={f['request_id']} trace_id={f['trace_id']}"
    )


def configure(format: Literal["json", "text"], level: str, *, access: bool = True) -> None:
    """Send every record to stdout in ``format``; uvicorn's own access log stays off."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request at INFO; the access line already says what went out.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # The access line does not depend on the level of the other records: on or off.
    _access.setLevel(logging.INFO if access else logging.CRITICAL + 1)
