"""Reading a request: query parameters, the JSON body, and conditional headers."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from starlette.requests import Request

from sandbox.problems import FieldError, Problem, validation_problem

JSON_MEDIA_TYPE = "application/json"
_ENTITY_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e]*)"\s*')


def query_params(request: Request, allowed: Sequence[str]) -> dict[str, str]:
    """The query parameters, refusing unknown and repeated ones."""
    values: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name not in allowed:
            raise validation_problem([FieldError(name, "unknown query parameter", "unknown_field")])
        if name in values:
            raise validation_problem([FieldError(name, "must not be repeated", "invalid")])
        values[name] = value
    return values


async def read_json(request: Request, max_bytes: int) -> Any:
    """The decoded JSON body: 415 for other media types, 413 past ``max_bytes``, 400 if bad."""
    content_type = request.headers.get("content-type", "")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type != JSON_MEDIA_TYPE and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise Problem(415, "unsupported-media-type", "Send the request body as application/json.")
    too_large = Problem(
        413, "payload-too-large", f"The request body must not exceed {max_bytes} bytes."
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    received = 0
    # Count while reading: a chunked body has no Content-Length to check up front.
    async for chunk in request.stream():
        received += len(chunk)
        if received > max_bytes:
            raise too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise validation_problem([FieldError("body", "is required", "required")])
    try:
        return msgspec.json.decode(raw)
    # UnicodeDecodeError: a string that is not UTF-8; RecursionError: nesting too deep.
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise validation_problem(
            [FieldError("body", "is not valid JSON", "malformed_json")]
        ) from exc


def if_match(request: Request) -> Callable[[int], bool] | None:
    """A check of the flow version against ``If-Match``, or ``None`` without the header.

    Weak tags never match (RFC 9110 requires strong comparison for If-Match).
    """
    header = request.headers.get("if-match")
    if header is None:
        return None
    if header.strip() == "*":
        return lambda version: True
    strong: set[str] = set()
    for part in header.split(","):
        match = _ENTITY_TAG.fullmatch(part)
        if match is not None and match.group(1) is None:
            strong.add(match.group(2))
    return lambda version: str(version) in strong


def if_none_match(request: Request, version: int) -> bool:
    """Whether ``If-None-Match`` names the current version (weak comparison, RFC 9110)."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    if header.strip() == "*":
        return True
    tags = {match.group(2) for match in map(_ENTITY_TAG.fullmatch, header.split(",")) if match}
    return str(version) in tags
