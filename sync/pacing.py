"""Pace requests at the team's rate limit: never above it in any one-second window, and close to it.

Why not `aiolimiter.AsyncLimiter` alone: measured here with 20 workers, `AsyncLimiter(10, 1)`
lets 19 requests through in its first second (a leaky bucket that starts empty), and the
burst-free form `AsyncLimiter(1, 1/R)` reached only 0.93 of R at 10 req/s and 0.84 at 100 req/s,
because each waiter re-checks on a timer and every late wake-up is lost for good. Loops counts
requests per second, so both cost: a burst earns 429s, a slow pace wastes the night.

This pacer gives each request a slot at `start + i / R` (late wake-ups do not accumulate) and
never lets more than floor(R) slots fall within one second (plus a small margin for the jitter
between here and the server), the first second included.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

import anyio

__all__ = ["Pacer"]

WINDOW = 1.0
# Requests leave in slot order but arrive with a few ms of jitter; the server's window must not see
# floor(R) + 1 of them. 20 ms costs 2% of the rate.
WINDOW_MARGIN = 0.02


class Pacer:
    """Hands out send times. One per run, shared by every worker of one event loop."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.rate = rate
        self._recent: deque[float] = deque(maxlen=max(1, math.floor(rate)))
        self._next = 0.0
        self.lowered_to: int | None = None

    def reserve(self) -> float:
        """Take the next free slot; return how long to wait for it."""
        now = self._clock()
        slot = max(now, self._next)
        if len(self._recent) == self._recent.maxlen:
            slot = max(slot, self._recent[0] + WINDOW + WINDOW_MARGIN)
        self._recent.append(slot)
        self._next = slot + 1.0 / self.rate
        return slot - now

    async def wait(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await anyio.sleep(delay)

    def pause(self, seconds: float) -> None:
        """Send nothing for a while (after a 429, or when someone else spends the budget)."""
        self._next = max(self._next, self._clock() + seconds)

    def observe(self, limit: int | None, remaining: int | None) -> None:
        """Follow the server's `x-ratelimit-*` headers.

        A limit below the configured rate lowers the pace for the rest of the run. A remaining
        budget of zero while this run itself sent fewer than the limit in the last second means
        another client of the same team is spending it: wait for the window to pass.
        """
        if limit is not None and 0 < limit < self.rate:
            self.rate = float(limit)
            self._recent = deque(self._recent, maxlen=max(1, limit))
            self.lowered_to = limit
        if remaining == 0:
            now = self._clock()
            ours = sum(1 for slot in self._recent if now - WINDOW < slot <= now)
            if ours < (self._recent.maxlen or 1) - 1:
                self.pause(WINDOW)
