"""Where the browser goes back to after signing in: a path on this site, nothing else.

``returnTo`` travels from ``/auth/login`` through the provider and back to the callback's
redirect; accepting a full URL there would make the gateway an open redirect.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ..problems import FieldError, validation_error

MAX_LENGTH = 2048


def safe_return_to(value: str | None) -> str:
    """``value`` when it is a local path (``/`` when absent); 400 ``validation-error`` if not."""
    if not value:
        return "/"
    parts = urlsplit(value)
    if (
        len(value) > MAX_LENGTH
        or not value.startswith("/")
        or value.startswith(("//", "/\\"))
        or parts.scheme
        or parts.netloc
        or any(ch < " " or ch in "\\\x7f" for ch in value)
    ):
        raise validation_error(
            [FieldError("returnTo", "Must be a path on this site, like /flows.", "invalid")]
        )
    return value
