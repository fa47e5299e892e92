"""The state directory: one owner names every file, as users and scripts have known them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sync.errors import SourceError
from sync.state import StateDir


def test_every_file_of_a_sync_is_named_by_its_state_directory(tmp_path: Path) -> None:
    state = StateDir(tmp_path, "clay")
    named = {
        state.ledger_file: "ledger.sqlite",
        state.lock_file: "clay.lock",
        state.rejects_file: "clay-rejects.csv",
        state.dry_run_file: "clay-dry-run.ndjson",
        state.crash_log: "clay-error.log",
        state.spool_dir: "clay-spool",
    }
    assert {path: path.relative_to(tmp_path).as_posix() for path in named} == named
    assert not tmp_path.joinpath("clay-spool").exists()


def test_making_the_directory_makes_its_parents_or_says_how_to_choose_another(
    tmp_path: Path,
) -> None:
    StateDir(tmp_path / "a" / "b", "t").make()
    assert (tmp_path / "a" / "b").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    with pytest.raises(SourceError, match="LOOPS_SYNC_STATE or `state:`"):
        StateDir(blocker / "state", "t").make()


SPOOL_ON_SMALL_DISK = """
import resource, signal, sys
from pathlib import Path
import polars as pl
from sync.errors import LedgerError
from sync.state import spool_write
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
rows = pl.DataFrame({"body": [f"row {i} " * 20 for i in range(20_000)]})
try:
    spool_write(rows, Path(sys.argv[1]))
except LedgerError as error:
    print(error)
"""


@pytest.mark.parametrize("name", ["pending-000000.parquet", "census-000000.arrow"])
def test_a_spool_file_the_disk_cannot_hold_is_a_ledger_error_naming_it(
    tmp_path: Path, name: str
) -> None:
    """Polars reports a failed Parquet write as a ComputeError and a failed IPC write as an
    OSError: either way the run stops with exit 6, saying which file and why, none left."""
    path = tmp_path / name
    script = [sys.executable, "-c", SPOOL_ON_SMALL_DISK, str(path)]
    said = subprocess.run(script, capture_output=True, text=True, timeout=60, check=True)
    assert f"cannot write {path} (File too large)" in said.stdout, said.stdout + said.stderr
    assert not path.exists()
