"""Runs that start at the same moment (cron fires every sync of a team at :00) open the same new
SQLite file together: the per-user budget file, or one sync's ledger. Switching a new file to WAL
needs it alone, and SQLite answers "database is locked" at once, without its busy wait, to the
others; a budget store that failed so paced its run alone at the whole limit (measured: 1 in 5
tries of three runs) and the team met dozens of 429s. Each test opens a new file in several
processes at once, many times over."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

from sync.budget_sqlite import SqliteStore
from sync.ledger_db import open_db

TRIES = 100
PROCESSES = 4


def _open_when_told(
    open_file: Callable[[Path], None], place: Path, go: Event, failures: Queue[str]
) -> None:
    go.wait()
    try:
        open_file(place)
    except Exception as error:  # noqa: BLE001  # any failure is what the test reports
        failures.put(f"{type(error).__name__}: {error}")


def opened_together(open_file: Callable[[Path], None], place: Path) -> list[str]:
    """The failures of PROCESSES processes that open the file at `place` at one moment."""
    fork = multiprocessing.get_context("fork")
    go, failures = fork.Event(), fork.Queue()
    processes = [
        fork.Process(target=_open_when_told, args=(open_file, place, go, failures))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    go.set()
    for process in processes:
        process.join(timeout=60)
    found = []
    while not failures.empty():
        found.append(failures.get())
    return found


def open_budget(directory: Path) -> None:
    SqliteStore(directory).close()


def open_ledger(path: Path) -> None:
    open_db(path).close()


def test_runs_that_start_together_all_join_a_new_budget_file(tmp_path: Path) -> None:
    failures = [
        failure
        for attempt in range(TRIES)
        for failure in opened_together(open_budget, tmp_path / str(attempt))
    ]
    assert failures == []


def test_runs_that_start_together_all_open_a_new_ledger(tmp_path: Path) -> None:
    failures = [
        failure
        for attempt in range(TRIES)
        for failure in opened_together(open_ledger, tmp_path / f"{attempt}.sqlite")
    ]
    assert failures == []
