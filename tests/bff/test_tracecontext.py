"""W3C Trace Context parsing: what the gateway keeps of a caller's traceparent and tracestate."""

from __future__ import annotations

import re

import pytest

from bff import tracecontext
from bff.tracecontext import new_span_id, new_trace_id, parse, traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01"
HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")


def test_a_valid_version_00_header_keeps_trace_span_and_flags() -> None:
    parent = parse(VALID)
    assert parent is not None
    assert (parent.trace_id, parent.span_id, parent.flags) == (TRACE, SPAN, "01")
    assert parent.tracestate is None


@pytest.mark.parametrize(
    ("flags", "expected"),
    [("01", "01"), ("00", "00"), ("03", "01"), ("02", "00"), ("ff", "01"), ("fe", "00")],
)
def test_only_the_sampled_bit_is_kept(flags: str, expected: str) -> None:
    parent = parse(f"00-{TRACE}-{SPAN}-{flags}")
    assert parent is not None
    assert parent.flags == expected


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(f"00-{'0' * 32}-{SPAN}-01", id="zero-trace-id"),
        pytest.param(f"00-{TRACE}-{'0' * 16}-01", id="zero-span-id"),
        pytest.param(f"ff-{TRACE}-{SPAN}-01", id="version-ff"),
        pytest.param(f"00-{TRACE.upper()}-{SPAN}-01", id="uppercase-trace-id"),
        pytest.param(f"00-{TRACE}-{SPAN.upper()}-01", id="uppercase-span-id"),
        pytest.param(f"0A-{TRACE}-{SPAN}-01", id="uppercase-version"),
        pytest.param(f"00-{TRACE}-{SPAN}-0A", id="uppercase-flags"),
        pytest.param(f"00-{TRACE[:-1]}-{SPAN}-01", id="short-trace-id"),
        pytest.param(f"00-{TRACE}0-{SPAN}-01", id="long-trace-id"),
        pytest.param(f"00-{TRACE}-{SPAN[:-1]}-01", id="short-span-id"),
        pytest.param(f"00-{TRACE}-{SPAN}0-01", id="long-span-id"),
        pytest.param(f"0-{TRACE}-{SPAN}-01", id="short-version"),
        pytest.param(f"00-{TRACE}-{SPAN}-1", id="short-flags"),
        pytest.param(f"00-{TRACE}-{SPAN}-011", id="long-flags"),
        pytest.param(f"00-{TRACE}-{SPAN}-01-extra", id="version-00-with-trailing-field"),
        pytest.param(f"00-{TRACE}-{SPAN}-01-", id="version-00-with-trailing-dash"),
        pytest.param(f"00_{TRACE}_{SPAN}_01", id="wrong-separators"),
        pytest.param(f"00-{TRACE[:31]}g-{SPAN}-01", id="non-hex"),
        pytest.param("garbage", id="garbage"),
        pytest.param("00-", id="truncated"),
        pytest.param("", id="empty"),
        pytest.param(None, id="absent"),
    ],
)
def test_invalid_traceparents_are_rejected(header: str | None) -> None:
    assert parse(header, "vendor=value") is None


@pytest.mark.parametrize(
    "header",
    [
        f"cc-{TRACE}-{SPAN}-01-extra",
        f"cc-{TRACE}-{SPAN}-01",
        f"01-{TRACE}-{SPAN}-01-a-b-c",
    ],
)
def test_a_future_version_is_read_as_far_as_version_00_goes(header: str) -> None:
    parent = parse(header)
    assert parent is not None
    assert (parent.trace_id, parent.span_id, parent.flags) == (TRACE, SPAN, "01")


def test_a_future_version_must_still_separate_its_extra_fields_with_a_dash() -> None:
    assert parse(f"cc-{TRACE}-{SPAN}-01extra") is None


@pytest.mark.parametrize(
    "state",
    ["rojo=00f067aa0ba902b7,congo=t61rcWkgMzE", "a=1", "x" * 512],
    ids=["two-members", "one-member", "exactly-512"],
)
def test_a_printable_tracestate_up_to_512_characters_is_passed_through(state: str) -> None:
    parent = parse(VALID, state)
    assert parent is not None
    assert parent.tracestate == state


@pytest.mark.parametrize(
    "state",
    ["x" * 513, "a=1\nb=2", "a=1\r", "a=\x00", "a=\x7f", "a=\t1", "a=é"],
    ids=["513-chars", "newline", "carriage-return", "nul", "del", "tab", "non-ascii"],
)
def test_a_long_or_unprintable_tracestate_is_dropped_but_the_trace_kept(state: str) -> None:
    parent = parse(VALID, state)
    assert parent is not None
    assert parent.trace_id == TRACE
    assert parent.tracestate is None


@pytest.mark.parametrize("state", [None, ""])
def test_no_tracestate_is_none(state: str | None) -> None:
    parent = parse(VALID, state)
    assert parent is not None
    assert parent.tracestate is None


def test_traceparent_formats_a_version_00_header() -> None:
    header = traceparent(TRACE, SPAN, "01")
    assert header == VALID
    parent = parse(header)
    assert parent is not None and (parent.trace_id, parent.span_id) == (TRACE, SPAN)


def test_new_ids_are_lowercase_hex_of_the_right_length_and_never_zero() -> None:
    traces = {new_trace_id() for _ in range(200)}
    spans = {new_span_id() for _ in range(200)}
    assert all(HEX32.fullmatch(t) for t in traces)
    assert all(HEX16.fullmatch(s) for s in spans)
    assert "0" * 32 not in traces and "0" * 16 not in spans
    assert len(traces) == 200 and len(spans) == 200, "ids must not repeat"


def test_new_ids_are_not_zero_even_when_the_random_source_says_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Zero:
        def getrandbits(self, bits: int) -> int:
            return 0

    monkeypatch.setattr(tracecontext, "_random", Zero())
    trace, span = new_trace_id(), new_span_id()
    assert HEX32.fullmatch(trace) and trace != "0" * 32
    assert HEX16.fullmatch(span) and span != "0" * 16
    # An id it generates is one it would accept from a caller.
    assert parse(traceparent(trace, span, "00")) is not None
