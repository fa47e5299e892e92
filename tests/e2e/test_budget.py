"""End-to-end: syncs of one team, each its own process, config and state directory, share the
team's rate limit against one emulator at 10 requests/s.

What is asserted comes from the emulator's request log: how many 429s it answered, and how many
requests it accepted while every run had work. A run's requests are told apart by their emails.
Runs have more rows than a test waits for: once the emulator has seen them send together for a
few seconds, they are stopped (SIGTERM: no new request, exit 130), so a loaded machine that
starts them seconds apart makes a test longer, not wrong.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from sync.budget import LEASE, TICK
from sync.emulator.server import EmulatorHandle, running_emulator
from sync.errors import ExitCode
from sync.pacing import WINDOW
from tests.e2e.conftest import ACCOUNT_CHECK, Project

LIMIT = 10
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
MEASURED = 3.0  # seconds of sending together that a test looks at
CONFIG = """\
name: {name}
source: {{csv: people.csv}}
loops: {{{team}rate_limit: {limit}}}
contact: {{email: email, properties: {{firstName: name}}}}
"""


@pytest.fixture
def limited() -> Iterator[EmulatorHandle]:
    with running_emulator(
        rate_limit=LIMIT, latency_ms=50, api_key="e2e-key", request_log_size=0
    ) as handle:
        yield handle


class Runs:
    """Syncs of one team, started and stopped by the test; the budget in a home of the test's
    own (where a user's would go, not in the real home)."""

    def __init__(
        self, root: Path, emulator: EmulatorHandle, env: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.emulator = emulator
        self.env = env or {}  # e.g. a PostgreSQL state every run shares, as on several hosts
        self.processes: dict[str, subprocess.Popen[str]] = {}

    def start(self, name: str, rows: int = 400, team: str | None = None) -> None:
        """A sync of its own directory; its contacts' emails start with its name."""
        project = Project(self.root / name, self.emulator)
        project.root.mkdir()
        csv = "email,name\n" + "".join(f"{name}-{i}@example.com,N{i}\n" for i in range(rows))
        config = CONFIG.format(name=name, limit=LIMIT, team=f"team: {team}, " if team else "")
        project.write(config, csv)
        home = {"HOME": str(self.root / "home"), "XDG_STATE_HOME": ""}
        env = home | self.env
        self.processes[name] = project.start("run", str(project.config), "--quiet", **env)

    def wait_for(self, what: str, done: Callable[[dict[str, list[float]]], bool]) -> None:
        deadline = time.monotonic() + 90
        while not done(self.accepted()):
            assert time.monotonic() < deadline, f"{what} never happened\n{self.story()}"
            for name, process in self.processes.items():
                assert process.poll() is None, f"{name} ended early\n{self.story()}"
            time.sleep(0.1)

    def wait_together(self, seconds: float) -> None:
        """Until every run has been sending for `seconds` after the last one started."""

        def long_enough(by_run: dict[str, list[float]]) -> bool:
            if len(by_run) < len(self.processes):
                return False
            start = max(min(times) for times in by_run.values())
            return all(max(times) >= start + seconds for times in by_run.values())

        self.wait_for(f"{seconds} s of sending together", long_enough)

    def stop(self, name: str, sig: signal.Signals = signal.SIGTERM) -> int:
        process = self.processes.pop(name)
        process.send_signal(sig)
        out, err = process.communicate(timeout=60)
        assert sig == signal.SIGKILL or process.returncode == ExitCode.INTERRUPTED, out + err
        return process.returncode

    def finish(self, name: str) -> None:
        out, err = self.processes.pop(name).communicate(timeout=120)
        # The one line a first run writes to stderr even with --quiet: it sends a whole source.
        errors = [line for line in err.splitlines() if not line.startswith("warning: first run")]
        assert "sent" in out or not errors, err

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.stop(name)

    def accepted(self) -> dict[str, list[float]]:
        """When the emulator accepted each run's data requests, by run name."""
        times: dict[str, list[float]] = {}
        for request in self.emulator.requests():
            if request["body"] and request["status"] == 200:  # not the key and account checks
                name = request["body"]["email"].split("-")[0]
                times.setdefault(name, []).append(request["received_at"])
        return times

    def rate_limited(self) -> list[dict[str, Any]]:
        return [r for r in self.emulator.requests() if r["status"] == 429]

    def story(self) -> str:
        """Who sent what when, 429s included: the message of a failed assertion."""
        log = self.emulator.requests()
        zero = log[0]["received_at"] if log else 0
        return "\n".join(
            f"{r['received_at'] - zero:6.2f} {r['status']} "
            + (r["body"]["email"].split("@")[0] if r["body"] else r["path"])
            for r in log
        )


@pytest.fixture
def runs(tmp_path: Path, limited: EmulatorHandle) -> Iterator[Runs]:
    team = Runs(tmp_path, limited)
    yield team
    for process in team.processes.values():
        process.kill()
        process.communicate()


def stray_429s(joined: int) -> int:
    """What runs joining a busy team may meet: a run checks its key and its account (three
    requests: `GET /v1/api-key`, the properties, the lists) before it joins the budget, so the
    first may find the window full (a 429, tried again), and each may take a request another
    run counted on (a 429 more each, retried). A fight over the limit costs dozens."""
    return (1 + 1 + len(ACCOUNT_CHECK)) * joined


def rate_between(times: list[float], start: float, end: float) -> float:
    """Requests a second the emulator accepted in [start, end]: the gaps between those in it,
    over the time the window spans."""
    inside = [t for t in times if start <= t <= end]
    return (len(inside) - 1) / (end - start)


def own_rate(times: list[float], start: float, end: float) -> float:
    """Requests a second one run sent in [start, end], over the span of its own requests there:
    the window's ends are other runs' requests, and measured over the window a run paced at 3/s
    loses up to one of its intervals (2.4 instead of 3 over 3.3 s)."""
    inside = [t for t in times if start <= t <= end]
    if len(inside) < 2:  # a starved run: no share to measure
        return 0.0
    return (len(inside) - 1) / (inside[-1] - inside[0])


def test_two_runs_of_one_key_share_the_limit_and_one_that_ends_frees_its_share(
    runs: Runs,
) -> None:
    runs.start("long")
    runs.wait_for("the long run sending", lambda by_run: len(by_run.get("long", [])) >= 5)
    runs.start("short", rows=40)  # about 8 s at half the limit
    runs.finish("short")
    short = runs.accepted()["short"]
    freed = max(short) + WINDOW + 2 * TICK  # its last request has left the window
    runs.wait_for("the long run alone", lambda by_run: max(by_run["long"]) >= freed + MEASURED)
    runs.stop_all()
    long = runs.accepted()["long"]
    assert len(short) == 40
    assert len(runs.rate_limited()) <= stray_429s(joined=1), runs.story()
    together = sorted([*short, *long])
    assert rate_between(together, min(short), max(short)) >= 0.9 * LIMIT, runs.story()
    assert rate_between(long, freed, max(long)) >= 0.9 * LIMIT, runs.story()
    budget = runs.root / "home" / ".local" / "state" / "loops-sync" / "budgets.sqlite3"
    assert budget.exists()  # the per-user place, wherever each config lives


def test_three_runs_of_one_key_share_the_limit_and_use_it(runs: Runs) -> None:
    for name in ("first", "second", "third"):
        runs.start(name)
    runs.wait_together(MEASURED)
    runs.stop_all()
    by_run = runs.accepted()
    start = max(min(times) for times in by_run.values())  # the last run's first request
    end = min(max(times) for times in by_run.values())  # the first run to stop: its last
    every = sorted(t for times in by_run.values() for t in times)
    assert len(runs.rate_limited()) <= stray_429s(joined=2), runs.story()
    assert rate_between(every, start, end) >= 0.9 * LIMIT, runs.story()
    shares = [own_rate(times, start, end) for times in by_run.values()]
    assert min(shares) >= 0.25 * LIMIT, runs.story()  # each has its part: 4, 3 and 3


@pytest.fixture
def runs_sharing_postgresql(tmp_path: Path, limited: EmulatorHandle) -> Iterator[Runs]:
    """Runs whose state (ledger, history, lock and budget) is one PostgreSQL schema: as runs
    on several hosts share it. The schema is the test's own, dropped after."""
    schema = f"loops_sync_budget_e2e_{os.getpid()}"
    with psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5) as db:
        db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    team = Runs(tmp_path, limited, {"LOOPS_SYNC_STATE": f"{POSTGRES}?schema={schema}"})
    yield team
    for process in team.processes.values():
        process.kill()
        process.communicate()
    with psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5) as db:
        db.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_runs_sharing_a_postgresql_state_share_the_limit_and_use_it(
    runs_sharing_postgresql: Runs,
) -> None:
    runs = runs_sharing_postgresql
    for name in ("first", "second", "third"):
        runs.start(name)
    runs.wait_together(MEASURED)
    runs.stop_all()
    by_run = runs.accepted()
    start = max(min(times) for times in by_run.values())
    end = min(max(times) for times in by_run.values())
    every = sorted(t for times in by_run.values() for t in times)
    assert len(runs.rate_limited()) <= stray_429s(joined=2), runs.story()
    assert rate_between(every, start, end) >= 0.9 * LIMIT, runs.story()


def test_a_run_killed_frees_its_share_when_its_lease_runs_out(runs: Runs) -> None:
    runs.start("doomed")
    runs.start("survivor")
    runs.wait_together(1.0)
    runs.stop("doomed", signal.SIGKILL)
    killed = max(runs.accepted()["doomed"])
    freed = killed + LEASE + WINDOW + 2 * TICK
    runs.wait_for("the survivor alone", lambda by_run: max(by_run["survivor"]) >= freed + MEASURED)
    runs.stop_all()
    times = runs.accepted()["survivor"]
    assert rate_between(times, freed, max(times)) >= 0.9 * LIMIT, runs.story()
    assert len(runs.rate_limited()) <= stray_429s(joined=1), runs.story()


def test_runs_that_name_different_teams_do_not_share_a_budget(runs: Runs) -> None:
    """`loops.team` names the budget: keys of one team share it when their configs name the same
    team. Named differently here (same key), each run paces at the whole limit and Loops
    refuses what goes over it: why every config of a team must name it, or none."""
    runs.start("acme", team="acme")
    runs.start("zenith", team="zenith")
    runs.wait_together(2.0)
    runs.stop_all()
    assert len(runs.rate_limited()) > 2 * stray_429s(joined=1), runs.story()
