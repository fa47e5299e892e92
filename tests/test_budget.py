"""The team's rate budget: shares that never add up to more than the limit in any window, and
that use all of it once the runs have settled; its stores (SQLite here, PostgreSQL below).

The rules are tested on `settle` with a fake clock: a simulation of runs joining, renewing every
tick, leaving and dying checks, at every step, what each run may have in the server's window.
"""

from __future__ import annotations

import math
import os
import sqlite3
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync.budget import (
    LEASE,
    TICK,
    Ask,
    Grant,
    Member,
    Settlement,
    SharedBudget,
    Store,
    StoreUnavailable,
    budget_name,
    budget_place,
    open_store,
    settle,
    sharing,
)
from sync.budget_pg import masked
from sync.budget_sqlite import BUDGET_FILE, SqliteStore
from sync.config import load_config
from sync.pacing import WINDOW, Pacer

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


class MemoryStore:
    """A store in a dict, on a clock the test moves."""

    where = "memory"

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.rows: dict[str, dict[str, Member]] = {}

    def transact(self, budget: str, decide: Callable[[float, list[Member]], Settlement]) -> Grant:
        rows = self.rows.setdefault(budget, {})
        settled = decide(self.clock(), list(rows.values()))
        for gone in settled.gone:
            rows.pop(gone, None)
        for row in settled.writes:
            rows[row.id] = row
        return settled.grant

    def close(self) -> None:
        pass


@dataclass
class Run:
    """A run in the simulation: the shares it paced at, and since when."""

    id: str
    limit: float
    phase: float  # its renewals fall at phase + k * TICK
    shares: list[tuple[float, float]] = field(default_factory=list)  # (since, share)
    ended: float = math.inf  # left or died: no request after this

    @property
    def share(self) -> float:
        return self.shares[-1][1] if self.shares else 0.0

    def most_in_window(self, now: float) -> float:
        """The most it may have in the server's window ending `now`: the highest share in force
        during that second, while it was sending."""
        start = now - WINDOW
        if self.ended <= start:
            return 0.0
        used = 0.0
        for index, (since, share) in enumerate(self.shares):
            until = self.shares[index + 1][0] if index + 1 < len(self.shares) else math.inf
            if since <= min(now, self.ended) and until > start:
                used = max(used, share)
        return used


class Team:
    """Runs of one budget on a fake clock, renewing every TICK, as `SharedBudget` does."""

    def __init__(self, limit: float) -> None:
        self.now = 1_000_000.0
        self.limit = limit
        self.store = MemoryStore(lambda: self.now)
        self.runs: list[Run] = []
        self.live: list[Run] = []

    def exchange(self, run: Run, **leaving: float) -> Grant:
        ask = Ask(run.id, run.limit, run.share, bool(leaving), leaving.get("quiet_in", 0.0))
        return self.store.transact("b", lambda now, rows: settle(now, rows, ask))

    def join(self, limit: float | None = None) -> Run:
        """A run whose config says `limit` (the team's real one by default)."""
        run = Run(f"r{len(self.runs)}", limit or self.limit, phase=(len(self.runs) * 0.07) % TICK)
        self.runs.append(run)
        self.live.append(run)
        self._follow(run, self.exchange(run))
        return run

    def leave(self, run: Run) -> None:
        self.live.remove(run)
        run.ended = self.now
        self.exchange(run, quiet_in=WINDOW + 0.02)  # its last request sent just now
        run.shares.append((self.now, 0.0))

    def die(self, run: Run) -> None:
        self.live.remove(run)
        run.ended = self.now

    def advance(self, seconds: float, step: float = 0.01) -> None:
        """Move the clock; every live run renews on its ticks; the window is checked each step."""
        end = self.now + seconds
        while self.now < end - 1e-9:
            before, self.now = self.now, min(end, self.now + step)
            for run in list(self.live):
                if math.floor((self.now - run.phase) / TICK) > math.floor(
                    (before - run.phase) / TICK
                ):
                    self._follow(run, self.exchange(run))
            self.check_window()

    def check_window(self) -> None:
        used = sum(run.most_in_window(self.now) for run in self.runs)
        assert used <= self.limit + 1e-9, [(r.id, r.shares) for r in self.runs]

    def _follow(self, run: Run, grant: Grant) -> None:
        if grant.share != run.share:
            run.shares.append((self.now, grant.share))

    def shares(self) -> list[float]:
        return [run.share for run in self.live]


def test_a_run_alone_has_the_whole_limit_fraction_included() -> None:
    team = Team(2.5)
    team.join()
    assert team.shares() == [2.5]


def test_a_second_run_gets_half_once_the_first_has_left_it_free() -> None:
    team = Team(10)
    first = team.join()
    second = team.join()
    assert second.share == 0  # the first still paces at 10: nothing free yet
    team.advance(TICK)
    assert first.share == 5  # lowered at its next renewal
    assert second.share == 0  # the first's requests at 10 are still in the window
    team.advance(WINDOW + 0.25 + 2 * TICK)
    assert team.shares() == [5, 5]


def test_three_runs_split_ten_as_four_three_three_and_use_all_of_it() -> None:
    team = Team(10)
    for _ in range(3):
        team.join()
        team.advance(0.3)
    team.advance(2)
    assert team.shares() == [4, 3, 3]


def test_more_runs_than_requests_a_second_wait_their_turn() -> None:
    team = Team(2)
    runs = [team.join() for _ in range(3)]
    team.advance(3)
    assert team.shares() == [1, 1, 0]
    team.leave(runs[0])
    team.advance(2)
    assert team.shares() == [1, 1]


def test_a_run_that_ends_frees_its_share_once_its_last_requests_are_out_of_the_window() -> None:
    team = Team(10)
    first, second = team.join(), team.join()
    team.advance(3)
    team.leave(first)
    team.advance(TICK)
    assert second.share == 5  # the first's last requests still count at Loops
    team.advance(WINDOW)
    assert team.shares() == [10]


def test_a_run_that_ended_quietly_frees_its_share_at_the_next_renewal() -> None:
    team = Team(10)
    first, second = team.join(), team.join()
    team.advance(3)
    team.live.remove(first)
    first.ended = team.now - 2  # its last request went two seconds ago
    team.exchange(first, quiet_in=0.0)
    first.shares.append((team.now, 0.0))
    team.advance(TICK)
    assert team.shares() == [10]
    assert team.store.rows["b"].keys() == {second.id}


def test_a_run_that_dies_frees_its_share_when_its_lease_runs_out() -> None:
    team = Team(10)
    first, second = team.join(), team.join()
    team.advance(3)
    team.die(first)
    team.advance(LEASE - TICK)
    assert second.share == 5
    team.advance(TICK + WINDOW + 2 * TICK)
    assert team.shares() == [10]
    assert team.store.rows["b"].keys() == {second.id}  # the dead run's row is gone


def test_the_lowest_limit_any_run_knows_is_the_teams() -> None:
    team = Team(10)
    team.join()
    team.join(limit=4)  # its config says 4 (or Loops told it so)
    team.advance(3)
    assert team.shares() == [2, 2]


def test_a_clock_set_back_does_not_keep_a_dead_runs_share() -> None:
    now = [3600.0]
    store = MemoryStore(lambda: now[0])
    store.rows["b"] = {"ghost": Member("ghost", 10, 3600, 10, expires=3600 + LEASE)}
    now[0] = 1.0  # the clock was set back an hour; the ghost's run died then
    assert store.transact("b", lambda t, rows: settle(t, rows, Ask("me", 10, 0))).share == 0
    now[0] += LEASE + WINDOW + 0.5
    assert store.transact("b", lambda t, rows: settle(t, rows, Ask("me", 10, 0))).share == 10


def test_a_run_whose_row_was_given_up_gets_back_only_what_is_free() -> None:
    """Its store failed for longer than the lease: the others took its share meanwhile."""
    others = [Member("other", 10, 0, 10, expires=100 + LEASE)]
    settled = settle(100, others, Ask("lapsed", 10, share=5))
    assert settled.grant.share == 0
    (row,) = settled.writes
    assert (row.held, row.held_until) == (5, 100 + WINDOW + 0.25)  # what it sent still counts


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["join", "join lower", "leave", "die", "wait"]),
            st.integers(0, 7),
            st.floats(0.01, 1.5),
        ),
        min_size=1,
        max_size=14,
    ),
    st.sampled_from([1, 2.5, 3, 10, 25]),
)
def test_the_runs_never_have_more_than_the_limit_in_a_window_and_then_use_all_of_it(
    steps: list[tuple[str, int, float]], limit: float
) -> None:
    team = Team(limit)
    for action, which, seconds in steps:
        if action.startswith("join") and len(team.live) < 6:
            team.join(limit / 2 if action == "join lower" else limit)  # a config set lower
        elif action in ("leave", "die") and team.live:
            run = team.live[which % len(team.live)]
            team.leave(run) if action == "leave" else team.die(run)
        team.advance(seconds)  # checks the window at every step
    team.advance(LEASE + WINDOW + 1)
    lowest = min([run.limit for run in team.live], default=limit)
    if len(team.live) == 1:
        assert team.shares() == [lowest]
    elif team.live:
        assert sum(team.shares()) == (math.floor(lowest) or lowest)


def test_the_budget_is_named_by_a_hash_never_by_the_key() -> None:
    name = budget_name("https://app.loops.so/api", "secret-key-123", None)
    assert "secret-key-123" not in name
    assert name == budget_name("https://app.loops.so/api", "secret-key-123", None)
    assert name != budget_name("https://app.loops.so/api", "other-key", None)
    assert name != budget_name("http://127.0.0.1:8787/api", "secret-key-123", None)
    # loops.team: runs with different keys of one team share it
    assert budget_name("u", "key-a", "acme") == budget_name("u", "key-b", "acme")


def test_the_budget_lives_per_user_unless_told(tmp_path: Path) -> None:
    state = tmp_path / ".loops-sync"
    home = {"HOME": "/home/ada"}
    assert budget_place(home, None, state) == "/home/ada/.local/state/loops-sync"
    assert budget_place(home | {"XDG_STATE_HOME": "/xdg"}, None, state) == "/xdg/loops-sync"
    assert budget_place(home | {"LOOPS_SYNC_BUDGET": str(tmp_path)}, None, state) == str(tmp_path)
    assert budget_place(home | {"LOOPS_SYNC_BUDGET": "off"}, None, state) is None
    assert budget_place(home | {"LOOPS_SYNC_STATE": POSTGRES}, None, state) == POSTGRES
    assert budget_place(home, POSTGRES, state) == POSTGRES
    assert budget_place(home | {"LOOPS_SYNC_BUDGET": POSTGRES}, None, state) == POSTGRES


def test_loops_team_is_read_from_the_config(tmp_path: Path) -> None:
    config = tmp_path / "sync.yaml"
    config.write_text(
        textwrap.dedent("""
        name: s
        source: {csv: people.csv}
        loops: {team: acme}
        contact: {email: Email}
        """)
    )
    loaded = load_config(config, env={"LOOPS_SYNC_BUDGET": str(tmp_path / "b")})
    assert loaded.spec.loops.team == "acme"
    assert loaded.budget_place == str(tmp_path / "b")


# --- the stores -----------------------------------------------------------------------------


def postgres_store() -> Store:
    try:
        with psycopg.connect(POSTGRES, connect_timeout=5):
            pass
    except psycopg.OperationalError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {error}")
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is not reachable: {error}")
    return open_store(POSTGRES)


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Opens a store as a new run would (each its own connection), on one place."""
    opened: list[Store] = []

    def open_one() -> Store:
        store = open_store(str(tmp_path)) if request.param == "sqlite" else postgres_store()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()
    if request.param == "postgresql" and opened:
        with psycopg.connect(POSTGRES, autocommit=True) as db:  # the members go with them
            db.execute("DELETE FROM loops_sync.budgets WHERE budget = ANY(%s)", (USED,))


USED: list[str] = []  # budgets the tests made, removed from PostgreSQL after each


def unique_budget() -> str:
    name = budget_name("http://test", os.urandom(8).hex(), None)
    USED.append(name)
    return name


def test_runs_on_two_connections_share_one_budget(stores: Callable[[], Store]) -> None:
    first, second, budget = stores(), stores(), unique_budget()
    assert first.transact(budget, lambda now, rows: settle(now, rows, Ask("a", 10, 0))).share == 10
    grant = second.transact(budget, lambda now, rows: settle(now, rows, Ask("b", 10, 0)))
    assert (grant.share, grant.runs) == (0, 2)  # a paces at 10 until it renews
    assert first.transact(budget, lambda now, rows: settle(now, rows, Ask("a", 10, 10))).share == 5
    left = Ask("a", 10, 5, leaving=True, quiet_in=0)
    first.transact(budget, lambda now, rows: settle(now, rows, left))
    assert second.transact(budget, lambda now, rows: settle(now, rows, Ask("b", 10, 0))).share == 10


def test_a_failed_decision_writes_nothing(stores: Callable[[], Store]) -> None:
    store, budget = stores(), unique_budget()
    store.transact(budget, lambda now, rows: settle(now, rows, Ask("a", 10, 0)))

    def broken(now: float, rows: list[Member]) -> Settlement:
        settled = settle(now, rows, Ask("b", 10, 0))
        raise RuntimeError(settled)

    with pytest.raises(RuntimeError):
        store.transact(budget, broken)
    seen: list[list[Member]] = []

    def look(now: float, rows: list[Member]) -> Settlement:
        seen.append(rows)
        return settle(now, rows, Ask("a", 10, 10))

    store.transact(budget, look)
    assert [member.id for member in seen[0]] == ["a"]


def test_an_unusable_directory_is_a_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreUnavailable, match=str(blocker)):
        SqliteStore(blocker / "budget")


def test_a_budget_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / BUDGET_FILE) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreUnavailable, match="newer loops-sync"):
        SqliteStore(tmp_path)


def test_an_unreachable_postgresql_is_a_store_unavailable_without_its_password() -> None:
    url = "postgresql://ada:s3cret@127.0.0.1:1/test"
    with pytest.raises(StoreUnavailable) as raised:
        open_store(url)
    assert "s3cret" not in str(raised.value)
    assert masked(url) == "postgresql://ada:***@127.0.0.1:1/test"


# --- runs in one process, on a real store and the real clock -----------------------------------


def test_two_members_share_the_pace_and_the_last_gets_it_all_back(tmp_path: Path) -> None:
    """`SharedBudget` renews in the background; nothing here asserts a duration: each step
    waits (bounded) for the shares to become what the rules say."""
    budget = unique_budget()
    first, second = Pacer(10), Pacer(10)

    async def until(condition: Callable[[], bool]) -> None:
        with anyio.fail_after(10):
            while not condition():
                await anyio.sleep(0.02)

    async def main() -> None:
        async with anyio.create_task_group() as group:
            async with sharing(lambda: SqliteStore(tmp_path), budget, first, group) as warnings:
                assert first.rate == 10
                async with sharing(lambda: SqliteStore(tmp_path), budget, second, group):
                    await until(lambda: (first.rate, second.rate) == (5, 5))
                    assert (first.others, second.others) == (5, 5)
                await until(lambda: first.rate == 10)
                assert first.others == 0
            group.cancel_scope.cancel()
        assert warnings == []

    anyio.run(main, backend="asyncio")
    with sqlite3.connect(tmp_path / BUDGET_FILE) as db:
        assert db.execute("SELECT count(*) FROM budget_members").fetchone() == (0,)


def test_a_store_that_cannot_be_opened_leaves_the_run_the_whole_limit(tmp_path: Path) -> None:
    pacer = Pacer(10)
    blocker = tmp_path / "file"
    blocker.write_text("")

    async def main() -> list[str]:
        async with anyio.create_task_group() as group:
            async with sharing(lambda: SqliteStore(blocker), unique_budget(), pacer, group) as w:
                assert pacer.rate == 10
            group.cancel_scope.cancel()
        return w

    (warning,) = anyio.run(main, backend="asyncio")
    assert "paced alone at 10 requests/s" in warning
    assert str(blocker) in warning


def test_a_store_that_fails_after_the_join_keeps_the_last_share_and_says_so() -> None:
    class Failing(MemoryStore):
        fail = False

        def transact(
            self, budget: str, decide: Callable[[float, list[Member]], Settlement]
        ) -> Grant:
            if self.fail:
                raise StoreUnavailable("disk gone")
            return super().transact(budget, decide)

    clock = [0.0]
    store = Failing(lambda: clock[0])
    pacer = Pacer(10)

    async def main() -> str | None:
        member = SharedBudget(store, "b", pacer, clock=lambda: clock[0], tick=0.01)
        await member.join()
        store.fail = True
        clock[0] += LEASE + 1
        async with anyio.create_task_group() as group:
            group.start_soon(member.keep)
            with anyio.fail_after(5):
                while member.warning is None:
                    await anyio.sleep(0.01)
            await member.leave()
        return member.warning

    warning = anyio.run(main, backend="asyncio")
    assert pacer.rate == 10
    assert warning is not None
    assert "disk gone" in warning
