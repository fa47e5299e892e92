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


def test_a_slot_follows_the_request_a_window_before_it_as_last_counted() -> None:
    """Slots are handed out ahead; an answer that comes back in between can move one later."""
    clock = FakeClock()
    pacer = Pacer(10, clock=clock)
    slots = [pacer.reserve() for _ in range(11)]
    assert slots[10].sent_at == pytest.approx(slots[0].sent_at + 1.02)
    clock.now = slots[1].sent_at + 0.05
    pacer.answered(slots[1])  # the fastest round trip: 50 ms
    clock.now = slots[0].sent_at + 0.25
    pacer.answered(slots[0])  # the first reached the server ~200 ms late
    assert pacer.due(slots[10]) >= slots[0].sent_at + 0.20 + 1.0


def test_a_lower_share_takes_back_the_slots_not_yet_due() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock)
    early = [pacer.reserve() for _ in range(6)]  # 0.0 .. 0.5 s
    clock.now += 0.25  # three of them went
    pacer.share(3, others=7)
    assert [slot.taken_back for slot in early] == [False] * 3 + [True] * 3
    later = [pacer.reserve().sent_at for _ in range(20)]
    sent = [slot.sent_at for slot in early[:3]] + later
    assert most_in_any_second(sent) <= 3
    assert later[0] >= early[0].sent_at + 1.0  # the three sent count against the new share


def test_a_higher_share_is_used_at_once() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock)
    pacer.share(2, others=8)
    pacer.reserve()
    pacer.share(10)
    times = send_times(pacer, clock, 30)
    assert times[0] - clock.now < 0.15
    assert (len(times) - 1) / (times[-1] - times[0]) >= 0.95 * 10


def test_the_budget_spent_by_the_other_runs_of_the_team_does_not_pause() -> None:
    """Two runs at 5 of 10: a full window is the two of them, not an outsider."""
    clock = FakeClock()
    pacer = Pacer(10, clock=clock)
    pacer.share(5, others=5)
    slots = [pacer.reserve() for _ in range(15)]
    for slot in slots[:10]:
        clock.now = slot.sent_at + 0.1
        pacer.answered(slot, limit=10, remaining=0)
    assert pacer.reserve().sent_at - slots[-1].sent_at < 0.25


def test_an_outsider_spending_the_budget_still_pauses_a_run_at_its_share() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock)
    pacer.share(5, others=5)
    slot = pacer.reserve()
    clock.now += 0.1
    pacer.answered(slot, limit=10, remaining=0)  # one of ours in the window, nine from elsewhere
    assert pacer.reserve().sent_at - clock.now >= 0.9


def test_a_lower_limit_from_loops_lowers_a_share_above_it() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock)
    pacer.share(6, others=4)
    pacer.answered(pacer.reserve(), limit=4, remaining=3)
    assert (pacer.limit, pacer.rate, pacer.lowered_to) == (4, 4, 4)


def test_quiet_once_the_last_answer_is_a_window_old() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock=clock)
    assert pacer.quiet_in() == 0  # nothing sent
    slot = pacer.reserve()
    clock.now += 0.3
    pacer.answered(slot)
    assert 0.9 < pacer.quiet_in() <= 1.02
    clock.now += 1.1
    assert pacer.quiet_in() == 0


def test_no_share_sends_nothing_until_one_comes() -> None:
    pacer = Pacer(10)
    pacer.share(0, others=10)
    got: list[Slot | None] = []

    async def main() -> None:
        async with anyio.create_task_group() as group:

            async def worker() -> None:
                got.append(await pacer.wait())

            group.start_soon(worker)
            await anyio.sleep(0.05)
            assert got == []  # waiting: no share
            pacer.share(5, others=5)
            with anyio.fail_after(5):
                while not got:
                    await anyio.sleep(0.01)

    anyio.run(main, backend="asyncio")
    assert got[0] is not None


def test_a_stop_ends_the_wait_for_a_share() -> None:
    pacer = Pacer(10)
    pacer.share(0, others=10)
    stop = anyio.Event()

    async def main() -> Slot | None:
        stop.set()
        with anyio.fail_after(5):
            return await pacer.wait(until=stop.wait)

    assert anyio.run(main, backend="asyncio") is None


def test_a_new_share_keeps_a_pause_in_force() -> None:
    """A 429's Retry-After still holds when the budget changes the share meanwhile."""
    clock = FakeClock()
    pacer = Pacer(10, clock=clock)
    pacer.reserve()
    pacer.pause(2.0)
    pacer.share(5, others=5)
    assert pacer.reserve().sent_at - clock.now >= 2.0
