"""Configuration value objects of the backend client, each with a named default."""

from __future__ import annotations

import ssl
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timeout:
    """Time limits, in seconds.

    ``connect``, ``read``, ``write`` and ``pool`` bound each single network step of one attempt.
    ``total`` is the deadline of a whole call: every attempt, every body read and every backoff
    sleep together, so an upstream that drips its body byte by byte still ends on time.
    """

    connect: float = 2.0
    read: float = 5.0
    write: float = 5.0
    pool: float = 2.0
    total: float = 10.0

    def __post_init__(self) -> None:
        for name in ("connect", "read", "write", "pool", "total"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Timeout.{name} must be positive")


@dataclass(frozen=True, slots=True)
class RetryConfig:
    """When and how long to wait before trying a call again.

    ``max_attempts`` counts the first attempt (1 disables retries). The n-th backoff is
    ``min(backoff_max, backoff_base * 2 ** (n - 1))``, shortened by a random share of up to
    ``jitter`` (0 to 1). A ``Retry-After`` from the upstream replaces the computed backoff; when
    it asks for more than ``retry_after_max`` seconds, or more than the call's deadline has
    left, the client stops retrying and raises the error carrying ``retry_after``.
    """

    max_attempts: int = 3
    backoff_base: float = 0.1
    backoff_max: float = 2.0
    jitter: float = 0.5
    retry_after_max: float = 5.0
    retry_statuses: frozenset[int] = frozenset({408, 429, 502, 503, 504})

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryConfig.max_attempts must be at least 1")
        if self.backoff_base < 0 or self.backoff_max < 0 or self.retry_after_max < 0:
            raise ValueError("RetryConfig backoff values must not be negative")
        if not 0 <= self.jitter <= 1:
            raise ValueError("RetryConfig.jitter must be between 0 and 1")


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """The circuit breaker of one client (one base URL).

    ``failure_threshold`` consecutive failed attempts within ``window_seconds`` open the
    circuit: calls fail fast with :class:`CircuitOpenError` for ``open_seconds``. Then it is
    half-open: up to ``half_open_probes`` calls go through; that many successes close it, one
    failure opens it again for twice as long as the last time, up to ``max_open_seconds``
    (a long outage is probed ever less often, a blip costs ``open_seconds``). A failure is a
    connection error, a timeout or a 5xx answer; 4xx answers (429 included: the upstream is
    alive and limiting one caller) count as successes.
    """

    failure_threshold: int = 5
    window_seconds: float = 10.0
    open_seconds: float = 1.0
    max_open_seconds: float = 30.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError("BreakerConfig.failure_threshold must be at least 1")
        if self.window_seconds <= 0:
            raise ValueError("BreakerConfig.window_seconds must be positive")
        if self.open_seconds < 0:
            raise ValueError("BreakerConfig.open_seconds must not be negative")
        if self.max_open_seconds < self.open_seconds:
            raise ValueError("BreakerConfig.max_open_seconds must be at least open_seconds")
        if self.half_open_probes < 1:
            raise ValueError("BreakerConfig.half_open_probes must be at least 1")


@dataclass(frozen=True, slots=True)
class Limits:
    """Connection pool bounds and the largest response body accepted."""

    max_connections: int = 100
    max_keepalive_connections: int = 20
    keepalive_expiry: float = 5.0
    max_response_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_keepalive_connections < 0:
            raise ValueError("Limits connection counts must be positive")
        if self.max_response_bytes < 1:
            raise ValueError("Limits.max_response_bytes must be positive")


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """TLS towards the upstream: a client certificate and key (mTLS) and a CA bundle.

    ``cert_file`` and ``key_file`` go together; ``ca_file`` replaces the system trust store.
    """

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("TLSConfig.cert_file and TLSConfig.key_file must be given together")

    def ssl_context(self) -> ssl.SSLContext:
        """Build a verifying client context (TLS 1.2 or newer) from these files."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


DEFAULT_TIMEOUT = Timeout()
DEFAULT_RETRIES = RetryConfig()
DEFAULT_BREAKER = BreakerConfig()
DEFAULT_LIMITS = Limits()
