"""Safe construction of backend URLs from caller-supplied ids."""

from __future__ import annotations

import functools
import re
from urllib.parse import quote

import httpx

# No dot, slash, percent, whitespace or non-ASCII character: nothing a URL layer could decode,
# normalise or split into another path.
_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

# The path word every tenant's resource starts with, as a segment of build_url.
TENANTS = ("", "tenants")


class InvalidIdError(ValueError):
    """A tenant, cluster or flow id that is not of the accepted shape; nothing was sent."""


def check_id(kind: str, value: str) -> str:
    """Return ``value`` when it is a well-formed id, else raise :class:`InvalidIdError`."""
    if not isinstance(value, str) or _ID_PATTERN.fullmatch(value) is None:
        raise InvalidIdError(f"invalid {kind}: {value!r}")
    return value


def check_header_value(kind: str, value: str) -> str:
    """Refuse a header value that could split or smuggle headers (control characters)."""
    if not value or not value.isprintable() or not value.isascii():
        raise ValueError(f"invalid {kind}")
    return value


def normalise_base_url(base_url: str) -> tuple[str, str]:
    """Validate the upstream base URL; return it and its path, both without a trailing slash."""
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"base_url must be an absolute http(s) URL: {base_url!r}")
    if url.query or url.fragment or url.userinfo:
        raise ValueError("base_url must not carry a query, fragment or credentials")
    return str(url.copy_with(path="/")).rstrip("/") + url.path.rstrip("/"), url.path.rstrip("/")


@functools.lru_cache(maxsize=4096)
def build_url(
    base_url: str,
    base_path: str,
    segments: tuple[tuple[str, str], ...],
    params: tuple[tuple[str, str | int], ...] = (),
) -> httpx.URL:
    """Join ``base_url`` with ``/v1/…`` built from ``(kind, value)`` pairs.

    A pair with kind ``""`` is a fixed path word of ours; every other pair is a caller id,
    validated and percent-encoded with nothing left unescaped. The path httpx parses back must
    be exactly the intended one, so no dot-segment or encoded slash can redirect the call.
    """
    tail = "/v1/" + "/".join(
        value if kind == "" else quote(check_id(kind, value), safe="") for kind, value in segments
    )
    url = httpx.URL(base_url + tail, params=params or None)
    if url.raw_path.split(b"?", 1)[0] != (base_path + tail).encode("ascii"):
        raise InvalidIdError(f"refusing a URL whose path would change: {base_url + tail!r}")
    return url
