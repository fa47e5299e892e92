"""Incremental, resumable, exactly-once: the ledger's promises, checked in the emulator."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

from tests.e2e.conftest import Project

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


def people(count: int, plan: str = "free") -> str:
    return "email,plan\n" + "".join(f"p{i}@example.com,{plan}\n" for i in range(count))


def wait_for_requests(project: Project, at_least: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while project.emulator.counters()["requests"] < at_least:
        assert time.monotonic() < deadline, "the run sent too little"
        time.sleep(0.05)


def assert_exactly_once(project: Project, count: int, plan: str = "free") -> None:
    contacts = {c["email"]: c for c in project.emulator.contacts()}
    assert set(contacts) == {f"p{i}@example.com" for i in range(count)}
    assert all(c["plan"] == plan for c in contacts.values())
    keys = Counter(e["idempotencyKey"] for e in project.emulator.events())
    assert len(keys) == count
    assert set(keys.values()) == {1}


def test_a_failed_row_is_sent_again_next_run_and_then_marked_delivered(project: Project) -> None:
    project.write(CONFIG.format(rate=200), people(5))
    project.emulator.set_faults(fail_match="p3@example.com")
    first = project.sync("--report", "first.json")
    assert first.returncode == 5  # work left: the next run sends it
    report = json.loads((project.root / "first.json").read_text())
    assert report["failed"] == 1  # p3's one request: its upsert rides on its event
    assert report["deferred"] == 1  # p3's event waits for its upsert

    project.emulator.set_faults(fail_match=None)
    second = project.sync("--report", "second.json")
    assert second.returncode == 0, second.stderr
    report = json.loads((project.root / "second.json").read_text())
    assert report["retried_from_earlier"] == 1
    assert report["contacts_sent"] == 1
    assert report["events_sent"] == 1

    third = project.sync("--report", "third.json")
    assert json.loads((project.root / "third.json").read_text())["requests"] == 0
    assert third.returncode == 0
    assert_exactly_once(project, 5)


def test_an_event_is_never_delivered_twice_even_after_loops_forgets_its_key(
    project: Project,
) -> None:
    project.write(CONFIG.format(rate=200), people(3))
    assert project.sync().returncode == 0
    project.emulator.advance_clock(25 * 3600)  # past Loops' 24-hour idempotency window
    assert project.sync("--full").returncode == 0  # every contact again, events still not
    paths = Counter(r["path"] for r in project.api_requests())
    assert paths["/v1/events/send"] == 3  # the first run's, each carrying its contact
    assert paths["/v1/contacts/update"] == 3  # --full: the contacts again, on their own
    assert len(project.emulator.events()) == 3


def test_a_first_sync_needs_one_request_per_row(project: Project) -> None:
    project.write(CONFIG.format(rate=200), people(10))
    assert project.sync().returncode == 0
    requests = project.api_requests()
    assert len(requests) == 10
    assert all(r["body"]["plan"] == "free" and r["body"]["eventName"] == "signup" for r in requests)
    assert_exactly_once(project, 10)


def test_a_carrier_answered_409_still_lands_the_contact_properties(project: Project) -> None:
    project.write(CONFIG.format(rate=200), people(3))
    assert project.sync().returncode == 0
    for leftover in project.state.glob("ledger.sqlite*"):
        leftover.unlink()  # the ledger is lost (a new cron container, say)
    project.write(CONFIG.format(rate=200), people(3, plan="pro"))
    result = project.sync("--report", "again.json")
    assert result.returncode == 0, result.stderr
    report = json.loads((project.root / "again.json").read_text())
    assert report["events_duplicate"] == 3
    assert report["contacts_sent"] == 3
    assert {c["plan"] for c in project.emulator.contacts()} == {"pro"}
    assert len(project.emulator.events()) == 3


def test_sigkill_mid_run_loses_nothing_and_doubles_nothing(project: Project) -> None:
    count = 40
    project.write(CONFIG.format(rate=100), people(count))
    project.emulator.set_faults(latency_ms=30)
    victim = project.start("run", str(project.config), "--quiet")
    wait_for_requests(project, 25)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=10)
    assert project.emulator.counters()["requests"] < count  # it really was cut short

    project.emulator.set_faults(latency_ms=0)
    result = project.sync()
    assert result.returncode == 0, result.stderr
    assert_exactly_once(project, count)
    assert project.sync("--report", "after.json").returncode == 0
    assert json.loads((project.root / "after.json").read_text())["requests"] == 0


def test_two_runs_of_one_sync_at_once_the_second_exits_4_and_sends_nothing(
    project: Project,
) -> None:
    # Ten seconds of sending at 10/s: the second run meets the lock even on a busy machine.
    project.write(CONFIG.format(rate=10), people(100))
    first = project.start("run", str(project.config), "--quiet")
    try:
        wait_for_requests(project, 1)
        second = project.sync()
    finally:
        first.communicate(timeout=60)
    assert second.returncode == 4
    assert "pid" in second.stderr
    assert first.returncode == 0
    assert len(project.api_requests()) == 100  # the first run's, nothing more


def test_sigterm_finishes_requests_in_flight_flushes_and_the_next_run_completes(
    project: Project,
) -> None:
    count = 60
    project.write(CONFIG.format(rate=20), people(count))
    project.emulator.set_faults(latency_ms=50)
    running = project.start("run", str(project.config), "--report", "stopped.json")
    wait_for_requests(project, 10)
    running.send_signal(signal.SIGTERM)
    out, _ = running.communicate(timeout=30)
    assert running.returncode == 130
    report = json.loads((project.root / "stopped.json").read_text())
    assert report["stopped"] == "signal"
    assert report["not_sent"] > 0
    assert "next run continues" in out

    sent_before = len(project.api_requests())
    project.emulator.set_faults(latency_ms=0)
    assert project.sync().returncode == 0
    resent = len(project.api_requests()) - sent_before
    assert resent == count - sent_before  # the ledger was flushed: nothing sent twice
    assert_exactly_once(project, count)


def test_max_duration_stops_in_time_with_exit_5_and_the_next_run_continues(
    project: Project,
) -> None:
    count = 20
    project.write(CONFIG.format(rate=10), people(count))
    budget = project.sync("--max-duration", "1s", "--report", "budget.json")
    assert budget.returncode == 5
    report = json.loads((project.root / "budget.json").read_text())
    assert 0 < report["requests"] < count
    assert report["warnings"]  # the plan's ETA (4 s at 10/s) exceeded the budget

    project.write(CONFIG.format(rate=200), None)
    assert project.sync().returncode == 0
    assert_exactly_once(project, count)


def test_history_lists_runs_for_people_and_for_scripts(project: Project) -> None:
    project.write(CONFIG.format(rate=200), people(2))
    project.sync()
    project.sync()
    listing = project.run("history", str(project.config))
    assert listing.returncode == 0
    assert len(listing.stdout.strip().splitlines()) == 3  # a header and two runs
    runs = json.loads(project.run("history", str(project.config), "--json").stdout)
    assert [run["exit_code"] for run in runs] == [0, 0]
    assert runs[1]["counts"]["contacts_sent"] == 2
    assert runs[0]["counts"]["contacts_unchanged"] == 2
