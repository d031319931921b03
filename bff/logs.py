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

import asyncio
import atexit
import logging
import re
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec

from . import context
from .http import rfc3339

ACCESS_LOGGER = "bff.access"
_access = logging.getLogger(ACCESS_LOGGER)
_encode = msgspec.json.Encoder().encode
_PLAIN = re.compile(r"[!-~]+", re.ASCII)
_CONTROLS = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in (*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029)
} | {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
_CONTROLS_BUT_NEWLINE = {code: text for code, text in _CONTROLS.items() if code != 0x0A}


def _access_json(fields: dict[str, Any], created: float) -> str:
    return _encode({"time": rfc3339(created), "level": "info", "log": "access", **fields}).decode()


def _access_text(fields: dict[str, Any], created: float) -> str:
    return f"{rfc3339(created)} INFO    {_text_access(fields)}"


def _through_logging(fields: dict[str, Any]) -> None:
    _access.info("", extra={"access": fields})


_write_access: Callable[[dict[str, Any]], None] = _through_logging
"""Until :func:`configure` runs (embedded apps, tests), access lines are ``bff.access`` records."""


def access_enabled() -> bool:
    """Whether access lines are wanted; callers ask before they assemble one."""
    return _access.isEnabledFor(logging.INFO)


def access(fields: dict[str, Any]) -> None:
    """Log one request (the fields are those of the access line; see ``docs/operating.md``)."""
    _write_access(fields)


class _StdoutAccess:
    """The access line straight to stdout, in the format of the other records, skipping the
    logging machinery (a third of the cost of a request line is record-making and locking).

    The lines of one turn of the event loop go out in one write at its end: under load dozens
    of requests finish per turn, and a write is a system call. What is pending when the process
    exits is written then.
    """

    def __init__(self, form: Callable[[dict[str, Any], float], str]) -> None:
        self._form = form
        self._pending: list[str] = []
        atexit.register(self.flush)

    def __call__(self, fields: dict[str, Any]) -> None:
        self._pending.append(self._form(fields, time.time()))
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop: nothing to wait for
                self.flush()

    def flush(self) -> None:
        if self._pending:
            lines, self._pending = self._pending, []
            stream = sys.stdout
            stream.write("\n".join(lines) + "\n")
            stream.flush()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] | None = getattr(record, "access", None)
        if fields is not None:
            return _access_json(fields, record.created)
        line: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname.lower(),
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
        fields: dict[str, Any] | None = getattr(record, "access", None)
        if fields is not None:
            return _access_text(fields, record.created)
        head = f"{rfc3339(record.created)} {record.levelname:<7}"
        # A message may quote what a caller sent: its control characters are shown, not obeyed.
        line = f"{head} {record.name}: {record.getMessage().translate(_CONTROLS)}"
        request = context.current()
        if request is not None:
            line += f" request_id={request.request_id}"
        if record.exc_info:
            # Indented, so that no line of a traceback can pass for a record of its own.
            trace = self.formatException(record.exc_info).translate(_CONTROLS_BUT_NEWLINE)
            line += "".join(f"\n    {part}" for part in trace.split("\n"))
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
    global _write_access
    _write_access = _StdoutAccess(_access_json if format == "json" else _access_text)
