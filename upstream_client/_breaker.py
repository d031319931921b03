"""A consecutive-failure circuit breaker with a single half-open probe."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from upstream_client._config import BreakerConfig


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave for one attempt; ``probe`` marks the single half-open trial."""

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
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False

    @property
    def state(self) -> BreakerState:
        """The state as of now (an elapsed open interval reads as half-open)."""
        if (
            self._state is BreakerState.OPEN
            and self._clock() - self._opened_at >= self._config.open_seconds
        ):
            self._state = BreakerState.HALF_OPEN
        return self._state

    def acquire(self) -> Permit | None:
        """A permit for one attempt, or ``None`` when the call must fail fast.

        A half-open circuit grants a single probe permit at a time.
        """
        state = self.state
        if state is BreakerState.CLOSED:
            return Permit(probe=False)
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return Permit(probe=True)
        return None

    def success(self, permit: Permit) -> None:
        """The upstream answered: close the circuit."""
        if permit.probe:
            self._probe_in_flight = False
        self._failures = 0
        self._state = BreakerState.CLOSED

    def failure(self, permit: Permit) -> None:
        """The upstream failed: count it; open the circuit at the threshold or on a failed probe."""
        if permit.probe:
            self._probe_in_flight = False
        self._failures += 1
        if permit.probe or (
            self._state is BreakerState.CLOSED and self._failures >= self._config.failure_threshold
        ):
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()

    def release(self, permit: Permit) -> None:
        """The attempt ended without a verdict (cancelled): another probe may go out."""
        if permit.probe:
            self._probe_in_flight = False
