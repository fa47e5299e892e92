"""Pace requests at the team's rate limit: never above it in any one-second window, and close to it.

Why not `aiolimiter.AsyncLimiter` alone: measured here with 20 workers, `AsyncLimiter(10, 1)`
lets 19 requests through in its first second (a leaky bucket that starts empty), and the
burst-free form `AsyncLimiter(1, 1/R)` reached only 0.93 of R at 10 req/s and 0.84 at 100 req/s,
because each waiter re-checks on a timer and every late wake-up is lost for good. Loops counts
requests per second, so both cost: a burst earns 429s, a slow pace wastes the night.

This pacer gives each request a slot at `start + i / R` (late wake-ups do not accumulate) and
never lets more than floor(R) requests fall within one second (plus a small margin for jitter),
the first second included. What counts is when a request reaches the server, which can be later
than its slot: a new connection's handshake delays the first requests but not the ones after
them, squeezing the server's first window. So once a request's answer is in, the pacer moves it
to its latest likely arrival: the answer's time minus the fastest round trip seen so far.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

__all__ = ["Pacer", "Slot"]

WINDOW = 1.0
# Requests leave in slot order but arrive with a few ms of jitter; the server's window must not see
# floor(R) + 1 of them. 20 ms costs 2% of the rate.
WINDOW_MARGIN = 0.02


@dataclass
class Slot:
    """One request's place in the pace: when it went, and when its answer came back."""

    sent_at: float
    answered_at: float | None = None

    def counted_at(self, fastest_round_trip: float) -> float:
        """The latest time the server likely counted this request."""
        if self.answered_at is None or math.isinf(fastest_round_trip):
            return self.sent_at
        return max(self.sent_at, self.answered_at - fastest_round_trip)


class Pacer:
    """Hands out send times. One per run, shared by every worker of one event loop."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.rate = rate
        self._cap = max(1, math.floor(rate))  # requests allowed in any one-second window
        # Enough history for the window guard and for counting ours in the server's window, with
        # the slots already handed out for the future.
        self._recent: deque[Slot] = deque(maxlen=4 * self._cap)
        self._next = 0.0
        self._fastest_round_trip = math.inf
        self.lowered_to: int | None = None

    def reserve(self) -> Slot:
        """Take the next free slot (`sent_at - clock()` is how long to wait for it)."""
        now = self._clock()
        at = max(now, self._next)
        if len(self._recent) >= self._cap:
            oldest = self._recent[-self._cap].counted_at(self._fastest_round_trip)
            at = max(at, oldest + WINDOW + WINDOW_MARGIN)
        slot = Slot(at)
        self._recent.append(slot)
        self._next = at + 1.0 / self.rate
        return slot

    async def wait(self, *, until: Callable[[], Awaitable[object]] | None = None) -> Slot | None:
        """Wait for the next slot. None if `until` (a stop, say) completes first: a slot can be
        seconds away at a low rate or after a 429, and a stopped run must not send when it comes.
        """
        slot = self.reserve()
        delay = slot.sent_at - self._clock()
        if delay <= 0:
            return slot
        if until is None:
            await anyio.sleep(delay)
            return slot
        with anyio.move_on_after(delay):
            await until()
            return None
        return slot

    def pause(self, seconds: float) -> None:
        """Send nothing for a while (after a 429, or when someone else spends the budget)."""
        self._next = max(self._next, self._clock() + seconds)

    def answered(
        self, slot: Slot, *, limit: int | None = None, remaining: int | None = None
    ) -> None:
        """The answer to `slot`'s request arrived, with the server's `x-ratelimit-*` headers.

        The answer's time refines when the server counted the request. A limit below the
        configured rate lowers the pace for the rest of the run. No budget left while this run
        sent fewer than the limit in the server's window means another client of the same team
        is spending it: wait for that window to pass.
        """
        slot.answered_at = self._clock()
        self._fastest_round_trip = min(self._fastest_round_trip, slot.answered_at - slot.sent_at)
        if limit is not None and 0 < limit < self.rate:
            self.rate = float(limit)
            self._cap = limit
            self.lowered_to = limit
        if remaining == 0 and self._ours_in_window(slot) < (limit or self.rate) - 1:
            self.pause(WINDOW)

    def _ours_in_window(self, slot: Slot) -> int:
        """How many of this run's requests the server's window held when it counted `slot`."""
        counted = slot.counted_at(self._fastest_round_trip)
        return sum(
            1
            for other in self._recent
            if counted - WINDOW < other.counted_at(self._fastest_round_trip) <= counted
        )
