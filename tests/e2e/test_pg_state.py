"""A PostgreSQL state end to end: the real CLI, the emulator, and the real server at
127.0.0.1:5432, each test in a schema of its own (dropped after). In CI a missing server fails.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.emulator.server import EmulatorHandle
from sync.ledger_db import PgState
from tests.e2e.conftest import Project
from tests.ledger_backends import drop_schema, new_pg_state, require_postgres

CONFIG = """
    name: people
    source:
      csv: people.csv
    loops:
      rate_limit: {rate}
      max_attempts: 2
    contact:
      email: email
      properties:
        plan: plan
    events:
      - name: signup
        email: email
"""


def people(count: int) -> str:
    return "email,plan\n" + "".join(f"p{i}@example.com,free\n" for i in range(count))


@pytest.fixture
def state() -> Iterator[PgState]:
    require_postgres()
    made = new_pg_state("e2e_state")
    try:
        yield made
    finally:
        drop_schema(made)


def sync(project: Project, state: PgState, *args: str) -> tuple[int, str, dict[str, object]]:
    """One run with LOOPS_SYNC_STATE set to `state`: its exit code, its output, its report."""
    done = project.sync("--report", "report.json", *args, LOOPS_SYNC_STATE=state.url)
    report = project.root / "report.json"
    return done.returncode, done.stdout + done.stderr, json.loads(report.read_text())


def wait_for_requests(project: Project, at_least: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while project.emulator.counters()["requests"] < at_least:
        assert time.monotonic() < deadline, "the run sent too little"
        time.sleep(0.05)


def assert_exactly_once(project: Project, count: int) -> None:
    emails = {c["email"] for c in project.emulator.contacts()}
    assert emails == {f"p{i}@example.com" for i in range(count)}
    keys = Counter(e["idempotencyKey"] for e in project.emulator.events())
    assert len(keys) == count
    assert set(keys.values()) == {1}


def test_a_fresh_container_with_the_same_state_sends_nothing_for_an_unchanged_source(
    tmp_path: Path, emulator: EmulatorHandle, state: PgState
) -> None:
    first = Project(tmp_path / "first-container", emulator)
    first.root.mkdir()
    first.write(CONFIG.format(rate=200), people(5))
    code, output, report = sync(first, state)
    assert code == 0, output
    assert report["requests"] == 5  # each contact rides on its signup event
    assert not (first.state / "ledger.sqlite").exists()  # the ledger is in PostgreSQL

    fresh = Project(tmp_path / "next-container", emulator)  # nothing of the first one's disk
    fresh.root.mkdir()
    fresh.write(CONFIG.format(rate=200), people(5))
    code, output, report = sync(fresh, state)
    assert code == 0, output
    assert report["requests"] == 0
    assert report["contacts_unchanged"] == 5
    assert report["events_already_delivered"] == 5
    assert_exactly_once(fresh, 5)
    history = json.loads(
        fresh.run("history", str(fresh.config), "--json", LOOPS_SYNC_STATE=state.url).stdout
    )
    assert [run["exit_code"] for run in history] == [0, 0]  # both containers' runs


def test_sigkill_mid_run_then_the_next_run_finishes_exactly_once(
    project: Project, state: PgState
) -> None:
    count = 40
    project.write(CONFIG.format(rate=100), people(count))
    project.emulator.set_faults(latency_ms=30)
    victim = project.start("run", str(project.config), "--quiet", LOOPS_SYNC_STATE=state.url)
    wait_for_requests(project, 25)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=10)
    assert project.emulator.counters()["requests"] < count  # it really was cut short

    project.emulator.set_faults(latency_ms=0)
    code, output, _ = sync(project, state)  # the killed run's lock went with its connection
    assert code == 0, output
    assert_exactly_once(project, count)
    code, output, report = sync(project, state)
    assert (code, report["requests"]) == (0, 0), output
    runs = json.loads(
        project.run("history", str(project.config), "--json", LOOPS_SYNC_STATE=state.url).stdout
    )
    assert [run["status"] for run in runs] == ["finished", "finished", "died"]


def test_an_event_is_delivered_once_even_after_loops_forgets_its_key(
    project: Project, state: PgState
) -> None:
    project.write(CONFIG.format(rate=200), people(3))
    assert sync(project, state)[0] == 0
    project.emulator.advance_clock(25 * 3600)  # past Loops' 24-hour idempotency window
    code, output, report = sync(project, state, "--full")
    assert code == 0, output
    assert report["events_sent"] == 0
    assert len(project.emulator.events()) == 3


def test_a_second_run_of_the_sync_exits_4_naming_the_holder_and_sends_nothing(
    project: Project, state: PgState
) -> None:
    # The local server trusts its users: any password passes, and none may be shown.
    with_password = PgState(state.url.replace("postgres@", "postgres:hunter2@"))
    project.write(CONFIG.format(rate=10), people(60))
    first = project.start("run", str(project.config), "--quiet", LOOPS_SYNC_STATE=with_password.url)
    try:
        wait_for_requests(project, 1)
        second = project.sync(LOOPS_SYNC_STATE=with_password.url)
    finally:
        first.communicate(timeout=60)
    assert second.returncode == 4
    assert "pid" in second.stderr
    assert "advisory lock" in second.stderr
    assert "hunter2" not in second.stdout + second.stderr
    assert first.returncode == 0
    assert len(project.api_requests()) == 60  # the first run's, nothing more


def test_two_syncs_in_one_state_do_not_see_each_others_rows(
    project: Project, state: PgState
) -> None:
    project.write(CONFIG.format(rate=200), people(3))
    assert sync(project, state)[0] == 0
    project.write(CONFIG.format(rate=200).replace("name: people", "name: other"))
    code, output, report = sync(project, state)
    assert code == 0, output
    assert report["contacts_unchanged"] == 0  # a sync of its own: nothing is known for it
    assert report["events_already_delivered"] == 0


def test_a_sqlite_ledger_moved_into_postgresql_sends_nothing_again(
    project: Project, state: PgState
) -> None:
    project.write(CONFIG.format(rate=200), people(5))
    assert project.sync().returncode == 0  # the SQLite ledger beside the config
    exported = project.run("state", "export", str(project.config), "people.ledger")
    assert exported.returncode == 0, exported.stderr
    assert "5 contacts, 5 events, 1 runs" in exported.stdout
    imported = project.run(
        "state", "import", str(project.config), "people.ledger", LOOPS_SYNC_STATE=state.url
    )
    assert imported.returncode == 0, imported.stderr
    assert state.where in imported.stdout
    shutil.rmtree(project.state)  # the job moves into containers: the old disk is gone

    project.emulator.advance_clock(25 * 3600)  # and Loops no longer knows the events' keys
    code, output, report = sync(project, state, "--full")
    assert code == 0, output
    assert (report["events_sent"], report["contacts_sent"]) == (0, 5)
    assert len(project.emulator.events()) == 5
    runs = json.loads(
        project.run("history", str(project.config), "--json", LOOPS_SYNC_STATE=state.url).stdout
    )
    assert len(runs) == 2  # the SQLite run came along
