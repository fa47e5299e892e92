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

Runs of one team share its limit (`sync.budget`): each paces at its share, which the budget
changes while the run sends (`share()`). A lower share takes effect at once, also for slots
already handed out and not yet due: they are taken back and their workers queue again.
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
    taken_back: bool = False  # by a lower share, before it was due: not sent
    after: Slot | None = None  # the slot this one must follow by a window (the window guard)

    def counted_at(self, fastest_round_trip: float) -> float:
        """The latest time the server likely counted this request."""
        if self.answered_at is None or math.isinf(fastest_round_trip):
            return self.sent_at
        return max(self.sent_at, self.answered_at - fastest_round_trip)


class Pacer:
    """Hands out send times. One per run, shared by every worker of one event loop.

    `limit` is the team's limit (the config's, lowered by what Loops reports); `rate` is this
    run's pace: the limit, or the run's share of it (0: no share yet, nothing is sent);
    `others` is what the other runs of the team's budget may spend in a window.
    """

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.limit = rate
        self.rate = rate
        self.others = 0.0
        self._cap = _window_cap(rate)  # requests allowed in any one-second window
        # Enough history for the window guard and for counting ours in the server's window, with
        # the slots already handed out for the future.
        self._recent: deque[Slot] = deque(maxlen=4 * _window_cap(rate))
        self._next = 0.0
        self._paused_until = 0.0
        self._fastest_round_trip = math.inf
        self._changed: anyio.Event | None = None  # set when the share changes; made in a loop
        self.lowered_to: int | None = None

    def reserve(self) -> Slot:
        """Take the next free slot (`sent_at - clock()` is how long to wait for it)."""
        now = self._clock()
        after = self._recent[-self._cap] if len(self._recent) >= self._cap else None
        slot = Slot(max(now, self._next), after=after)
        slot.sent_at = self.due(slot)
        self._recent.append(slot)
        self._next = slot.sent_at + 1.0 / self.rate
        return slot

    def due(self, slot: Slot) -> float:
        """The slot's time, or later if the request it follows was counted later than thought:
        checked again when the slot comes due, an answer having come back since, maybe."""
        if slot.after is None:
            return slot.sent_at
        oldest = slot.after.counted_at(self._fastest_round_trip)
        return max(slot.sent_at, oldest + WINDOW + WINDOW_MARGIN)

    async def wait(self, *, until: Callable[[], Awaitable[object]] | None = None) -> Slot | None:
        """Wait for the next slot. None if `until` (a stop, say) completes first: a slot can be
        seconds away at a low rate or after a 429, and a stopped run must not send when it comes.
        A slot taken back by a lower share is replaced by a new one, waited for the same way.
        """
        while True:
            if self.rate <= 0:  # no share of the budget yet: wait for one
                if not await self._sleep(math.inf, until):
                    return None
                continue
            slot = self.reserve()
            while not slot.taken_back:
                slot.sent_at = self.due(slot)
                delay = slot.sent_at - self._clock()
                if delay <= 0:
                    return slot
                if not await self._sleep(delay, until):
                    return None

    async def _sleep(self, seconds: float, until: Callable[[], Awaitable[object]] | None) -> bool:
        """Sleep `seconds`, less if the share changes; False if `until` completed first."""
        if self._changed is None:
            self._changed = anyio.Event()
        changed = self._changed
        stopped = False
        async with anyio.create_task_group() as group:

            async def stop_on_until(wait_for: Callable[[], Awaitable[object]]) -> None:
                nonlocal stopped
                await wait_for()
                stopped = True
                group.cancel_scope.cancel()

            if until is not None:
                group.start_soon(stop_on_until, until)
            with anyio.move_on_after(seconds):
                await changed.wait()
            group.cancel_scope.cancel()
        return not stopped

    def share(self, rate: float, *, others: float = 0.0) -> None:
        """Pace at `rate` from now on (0: send nothing), while other runs may spend `others`.

        Slots handed out and not yet due are taken back, so a lower share holds at once; the
        window guard still counts what this run sent under the old one. Waiting workers wake
        and queue again at the new pace.
        """
        self.others = others
        if rate == self.rate:
            return
        now = self._clock()
        self.rate = rate
        self._cap = _window_cap(rate)
        for slot in self._recent:
            if slot.sent_at > now and slot.answered_at is None:
                slot.taken_back = True
        kept = [slot for slot in self._recent if not slot.taken_back]
        self._recent = deque(kept, maxlen=self._recent.maxlen)
        last = kept[-1].sent_at if kept else -math.inf
        self._next = max(now, self._paused_until, last + 1.0 / rate if rate > 0 else now)
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def quiet_in(self) -> float:
        """Seconds until none of this run's requests can still count in the server's window:
        how long a run that stops sending holds its share."""
        now = self._clock()
        latest = max((slot.answered_at or now for slot in self._recent), default=-math.inf)
        return max(0.0, latest + WINDOW + WINDOW_MARGIN - now)

    def pause(self, seconds: float) -> None:
        """Send nothing for a while (after a 429, or when someone else spends the budget)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        self._next = max(self._next, self._paused_until)

    def answered(
        self, slot: Slot, *, limit: int | None = None, remaining: int | None = None
    ) -> None:
        """The answer to `slot`'s request arrived, with the server's `x-ratelimit-*` headers.

        The answer's time refines when the server counted the request. A limit below the
        configured rate lowers the pace for the rest of the run (and, through the budget, the
        team's). No budget left while this run sent fewer than its allowance in the server's
        window (the limit, less what the other runs of the budget may spend) means a client
        outside loops-sync is spending it: wait for that window to pass.
        """
        slot.answered_at = self._clock()
        self._fastest_round_trip = min(self._fastest_round_trip, slot.answered_at - slot.sent_at)
        if limit is not None and 0 < limit < self.limit:
            self.limit = float(limit)
            self.lowered_to = limit
            if self.rate > limit:
                self.share(float(limit), others=self.others)
        allowance = (limit or self.limit) - self.others
        if remaining == 0 and self._ours_in_window(slot) < allowance - 1:
            self.pause(WINDOW)

    def _ours_in_window(self, slot: Slot) -> int:
        """How many of this run's requests the server's window held when it counted `slot`."""
        counted = slot.counted_at(self._fastest_round_trip)
        return sum(
            1
            for other in self._recent
            if counted - WINDOW < other.counted_at(self._fastest_round_trip) <= counted
        )


def _window_cap(rate: float) -> int:
    return max(1, math.floor(rate))
