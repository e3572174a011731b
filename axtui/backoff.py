"""``Backoff``: how long to wait before the next retry, the same way for every retry loop.

    backoff = Backoff(initial=0.5, maximum=30.0)
    while True:
        try:
            await attempt()
            backoff.reset()
        except ConnectionError:
            await asyncio.sleep(backoff.next())

Each delay doubles the one before, up to ``maximum``; ``jitter`` spreads each by up to that
fraction either way, so clients dropped together do not all come back at the same moment.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays between retries: ``initial``, doubling up to ``maximum``, until :meth:`reset`."""

    def __init__(self, initial: float, maximum: float, *, jitter: float = 0.0,
                 rand: Callable[[], float] = random.random) -> None:
        if not 0 <= jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1 (got {jitter})")
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self._rand = rand
        self._current = initial

    def next(self) -> float:
        """The delay to wait now (seconds); the one after will be twice as long."""
        delay = self._current
        self._current = min(self.maximum, self._current * 2)
        if self.jitter:
            delay *= 1 - self.jitter + 2 * self.jitter * self._rand()
        return delay

    def reset(self) -> None:
        """The attempt succeeded: the next delay is ``initial`` again."""
        self._current = self.initial
