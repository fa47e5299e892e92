"""The budget's store on one host: a SQLite file in a per-user directory.

Why SQLite rather than bare file locks: one transaction reads every member and writes this run's
row (BEGIN IMMEDIATE serialises them across processes), a process killed mid-transaction leaves
nothing half-written, and the rows have the same shape as in PostgreSQL. The directory must be on
a local disk (SQLite's locks do not hold on network filesystems): containers of one host share a
budget through a mounted directory, hosts through PostgreSQL. The clock is the host's wall clock,
the one every process of the host reads alike; a row written "in the future" by a clock set back
is cut to what a renewal can write (`Member.believable`).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import astuple
from pathlib import Path

from sync.budget import Grant, Member, Settlement, StoreUnavailable
from sync.sqlite_wal import use_wal

__all__ = ["BUDGET_FILE", "SqliteStore"]

BUDGET_FILE = "budgets.sqlite3"
SCHEMA_VERSION = 1
BUSY_SECONDS = 5.0
_COLUMNS = "id, team_limit, joined, share, held, held_until, expires"


class SqliteStore:
    """Budgets of every team this user syncs to, one row per run that is sending."""

    def __init__(self, directory: Path) -> None:
        self.where = str(directory / BUDGET_FILE)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.where, timeout=BUSY_SECONDS, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as error:
            raise StoreUnavailable(f"{self.where}: {error}") from None
        try:
            self._prepare()
        except sqlite3.Error as error:
            self._db.close()
            raise StoreUnavailable(f"{self.where}: {error}") from None

    def _prepare(self) -> None:
        db = self._db
        use_wal(db, BUSY_SECONDS)
        db.execute("PRAGMA synchronous=NORMAL")  # a lost row is a run that re-joins: no fsync
        db.execute("BEGIN IMMEDIATE")
        try:
            _refuse_newer(db.execute("PRAGMA user_version").fetchone()[0])
            db.execute(
                "CREATE TABLE IF NOT EXISTS budget_members ("
                " budget TEXT NOT NULL, id TEXT NOT NULL, team_limit REAL NOT NULL,"
                " joined REAL NOT NULL, share REAL NOT NULL, held REAL NOT NULL,"
                " held_until REAL NOT NULL, expires REAL NOT NULL,"
                " PRIMARY KEY (budget, id))"
            )
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def transact(self, budget: str, decide: Callable[[float, list[Member]], Settlement]) -> Grant:
        """One BEGIN IMMEDIATE transaction: the members, the decision, its writes."""
        try:
            return self._transact(budget, decide)
        except sqlite3.Error as error:
            raise StoreUnavailable(f"{self.where}: {error}") from None

    def _transact(self, budget: str, decide: Callable[[float, list[Member]], Settlement]) -> Grant:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM budget_members WHERE budget = ?",  # noqa: S608  # constant
                (budget,),
            ).fetchall()
            settled = decide(now, [Member(*row) for row in rows])
            _write(db, budget, settled)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return settled.grant

    def close(self) -> None:
        self._db.close()


def _refuse_newer(version: int) -> None:
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"written by a newer loops-sync (budget schema {version})")


def _write(db: sqlite3.Connection, budget: str, settled: Settlement) -> None:
    db.executemany(
        "DELETE FROM budget_members WHERE budget = ? AND id = ?",
        [(budget, member_id) for member_id in settled.gone],
    )
    for row in settled.writes:
        db.execute(
            f"INSERT OR REPLACE INTO budget_members (budget, {_COLUMNS})"  # noqa: S608  # constant
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (budget, *astuple(row)),
        )
