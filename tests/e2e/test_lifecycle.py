"""A run's life through the real CLI: how it ends, what it reports, what history remembers."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import polars as pl
import psycopg
import pytest

from sync.lock import hold_lock
from sync.state import StateDir
from tests.e2e.conftest import Project

CONFIG = """
    name: people
    source:
      csv: people.csv
    loops:
      rate_limit: {rate}
      concurrency: 2
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


def history(project: Project) -> list[dict[str, Any]]:
    listing = project.run("history", str(project.config), "--json")
    assert listing.returncode == 0, listing.stderr
    runs: list[dict[str, Any]] = json.loads(listing.stdout)
    return runs


def wait_for_requests(project: Project, at_least: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while project.emulator.counters()["requests"] < at_least:
        assert time.monotonic() < deadline, "the run sent too little"
        time.sleep(0.05)


def test_a_killed_run_is_shown_as_died_once_the_next_run_starts(project: Project) -> None:
    project.write(CONFIG.format(rate=100), people(40))
    project.emulator.set_faults(latency_ms=30)
    victim = project.start("run", str(project.config), "--quiet")
    wait_for_requests(project, 10)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=10)

    project.emulator.set_faults(latency_ms=0)
    assert project.sync().returncode == 0
    latest, killed = history(project)
    assert (latest["status"], latest["exit_code"]) == ("finished", 0)
    assert (killed["status"], killed["exit_code"], killed["ended_at"]) == ("died", None, None)
    assert killed["reason"].startswith("died: no end was recorded")

    table = project.run("history", str(project.config)).stdout.splitlines()
    assert "died: no end was recorded" in table[2]
    assert "running" not in "\n".join(table)


def test_limit_leaves_work_exit_5_and_says_how_much(project: Project) -> None:
    project.write(CONFIG.format(rate=200), people(5))
    limited = project.run("run", str(project.config), "--limit", "2", "--report", "limit.json")
    assert limited.returncode == 5, limited.stderr
    assert "--limit reached: 3 requests for 3 contacts left for the next run" in limited.stdout
    report = json.loads((project.root / "limit.json").read_text())
    assert (report["requests_left_by_limit"], report["contacts_left_by_limit"]) == (3, 3)
    assert (report["work_left"], report["exit_code"]) == (3, 5)
    assert len(project.emulator.contacts()) == 2
    assert "--limit" in history(project)[0]["reason"]

    assert project.sync().returncode == 0
    assert len(project.emulator.contacts()) == 5


STALE = {"sync": "people", "exit_code": 0, "note": "last week's"}


def test_a_config_error_still_writes_the_report(project: Project) -> None:
    project.write(CONFIG.format(rate=200).replace("plan: plan", "plan: Plan"), people(3))
    (project.root / "last.json").write_text(json.dumps(STALE))
    result = project.sync("--report", "last.json")
    assert result.returncode == 2
    report = json.loads((project.root / "last.json").read_text())
    assert report["exit_code"] == 2
    assert "Plan" in report["error"]
    assert "note" not in report
    [run] = history(project)  # the source was read under the lock: the run is in history
    assert (run["status"], run["exit_code"]) == ("failed", 2)
    assert "Plan" in run["reason"]


def test_a_wrong_api_key_still_writes_the_report_and_history_says_why(project: Project) -> None:
    project.write(CONFIG.format(rate=200), people(3))
    (project.root / "last.json").write_text(json.dumps(STALE))
    result = project.sync("--report", "last.json", LOOPS_API_KEY="sk-wrong-secret")
    assert result.returncode == 3
    text = (project.root / "last.json").read_text()
    assert "sk-wrong-secret" not in text
    report = json.loads(text)
    assert report["exit_code"] == 3
    assert "API key" in report["error"]
    assert report["rows_read"] == 3  # the figures as far as the run got
    [run] = history(project)
    assert (run["status"], run["exit_code"], run["reason"]) == ("failed", 3, report["error"])


def test_a_locked_run_still_writes_the_report(project: Project) -> None:
    project.write(CONFIG.format(rate=200), people(3))
    (project.root / "last.json").write_text(json.dumps(STALE))
    with hold_lock(StateDir(project.state, "people")):
        result = project.sync("--report", "last.json")
    assert result.returncode == 4
    report = json.loads((project.root / "last.json").read_text())
    assert report["exit_code"] == 4
    assert "another run of sync 'people' is in progress" in report["error"]
    assert project.emulator.counters()["requests"] == 0


LIMITED_DISK = """
import resource, runpy, sys
resource.setrlimit(resource.RLIMIT_FSIZE, ({size}, {size}))
sys.argv = ["loops-sync", *sys.argv[1:]]
runpy.run_module("sync", run_name="__main__")
"""


def run_on_small_disk(
    project: Project, max_file_bytes: int, *options: str
) -> subprocess.CompletedProcess[str]:
    """`loops-sync run` in a process whose files may not grow past `max_file_bytes`."""
    return subprocess.run(
        [
            sys.executable,
            "-c",
            LIMITED_DISK.format(size=max_file_bytes),
            "run",
            str(project.config),
            *options,
        ],
        cwd=project.root,
        env=project.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_full_disk_stops_sending_with_exit_6_and_the_next_run_finishes_the_job(
    project: Project,
) -> None:
    """The ledger's file may not grow past 150 kB (RLIMIT_FSIZE: root obeys it too)."""
    count = 200
    project.write(CONFIG.format(rate=500), people(count))
    full = run_on_small_disk(project, 150_000, "--quiet", "--report", "full.json")
    assert full.returncode == 6, full.stderr
    assert "cannot write the ledger" in full.stderr
    assert "Traceback" not in full.stderr
    assert json.loads((project.root / "full.json").read_text())["exit_code"] == 6
    with sqlite3.connect(project.state / "ledger.sqlite") as ledger:
        [(recorded,)] = ledger.execute("SELECT count(*) FROM events").fetchall()
    delivered = len(project.emulator.events())
    assert recorded < delivered < count
    assert delivered - recorded <= 2  # sending stopped at once: at most the two in flight

    assert project.sync().returncode == 0
    keys = Counter(event["idempotencyKey"] for event in project.emulator.events())
    assert len(keys) == count
    assert set(keys.values()) == {1}
    assert history(project)[1]["status"] == "died"  # it could not record its own end


def test_a_disk_too_full_for_the_spool_stops_before_sending_with_exit_6(project: Project) -> None:
    """A run keeps its source and plan in the state directory while it runs: when they cannot
    be written, it says where, sends nothing, and exits as an unwritable ledger does."""
    project.write(CONFIG.format(rate=500), people(2000))
    assert project.run("history", str(project.config)).returncode == 0  # the ledger exists
    full = run_on_small_disk(project, 150_000, "--quiet")
    assert full.returncode == 6, full.stderr
    assert "-spool" in full.stderr
    assert "LOOPS_SYNC_STATE" in full.stderr
    assert "Traceback" not in full.stderr
    assert project.emulator.contacts() == []
    assert not (project.state / "people-spool").exists()


@pytest.mark.parametrize("nested", [["vip", "beta"], {"plan": "pro", "seats": 3}])
def test_a_nested_source_column_does_not_crash_the_rejects_file(
    project: Project, nested: object
) -> None:
    """A SQL `text[]` read with `select *` (here a Parquet list or struct) beside a bad row."""
    frame = pl.DataFrame({"email": ["ok@example.com", "not-an-email"], "extra": [nested, nested]})
    frame.write_parquet(project.root / "people.parquet")
    config = "name: people\nsource: {parquet: people.parquet}\ncontact: {email: email}\n"
    project.write(config)
    result = project.sync()
    assert result.returncode == 1, result.stderr
    with (project.state / "people-rejects.csv").open(newline="", encoding="utf-8-sig") as rejects:
        [row] = list(csv.DictReader(rejects))
    assert row["email"] == "not-an-email"
    assert json.loads(row["extra"]) == nested


def test_a_postgresql_array_selected_with_star_beside_a_bad_row_is_a_clean_run(
    project: Project,
) -> None:
    """The reported case: `text[]`, `select *`, one row rejected; it crashed every run."""
    url, table = "postgresql://postgres@127.0.0.1:5432/test", "loops_sync_lifecycle_tags"
    try:
        connection = psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL is not reachable: {error}")
    with connection:
        connection.execute(f"DROP TABLE IF EXISTS {table}")
        connection.execute(f"CREATE TABLE {table} (email text, tags text[])")
        connection.execute(
            f"INSERT INTO {table} VALUES ('ok@example.com', ARRAY['vip', 'beta']),"
            " ('not-an-email', ARRAY['x'])"
        )
        try:
            project.write(
                f"name: people\nsource: {{sql: {{url: '{url}', query: 'select * from {table}'}}}}"
                "\ncontact: {email: email}\n"
            )
            result = project.sync()
        finally:
            connection.execute(f"DROP TABLE IF EXISTS {table}")
    assert result.returncode == 1, result.stderr
    with (project.state / "people-rejects.csv").open(newline="", encoding="utf-8-sig") as rejects:
        [row] = list(csv.DictReader(rejects))
    assert (row["email"], row["tags"]) == ("not-an-email", '["x"]')
    assert [c["email"] for c in project.emulator.contacts()] == ["ok@example.com"]
