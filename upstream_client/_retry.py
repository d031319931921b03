"""Retry decisions: which calls may be repeated, and how long to wait between attempts."""

from __future__ import annotations

import email.utils
import math
import random

from upstream_client._config import RetryConfig


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP date), else ``None``.

    ``now`` is the current wall-clock time (epoch seconds), used for the date form; a date in
    the past means zero.
    """
    if value is None:
        return None
    value = value.strip()
    # isdigit() alone also accepts digits float() cannot read, such as a superscript two.
    if value.isascii() and value.isdigit():
        seconds = float(value)
        return seconds if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    seconds = when.timestamp() - now
    return max(0.0, seconds) if math.isfinite(seconds) else None


def backoff_delay(config: RetryConfig, retry_number: int, rng: random.Random) -> float:
    """Capped exponential backoff before retry ``retry_number`` (1-based), with jitter."""
    delay: float = min(config.backoff_max, config.backoff_base * 2.0 ** (retry_number - 1))
    return delay * (1.0 - config.jitter * rng.random())
