"""The hook through which a caller watches each attempt the client sends (tracing, timing)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Protocol

import httpx


class AttemptObserver(Protocol):
    """Told of every HTTP attempt: before it is sent, and once its body is read or it failed.

    ``attempt_started`` may add to ``headers`` (a ``traceparent``, say), the headers of this
    attempt alone; whatever it returns is handed back to ``attempt_ended`` with the status
    (``None`` when no answer came). ``attempt`` counts from 1 within one call, so a value above 1
    is a retry.
    """

    def attempt_started(
        self, method: str, url: httpx.URL, headers: MutableMapping[str, str], attempt: int
    ) -> object: ...

    def attempt_ended(self, started: object, status: int | None) -> None: ...
