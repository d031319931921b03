"""What a dashboard call sends, read and checked before anything reaches the upstream.

Query strings (``limit``, ``cursor``, nothing unknown or repeated), the JSON body (media type,
size, syntax, then the flow write shape), and the headers that travel upstream
(``Idempotency-Key``, ``If-Match``) or decide a 304 (``If-None-Match``). Every refusal is a
problem: 400 ``validation-error`` with field errors, 413 or 415.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from starlette.requests import Request

from .problems import FieldError, ProblemError, validation_error
from .views import BodyErrors, FlowWrite, parse_flow_write

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_CURSOR = re.compile(r"[A-Za-z0-9_=.~-]{1,1024}")
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,255}")
_ENTITY_TAGS = re.compile(r'\*|(W/)?"[\x21\x23-\x7e]*"(\s*,\s*(W/)?"[\x21\x23-\x7e]*")*')
_JSON_MEDIA = re.compile(r"application/(?:[a-z0-9.+-]+\+)?json")


def _decimal(text: str, *, cap: int) -> int | None:
    """``text`` as a plain ASCII decimal, or None; any larger value comes back as ``cap``."""
    # isdigit() alone accepts "²", which int() refuses; int() also refuses over 4300 digits.
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0")
    if len(significant) > len(str(cap)):
        return cap
    return min(int(significant or "0"), cap)


def list_query(request: Request) -> tuple[int, str | None]:
    if not request.scope["query_string"]:
        return DEFAULT_LIMIT, None  # the first page, as a dashboard mostly asks: nothing to parse
    errors: list[FieldError] = []
    seen: set[str] = set()
    for key, _ in request.query_params.multi_items():
        if key not in {"limit", "cursor"}:
            errors.append(FieldError(key, "Unknown query parameter.", "unknown_parameter"))
        elif key in seen:
            errors.append(FieldError(key, "Give this parameter once.", "repeated_parameter"))
        seen.add(key)
    limit = DEFAULT_LIMIT
    raw_limit = request.query_params.get("limit")
    if raw_limit is not None:
        parsed = _decimal(raw_limit, cap=MAX_LIMIT + 1)
        if parsed is not None and 1 <= parsed <= MAX_LIMIT:
            limit = parsed
        else:
            errors.append(
                FieldError("limit", f"Must be a whole number from 1 to {MAX_LIMIT}.", "invalid")
            )
    cursor = request.query_params.get("cursor")
    if cursor is not None and not _CURSOR.fullmatch(cursor):
        errors.append(FieldError("cursor", "Not a valid cursor.", "invalid"))
    if errors:
        raise validation_error(errors)
    return limit, cursor


def no_query(request: Request) -> None:
    if request.scope["query_string"] and request.query_params:
        raise validation_error(
            [
                FieldError(key, "Unknown query parameter.", "unknown_parameter")
                for key in request.query_params
            ]
        )


async def read_flow_write(request: Request) -> FlowWrite:
    return _parse_write(await read_json(request))


def _parse_write(data: Any) -> FlowWrite:
    try:
        return parse_flow_write(data)
    except BodyErrors as exc:
        raise validation_error([FieldError(*error) for error in exc.errors]) from None


async def read_json(request: Request) -> Any:
    """The request body as JSON: 415 unless JSON, 413 past the size limit, 400 if malformed."""
    content_type = request.headers.get("content-type", "")
    media, *params = content_type.split(";")
    charsets = [
        value.strip().strip('"').lower()
        for name, _, value in (param.partition("=") for param in params)
        if name.strip().lower() == "charset"
    ]
    if not _JSON_MEDIA.fullmatch(media.strip().lower()) or charsets not in ([], ["utf-8"]):
        raise ProblemError(415, "unsupported-media-type", "Send the body as application/json.")
    limit = request.app.state.services.settings.bff.max_body_bytes
    too_large = ProblemError(
        413, "payload-too-large", f"The body must be at most {limit // 1024} KiB."
    )
    declared = _decimal(request.headers.get("content-length", ""), cap=limit + 1)
    if declared is not None and declared > limit:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        return decode_json(bytes(body))
    except ValueError as exc:
        raise validation_error(
            [FieldError("", str(exc), "malformed_json")], detail=str(exc)
        ) from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"The body names {key!r} twice.")
        data[key] = value
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"The body is not valid JSON ({name} is not a JSON number).")


def decode_json(body: bytes) -> Any:
    """Strict JSON: UTF-8 only, each key once per object, no NaN or Infinity.

    :raises ValueError: with a sentence for the caller saying what is wrong.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("The body is not valid UTF-8.") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (json.JSONDecodeError, RecursionError):  # nesting deeper than the decoder allows
        raise ValueError("The body is not valid JSON.") from None


def idempotency_key(request: Request) -> str:
    """The caller's ``Idempotency-Key``, or a new one; either way it is sent back on the answer
    (``request.state.idempotency_key``), so that a caller who got no answer can retry with it."""
    key = request.headers.get("idempotency-key")
    if key is None:
        key = "bff-" + secrets.token_hex(16)
    elif not _IDEMPOTENCY_KEY.fullmatch(key):
        raise validation_error(
            [FieldError("Idempotency-Key", "Use 1 to 255 letters, digits or _ . : -", "invalid")]
        )
    request.state.idempotency_key = key
    return key


def if_match(request: Request) -> str | None:
    value = request.headers.get("if-match")
    if value is not None and not _ENTITY_TAGS.fullmatch(value.strip()):
        raise validation_error([FieldError("If-Match", "Not a valid entity tag.", "invalid")])
    return value.strip() if value else None


def etag_matches(if_none_match: str, etag: str | None) -> bool:
    if etag is None:
        return False
    if if_none_match.strip() == "*":
        return True
    # If-None-Match uses the weak comparison: W/"x" matches "x".
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in if_none_match.split(","))
