"""The state directory of one sync: every file a run keeps between runs, named in one place.

The directory is chosen once, by `load_config` (LOOPS_SYNC_STATE, else `state:`, else
`.loops-sync/` beside the config); several syncs may share it. The ledger is one file for all
of them, each sync's rows under its name; every other file is named after the sync. A module
that needs one of these files asks `StateDir` for it and never builds the path itself.

With a PostgreSQL state (`database`), the ledger, the run history and the lock are kept there;
the directory (then `.loops-sync/` beside the config) still holds what a run writes for the
user or for itself alone: the rejects, the dry run, the crash log and the spool.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import polars as pl

from sync.errors import LedgerError, SourceError
from sync.ledger_db import PgState

__all__ = ["LEDGER_FILE", "StateDir", "make_state_dir", "spool_write"]

LEDGER_FILE = "ledger.sqlite"


@dataclass(frozen=True)
class StateDir:
    """Where sync `sync` keeps its ledger, lock, rejects, dry run, crash log and spool."""

    root: Path
    sync: str
    database: PgState | None = None  # the ledger and the lock are kept there, when given

    @property
    def ledger(self) -> Path | PgState:
        """Where the ledger is: the PostgreSQL state, else `ledger_file`."""
        return self.database if self.database is not None else self.ledger_file

    @property
    def where(self) -> str:
        """The ledger's place, for messages (a URL without its password)."""
        return self.database.where if self.database is not None else str(self.ledger_file)

    @property
    def ledger_file(self) -> Path:
        """What Loops confirmed, for every sync of this directory: what makes a run incremental."""
        return self.root / LEDGER_FILE

    @property
    def lock_file(self) -> Path:
        """Held while the sync runs, so that two runs never send the same requests."""
        return self.root / f"{self.sync}.lock"

    @property
    def rejects_file(self) -> Path:
        """The last run's rejected rows, with the reason; absent when it rejected none."""
        return self.root / f"{self.sync}-rejects.csv"

    @property
    def dry_run_file(self) -> Path:
        """The requests a dry run would have sent, one JSON line each."""
        return self.root / f"{self.sync}-dry-run.ndjson"

    @property
    def crash_log(self) -> Path:
        """The tracebacks of bugs, appended: the one-line message names this file."""
        return self.root / f"{self.sync}-error.log"

    @property
    def spool_dir(self) -> Path:
        """Where a run may keep its plan on disk while sending it; not made until asked."""
        return self.root / f"{self.sync}-spool"

    @contextmanager
    def spool(self, *, locked: bool) -> Iterator[Path]:
        """A directory for what a run keeps on disk while it runs (the source's slices, the
        pending rows, the plan), removed however the run ends. A run that holds the lock uses
        `spool_dir`, emptied first (a killed run may have left files); `plan` and a dry run,
        which take no lock, each get one of their own beside it."""
        self.make()
        if locked:
            shutil.rmtree(self.spool_dir, ignore_errors=True)
            self.spool_dir.mkdir()
            path = self.spool_dir
        else:
            path = self.scratch()
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def scratch(self) -> Path:
        """A new folder of its own beside the others, for a plan that outlives the call that
        made it (`plan_sync`): its caller removes it."""
        self.make()
        return Path(tempfile.mkdtemp(prefix=f"{self.sync}-spool-", dir=self.root))

    def make(self) -> None:
        """Create the directory if it is missing; a SourceError says why it cannot be."""
        make_state_dir(self.root, beside_database=self.database is not None)


# Rows per record batch of a spool file unless told: a slice's mapped rows (25,000, 16 MB) in
# one batch took 35 ms to write and 19 ms to read, in batches of 4,096 21 ms and 10 ms.
SPOOL_BATCH_ROWS = 4_096


def spool_write(frame: pl.DataFrame, path: Path, *, batch_rows: int = SPOOL_BATCH_ROWS) -> None:
    """Write `frame` to a spool file in record batches (row groups) of `batch_rows`: Arrow IPC,
    or Parquet where `path` ends in `.parquet` (for files read back in many small slices, see
    `sync.candidates`). A full or read-only disk stops the run as an unwritable ledger does
    (exit 6), saying where."""
    try:
        if path.suffix == ".parquet":
            frame.write_parquet(
                path, compression="lz4", row_group_size=batch_rows, statistics=False
            )
        else:
            frame.write_ipc(path, compression="lz4", record_batch_size=batch_rows)
    except OSError as error:
        _unwritable(path, error.strerror or str(error))
    except pl.exceptions.ComputeError as error:
        # Polars reports a failed Parquet write as a ComputeError naming Rust's io::Error,
        # "File too large (os error 27)". Written through a BytesIO instead, the plan's
        # parts held 90 MB more at 1M rows.
        failed = OS_ERROR.search(str(error))
        if failed is None:
            raise
        _unwritable(path, os.strerror(int(failed.group(1))))


# How Rust's std::io::Error ends its message: the errno.
OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _unwritable(path: Path, why: str) -> NoReturn:
    path.unlink(missing_ok=True)
    reason = OS_ERROR.sub("", why).strip()
    raise LedgerError(
        f"cannot write {path} ({reason}): a run keeps its source and plan there while it runs; "
        "free some space, or set LOOPS_SYNC_STATE to another folder"
    ) from None


def make_state_dir(root: Path, *, beside_database: bool = False) -> None:
    """Create `root` and its parents, or raise a SourceError that says how to choose another.
    `beside_database`: the folder of a PostgreSQL state's local files, beside the config."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        advice = (
            "with a PostgreSQL state, a run still writes its rejects and spool in "
            "`.loops-sync/` beside the config: keep the config in a writable folder"
            if beside_database
            else "set LOOPS_SYNC_STATE or `state:` in the config to a writable folder"
        )
        raise SourceError(
            f"cannot use {root} as the state directory ({error.strerror}); {advice}"
        ) from None
