"""A clock for code that takes ``clock=`` (and ``sleep=``): time moves only when the test says."""

from __future__ import annotations

START = 1_800_000_000.0
"""Where a fake clock starts unless told: a fixed instant on a minute boundary, so expected
times and token claims are exact."""


class FakeClock:
    """Seconds since the epoch that move only by :meth:`advance` or a :meth:`sleep` it is given.

    Call it for the time; pass ``clock=FakeClock()`` where the code wants ``time.time`` or
    ``time.monotonic``, and ``sleep=clock.sleep`` where it wants ``asyncio.sleep``: the waits
    asked of it are kept in ``sleeps``.
    """

    def __init__(self, now: float = START) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Stands in for ``asyncio.sleep``: records the wait and moves past it at once."""
        self.sleeps.append(seconds)
        self.advance(seconds)
