"""The state directory: one owner names every file, as users and scripts have known them."""

from __future__ import annotations

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
