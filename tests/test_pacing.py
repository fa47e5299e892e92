"""The pacer never lets more than the limit into any one-second window, and wastes little of it."""

from __future__ import annotations

import bisect

import anyio
import pytest

from sync.pacing import Pacer, Slot


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def send_times(pacer: Pacer, clock: FakeClock, count: int) -> list[float]:
    """Every request asks at once (a pool of eager workers); each goes at its slot."""
    return [pacer.reserve().sent_at for _ in range(count)]


def most_in_any_second(times: list[float]) -> int:
    ordered = sorted(times)
    return max(bisect.bisect_left(ordered, t + 1.0) - i for i, t in enumerate(ordered))


@pytest.mark.parametrize("rate", [1, 2.5, 10, 100])
def test_never_more_than_the_limit_in_any_second_the_first_included(rate: float) -> None:
    clock = FakeClock()
    times = send_times(Pacer(rate, clock=clock), clock, int(rate * 5) + 3)
    assert most_in_any_second(times) <= int(rate)
    assert times[0] == clock.now  # no needless wait before the first request


@pytest.mark.parametrize("rate", [10, 100])
def test_keeps_close_to_the_limit(rate: float) -> None:
    clock = FakeClock()
    count = int(rate * 20)
    times = send_times(Pacer(rate, clock=clock), clock, count)
    achieved = (count - 1) / (times[-1] - times[0])
    assert achieved >= 0.95 * rate


def test_a_lower_server_limit_lowers_the_pace() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock)
    pacer.answered(pacer.reserve(), limit=4, remaining=3)
    times = send_times(pacer, clock, 20)
    assert most_in_any_second(times) <= 4
    assert pacer.lowered_to == 4


def test_pause_after_a_429_delays_the_next_slot() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock)
    pacer.reserve()
    pacer.pause(2.0)
    assert pacer.reserve().sent_at - clock.now == pytest.approx(2.0)


def test_budget_spent_by_another_client_pauses_for_a_window() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock)
    slot = pacer.reserve()
    clock.now += 0.15
    pacer.answered(slot, limit=10, remaining=0)  # we sent one; someone else spent the other nine
    assert pacer.reserve().sent_at - clock.now >= 0.9


def test_our_own_full_window_does_not_pause() -> None:
    """The server's last answer of a full window says 0 left: that is us, at full pace."""
    clock = FakeClock()
    pacer = Pacer(10, clock=clock)
    slots = [pacer.reserve() for _ in range(30)]
    for index, slot in enumerate(slots):
        clock.now = slot.sent_at + 0.150  # each answer 150 ms after its request
        in_window = min(index + 1, 10)
        pacer.answered(slot, limit=10, remaining=10 - in_window)
    clock.now = slots[-1].sent_at + 0.150
    assert pacer.reserve().sent_at - slots[-1].sent_at < 0.15


def test_a_request_that_reached_the_server_late_holds_back_the_window() -> None:
    """The first request's handshake delays it at the server: the 11th must wait for that."""
    clock = FakeClock()
    pacer = Pacer(10, clock=clock)
    first = pacer.reserve()
    others = [pacer.reserve() for _ in range(9)]
    clock.now = first.sent_at + 0.090  # the first answer took 90 ms (a new connection)
    pacer.answered(first)
    for slot in others:
        clock.now = slot.sent_at + 0.040  # the rest took 40 ms on warm connections
        pacer.answered(slot)
    eleventh = pacer.reserve()
    assert eleventh.sent_at >= first.sent_at + 0.050 + 1.0


def test_steady_round_trips_cost_no_pace() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock)
    times = []
    for _ in range(50):
        slot = pacer.reserve()
        clock.now = slot.sent_at + 0.150
        pacer.answered(slot)
        clock.now = slot.sent_at
        times.append(slot.sent_at)
    assert (len(times) - 1) / (times[-1] - times[0]) >= 0.95 * 10


def test_a_wait_for_a_far_slot_gives_way_to_a_stop() -> None:
    """At one request a minute the second slot is a minute away; a stop must not wait for it."""
    pacer = Pacer(1 / 60)
    stop = anyio.Event()

    async def main() -> tuple[Slot | None, Slot | None]:
        first = await pacer.wait(until=stop.wait)
        stop.set()
        with anyio.fail_after(5):
            second = await pacer.wait(until=stop.wait)
        return first, second

    first, second = anyio.run(main, backend="asyncio")
    assert first is not None  # the first slot is now: nothing to wait for
    assert second is None
