"""Fault injection and rate limiting for the emulator.

Kept apart from the endpoint logic: these decide *whether* a request gets processed, the
endpoints decide *what* processing means. Both are deterministic given a seed and a clock, so a
test that provokes a failure can provoke the same failure again.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Fault = Literal["drop", "hang", "fail", "fail_match"]

RATE_WINDOW_SECONDS = 1.0


class FaultSettingsError(ValueError):
    """A fault setting that makes no sense (a rate outside 0..1, an unknown name...)."""


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Faults:
    """The knobs that make the emulator misbehave; all changeable while it runs."""

    latency_ms: float = 0.0
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    hang_rate: float = 0.0
    hang_seconds: float = 30.0
    fail_match: str | None = None
    rate_limit: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("fail_rate", "drop_rate", "hang_rate"):
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 1:
                raise FaultSettingsError(f"{name} must be a number from 0 to 1")
        for name in ("latency_ms", "hang_seconds"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise FaultSettingsError(f"{name} must be a number of at least 0")
        if not isinstance(self.rate_limit, int) or isinstance(self.rate_limit, bool):
            raise FaultSettingsError("rate_limit must be an integer (0 means unlimited)")
        if self.rate_limit < 0:
            raise FaultSettingsError("rate_limit must be an integer (0 means unlimited)")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise FaultSettingsError("seed must be an integer")
        # An empty substring would match every request: refuse it rather than guess.
        if self.fail_match is not None and (
            not isinstance(self.fail_match, str) or not self.fail_match
        ):
            raise FaultSettingsError("fail_match must be a non-empty string or null")

    def with_changes(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with `changes` applied; unknown names are an error, not silently ignored."""
        known = {field.name for field in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise FaultSettingsError(f"unknown fault setting(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class FaultDice:
    """Seeded draws deciding which requests misbehave.

    Every request draws the same three numbers whatever the rates are, so the n-th request of a
    run meets the same fate for a given seed even when the rates change in between.
    """

    def __init__(self, seed: int) -> None:
        # Not security: a repeatable pseudo-random sequence is the point.
        self._rng = random.Random(seed)  # noqa: S311

    def roll(self, faults: Faults) -> Fault | None:
        drop, hang, fail = self._rng.random(), self._rng.random(), self._rng.random()
        if drop < faults.drop_rate:
            return "drop"
        if hang < faults.hang_rate:
            return "hang"
        if fail < faults.fail_rate:
            return "fail"
        return None


class SlidingWindowLimiter:
    """At most `limit` accepted requests in any one-second window.

    Loops documents "10 requests per second" without saying how the second is measured. The
    strictest reading is a sliding window over the requests it accepted: a client that passes here
    passes any fixed-window or token-bucket limiter with the same number. Refused requests don't
    use up the budget, otherwise a client hammering a 429 could never recover.
    """

    def __init__(self) -> None:
        self._accepted: deque[float] = deque()

    def _expire(self, now: float) -> None:
        cutoff = now - RATE_WINDOW_SECONDS
        while self._accepted and self._accepted[0] <= cutoff:
            self._accepted.popleft()

    def remaining(self, limit: int, now: float) -> int:
        """What is left of the budget now, without using any of it."""
        self._expire(now)
        return max(limit - len(self._accepted), 0)

    def try_acquire(self, limit: int, now: float) -> tuple[bool, int]:
        """Take one slot if there is one; answer (accepted, remaining after this request)."""
        self._expire(now)
        if len(self._accepted) >= limit:
            return False, 0
        self._accepted.append(now)
        return True, limit - len(self._accepted)

    def clear(self) -> None:
        self._accepted.clear()
