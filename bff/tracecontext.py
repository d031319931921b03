"""W3C Trace Context (https://www.w3.org/TR/trace-context/): ``traceparent`` and ``tracestate``.

A request keeps the caller's trace when its ``traceparent`` is valid, and starts one otherwise.
Every call the gateway makes on its behalf carries a child ``traceparent``: the same trace id, a
new span id, the same flags, and the caller's ``tracestate`` unchanged.
"""

from __future__ import annotations

import random
import re

# Version 00 is exactly 55 characters; a later version may append fields after a dash.
_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[ -~]*)?", re.ASCII
)
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# 32 list members of up to 256 characters each, plus separators; longer is not a valid tracestate.
_TRACESTATE_MAX = 512
_PRINTABLE = re.compile(r"[ -~]*", re.ASCII)

_random = random.Random()


def new_trace_id() -> str:
    return f"{_random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{_random.getrandbits(64) or 1:016x}"


class Parent:
    """A valid incoming ``traceparent`` (and ``tracestate``)."""

    __slots__ = ("flags", "span_id", "trace_id", "tracestate")

    def __init__(self, trace_id: str, span_id: str, flags: str, tracestate: str | None) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.flags = flags
        self.tracestate = tracestate


def parse(traceparent: str | None, tracestate: str | None = None) -> Parent | None:
    """The caller's trace, or ``None`` when ``traceparent`` is absent or invalid."""
    if not traceparent:
        return None
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    # Only the sampled bit is defined for version 00; the others are passed on as zero.
    flags = "01" if int(flags, 16) & 1 else "00"
    return Parent(trace_id, span_id, flags, _clean_tracestate(tracestate))


def _clean_tracestate(value: str | None) -> str | None:
    if not value or len(value) > _TRACESTATE_MAX or not _PRINTABLE.fullmatch(value):
        return None
    return value.strip() or None


def traceparent(trace_id: str, span_id: str, flags: str) -> str:
    return f"00-{trace_id}-{span_id}-{flags}"
