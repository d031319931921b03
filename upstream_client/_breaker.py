"""A circuit breaker: consecutive failures within a window open it; probes close it."""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from upstream_client._config import BreakerConfig


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave for one attempt; ``probe`` marks a half-open trial."""

    probe: bool


class CircuitBreaker:
    """Tracks the health of one upstream base URL.

    ``acquire()`` asks whether an attempt may go out; every granted permit must end with
    exactly one of ``success()``, ``failure()`` or ``release()`` (an attempt abandoned without
    a verdict, such as a cancelled call).
    """

    def __init__(self, config: BreakerConfig, clock: Callable[[], float]) -> None:
        self._config = config
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._failures: deque[float] = deque()
        self._opened_at = 0.0
        self._open_for = config.open_seconds
        self._probes_out = 0
        self._probes_passed = 0
        self.opened = 0
        """How many times the circuit has opened (for metrics)."""

    @property
    def state(self) -> BreakerState:
        """The state as of now (an elapsed open interval reads as half-open)."""
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self._open_for:
            self._state = BreakerState.HALF_OPEN
            self._probes_out = self._probes_passed = 0
        return self._state

    @property
    def retry_in(self) -> float:
        """Seconds until an open circuit lets a probe through (0 unless open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._open_for - self._clock())

    def acquire(self) -> Permit | None:
        """A permit for one attempt, or ``None`` when the call must fail fast.

        A half-open circuit grants up to ``half_open_probes`` probe permits at a time.
        """
        state = self.state
        if state is BreakerState.CLOSED:
            return Permit(probe=False)
        if state is BreakerState.HALF_OPEN and self._probes_out < self._config.half_open_probes:
            self._probes_out += 1
            return Permit(probe=True)
        return None

    def success(self, permit: Permit) -> None:
        """The upstream answered: a closed circuit forgets its failures; enough probes close it."""
        if permit.probe:
            self._probes_out = max(0, self._probes_out - 1)
            if self._state is not BreakerState.HALF_OPEN:
                return
            self._probes_passed += 1
            if self._probes_passed < self._config.half_open_probes:
                return
            self._open_for = self._config.open_seconds
            self._state = BreakerState.CLOSED
        self._failures.clear()

    def failure(self, permit: Permit) -> None:
        """The upstream failed: count it; open at the threshold, or again on a failed probe."""
        now = self._clock()
        if permit.probe:
            self._probes_out = max(0, self._probes_out - 1)
            if self._state is BreakerState.HALF_OPEN:
                # Still down: wait twice as long before the next probe.
                self._open(now, min(self._open_for * 2, self._config.max_open_seconds))
            return
        if self._state is not BreakerState.CLOSED:
            return
        failures = self._failures
        failures.append(now)
        while failures and now - failures[0] > self._config.window_seconds:
            failures.popleft()
        if len(failures) >= self._config.failure_threshold:
            self._open(now, self._config.open_seconds)

    def release(self, permit: Permit) -> None:
        """The attempt ended without a verdict (cancelled): another probe may go out."""
        if permit.probe:
            self._probes_out = max(0, self._probes_out - 1)

    def _open(self, now: float, seconds: float) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = now
        self._open_for = seconds
        self._failures.clear()
        self.opened += 1
