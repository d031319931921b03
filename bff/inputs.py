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
import unicodedata
from typing import Any

import msgspec
from starlette.requests import Request

import upstream_client as uc

from .http import ContentType, decimal, read_body
from .paths import ID_PATTERN
from .problems import FieldError, ProblemError, validation_error

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_CURSOR = re.compile(r"[A-Za-z0-9_=.~-]{1,1024}")
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,255}")
_ENTITY_TAG = re.compile(r'(W/)?"[\x21\x23-\x7e]*"')
# RFC 9110 13.1.1: "*" or a list of entity tags, separated by commas and optional space or tab.
_ENTITY_TAGS = re.compile(rf"\*|{_ENTITY_TAG.pattern}([ \t]*,[ \t]*{_ENTITY_TAG.pattern})*")
# The same as a recipient takes it (RFC 9110 5.6.1): empty list elements are allowed.
_TAG_LIST = re.compile(
    rf"\*|(,[ \t]*)*{_ENTITY_TAG.pattern}([ \t]*,([ \t]*{_ENTITY_TAG.pattern})?)*"
)
NAME_MAX = 128
MAX_ATTEMPTS_RANGE = (1, 10)
BACKOFF_SECONDS_RANGE = (1, 3600)
DEFAULT_RETRY_POLICY = uc.RetryPolicy()


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
        parsed = decimal(raw_limit, cap=MAX_LIMIT + 1)
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
    return flow_write(await read_json(request))


async def read_json(request: Request) -> Any:
    """The request body as JSON: 415 unless JSON, 413 past the size limit, 400 if malformed."""
    if not ContentType(request.headers.get("content-type")).is_json:
        raise ProblemError(415, "unsupported-media-type", "Send the body as application/json.")
    limit = request.app.state.services.settings.bff.max_body_bytes
    body = await read_body(request, limit)
    if body is None:
        raise ProblemError(
            413, "payload-too-large", f"The body must be at most {limit // 1024} KiB."
        )
    try:
        return decode_json(body)
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


# --- the flow write body ----------------------------------------------------------------------


class FlowWrite(msgspec.Struct, frozen=True):
    """A validated write body from the UI."""

    name: str
    source_id: str
    destination_id: str
    max_attempts: int
    backoff_seconds: int


_WRITE_FIELDS = {"name", "sourceId", "destinationId", "retryPolicy"}
_RETRY_FIELDS = {"maxAttempts", "backoffSeconds"}
_NOT_IN_V1 = {
    "destinationIds": "Multi-target fanout is not offered in V1.",
    "targets": "Multi-target fanout is not offered in V1.",
    "draft": "Draft and published flows are not offered in V1.",
    "status": "Draft and published flows are not offered in V1.",
    "gitops": "GitOps for flows is not offered in V1.",
}


def flow_write(data: Any) -> FlowWrite:
    """Validate a decoded JSON write body, collecting every field error at once."""
    if not isinstance(data, dict):
        raise validation_error([FieldError("", "The body must be a JSON object.", "type")])
    errors: list[FieldError] = []
    for key in data:
        if key in _NOT_IN_V1:
            errors.append(FieldError(key, _NOT_IN_V1[key], "not_supported"))
        elif key not in _WRITE_FIELDS:
            errors.append(FieldError(key, "Unknown field.", "unknown_field"))

    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        errors.append(
            FieldError("name", "Enter a name.", "required" if name is None else "invalid")
        )
    elif len(name) > NAME_MAX:
        errors.append(FieldError("name", f"Use at most {NAME_MAX} characters.", "too_long"))
    elif has_invisible_characters(name):
        errors.append(
            FieldError(
                "name",
                "Use visible characters only: no control, formatting or direction marks.",
                "invalid_character",
            )
        )
    source_id = _id_field(data, "sourceId", "Choose a source.", errors)
    destination_id = _id_field(data, "destinationId", "Choose a destination.", errors)

    policy = data.get("retryPolicy", {})
    max_attempts, backoff = DEFAULT_RETRY_POLICY.max_attempts, DEFAULT_RETRY_POLICY.backoff_seconds
    if policy is None:
        policy = {}
    if not isinstance(policy, dict):
        errors.append(FieldError("retryPolicy", "Must be an object.", "type"))
    else:
        errors.extend(
            FieldError(f"retryPolicy.{key}", "Unknown field.", "unknown_field")
            for key in policy
            if key not in _RETRY_FIELDS
        )
        max_attempts = _int_field(policy, "maxAttempts", MAX_ATTEMPTS_RANGE, max_attempts, errors)
        backoff = _int_field(policy, "backoffSeconds", BACKOFF_SECONDS_RANGE, backoff, errors)
    if errors:
        raise validation_error(errors)
    assert isinstance(name, str) and source_id and destination_id
    return FlowWrite(
        name=name.strip(),
        source_id=source_id,
        destination_id=destination_id,
        max_attempts=max_attempts,
        backoff_seconds=backoff,
    )


def _id_field(data: dict[str, Any], key: str, missing: str, errors: list[FieldError]) -> str | None:
    value = data.get(key)
    if value is None:
        errors.append(FieldError(key, missing, "required"))
    elif not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        errors.append(FieldError(key, "Not a valid id.", "invalid"))
    else:
        return value
    return None


def _int_field(
    data: dict[str, Any],
    key: str,
    bounds: tuple[int, int],
    default: int,
    errors: list[FieldError],
) -> int:
    value = data.get(key, default)
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(FieldError(f"retryPolicy.{key}", "Must be a whole number.", "type"))
    elif not low <= value <= high:
        errors.append(
            FieldError(f"retryPolicy.{key}", f"Must be between {low} and {high}.", "out_of_range")
        )
    else:
        return value
    return default


# Control characters (C0, C1), format characters (bidi overrides and isolates, zero-width
# spaces and joiners, the byte-order mark…), line and paragraph separators, surrogates, private
# use and unassigned code points: none of them belongs in a name a person reads.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def has_invisible_characters(text: str) -> bool:
    """Whether ``text`` holds a character that is not shown, or that changes how others show."""
    return any(unicodedata.category(char) in _INVISIBLE_CATEGORIES for char in text)


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
    """The caller's ``If-Match``, as the upstream gets it: its tags joined by ``", "``."""
    value = request.headers.get("if-match")
    if value is None:
        return None
    value = value.strip(" \t")
    if not _ENTITY_TAGS.fullmatch(value):
        raise validation_error([FieldError("If-Match", "Not a valid entity tag.", "invalid")])
    return value if value == "*" else ", ".join(tag.group() for tag in _ENTITY_TAG.finditer(value))


def not_modified(request: Request, etag: str | None) -> bool:
    """Whether the caller's ``If-None-Match`` names ``etag``, so that a GET is answered 304
    (RFC 9110 13.1.2): ``*``, or one of its tags by the weak comparison (``W/"x"`` matches
    ``"x"``); its field lines are one list. A malformed field is ignored, as if it were not
    there: the full answer is never wrong."""
    fields = request.headers.getlist("if-none-match")
    if etag is None or not fields:
        return False
    value = ", ".join(field.strip(" \t") for field in fields)
    if not _TAG_LIST.fullmatch(value):
        return False
    if value == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.group().removeprefix("W/") == opaque for tag in _ENTITY_TAG.finditer(value))
