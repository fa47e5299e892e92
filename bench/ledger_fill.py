"""The ledger as a finished first sync leaves it: every planned request marked delivered.

A million rows cannot be sent through the emulator in a benchmark, so the nightly case starts
from a ledger written here. It is written by the code under test, whose ledger it will be: run
as a script (`python -P bench/ledger_fill.py CONFIG STATE` with that code first on PYTHONPATH)
it plans with `sync.pipeline.plan_sync`, lets that code create its own schema, then inserts a
row per request in whatever columns its tables have: schema 1 (identity, hash; key, identity,
event) or schema 3 (also each event's both keys and the identifiers it was sent with, and each
contact's top-level keys, as `Ledger.contact_delivered` and `event_delivered` record them).
Events with `once_per` would also need `event_once_per` rows; the bench config has none.

`fill_synthetic` writes a ledger of any size without planning: what bench/held_build.py reads.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from sync.config import load_config
from sync.pipeline import plan_sync

LEDGER_FILE = "ledger.sqlite"

# A ledger column (schema 3) and the plan's request column that holds its value.
EVENT_COLUMNS = {
    "key_email": "key_email",
    "key_user": "key_user",
    "email": "occurrence_email",
    "user_id": "occurrence_user_id",
    "once_per": "once_per",
}
BATCH = 100_000
# The top-level keys of the bench config's bodies, as `Ledger.contact_delivered` records them.
BENCH_PROPS = (
    ",company,companySize,email,enrichedAt,firstName,jobTitle,lastName,mailingLists,source,"
)


def mark_all_delivered(config: Path, state: Path) -> int:
    """Plan `config` against the ledger in `state` and mark each request delivered; returns
    how many rows were written. Code that has `run --baseline` (issue 11) does it itself, a
    job at a time, as a user adopting an audience would: in bounded memory at any size."""
    import sync  # noqa: PLC0415  # the code under test, first on PYTHONPATH

    # By its file: the venv's editable install answers find_spec for any tree's `sync`.
    if (Path(sync.__file__).parent / "baseline.py").exists():
        return _adopt(config, state)
    return _fill_from_frame(config, state)


def _adopt(config: Path, state: Path) -> int:
    report = state / "baseline.json"
    adopted = subprocess.run(
        [
            sys.executable,
            "-P",
            "-m",
            "sync",
            "run",
            str(config),
            "--baseline",
            "--quiet",
            "--report",
            str(report),
        ],
        env={**os.environ, "LOOPS_SYNC_STATE": str(state)},
        capture_output=True,
        text=True,
        check=False,
    )
    if adopted.returncode not in (0, 1):  # 1: rows rejected for their data, not recorded
        sys.exit(adopted.stderr.strip() or f"run --baseline: exit {adopted.returncode}")
    recorded = orjson.loads(report.read_bytes())["baseline"]
    return int(recorded["contacts"]) + int(recorded["events"])


def _fill_from_frame(config: Path, state: Path) -> int:
    """For code before `--baseline`: the whole plan as one frame (memory grows with it)."""
    previous = os.environ.get("LOOPS_SYNC_STATE")
    os.environ["LOOPS_SYNC_STATE"] = str(state)
    try:
        loaded = load_config(config)
        requests = plan_sync(loaded).plan.requests
    finally:
        if previous is None:
            del os.environ["LOOPS_SYNC_STATE"]
        else:
            os.environ["LOOPS_SYNC_STATE"] = previous
    db = sqlite3.connect(state / LEDGER_FILE)
    try:
        written = _contacts(db, loaded.name, requests.filter(pl.col("kind") == "contact"))
        written += _events(db, loaded.name, requests.filter(pl.col("kind") == "event"))
        db.commit()
    finally:
        db.close()
    return written


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def _contacts(db: sqlite3.Connection, sync: str, contacts: pl.DataFrame) -> int:
    now = time.time()
    with_props = "props" in _columns(db, "contacts")
    names = ["sync", "identity", "hash", "delivered_at"] + (["props"] if with_props else [])

    def rows() -> Iterator[tuple[Any, ...]]:
        for identity, ref, body in contacts.select("identity", "ref", "body").iter_rows():
            row: tuple[Any, ...] = (sync, identity, ref, now)
            if with_props:
                row += ("," + ",".join(sorted(orjson.loads(body))) + ",",)
            yield row

    _insert(db, "contacts", names, rows())
    return contacts.height


def _events(db: sqlite3.Connection, sync: str, events: pl.DataFrame) -> int:
    now = time.time()
    found_by = [c for c in _columns(db, "events") if c in EVENT_COLUMNS]
    names = ["sync", "key", "identity", "event", "delivered_at", *found_by]
    picked = events.select("ref", "identity", "event", *(EVENT_COLUMNS[c] for c in found_by))
    rows = (
        (sync, ref, identity, event, now, *rest)
        for ref, identity, event, *rest in picked.iter_rows()
    )
    _insert(db, "events", names, rows)
    return events.height


def _insert(
    db: sqlite3.Connection, table: str, names: list[str], rows: Iterator[tuple[Any, ...]]
) -> None:
    marks = ", ".join("?" * len(names))
    db.executemany(f"INSERT INTO {table} ({', '.join(names)}) VALUES ({marks})", rows)  # noqa: S608


# --- a ledger of any size, without planning ---------------------------------------------------


def synthetic_hash(i: int) -> str:
    """Contact i's payload hash in a synthetic ledger: a sha256, as `payload_hash` makes them."""
    return "c1:" + hashlib.sha256(f"body{i}".encode()).hexdigest()


def synthetic_key(i: int) -> str:
    """Event i's key in a synthetic ledger (its email's, as the bench config sends it)."""
    return "ls2-" + hashlib.sha256(f"event{i}".encode()).hexdigest()


def synthetic_email(i: int) -> str:
    return f"person{i:09d}@example{i % 101}.com"


def fill_synthetic(path: Path, sync: str, rows: int) -> None:
    """`rows` contacts and `rows` signup events, as a first sync of the bench config leaves
    them, written straight into a ledger created by the code under test (`sync.ledger`).
    Rows go in in key order (a B-tree filled at random takes several times longer): contacts
    are numbered in order, events pass through a temporary table and SQLite's sorter."""
    from sync.ledger import Ledger  # noqa: PLC0415  # the code under test, found on PYTHONPATH

    Ledger(path, sync).close()
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        now = time.time()
        contacts = (
            (sync, f"e:{synthetic_email(i)}", synthetic_hash(i), now, BENCH_PROPS)
            for i in range(rows)
        )
        _insert(db, "contacts", ["sync", "identity", "hash", "delivered_at", "props"], contacts)
        db.execute("CREATE TEMP TABLE new_events (key TEXT, i INTEGER)")
        for start in range(0, rows, 1_000_000):
            chunk = ((synthetic_key(i), i) for i in range(start, min(rows, start + 1_000_000)))
            db.executemany("INSERT INTO new_events VALUES (?, ?)", chunk)
        db.create_function("email", 1, synthetic_email, deterministic=True)
        db.execute(
            "INSERT INTO events (sync, key, identity, event, delivered_at, key_email, email) "
            "SELECT ?1, key, 'e:' || email(i), 'signup', ?2, key, email(i) FROM new_events "
            "ORDER BY key",
            (sync, now),
        )
        db.commit()
        db.execute("PRAGMA journal_mode=WAL")
    finally:
        db.close()


if __name__ == "__main__":
    print(mark_all_delivered(Path(sys.argv[1]), Path(sys.argv[2])))
