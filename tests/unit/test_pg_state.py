"""A PostgreSQL state: how the config names it, where the local files go, and that its URL's
password is never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.config import load_config
from sync.errors import ConfigError, LedgerError
from sync.ledger import Ledger
from sync.ledger_db import PgState, masked
from tests.unit.conftest import WriteConfig

CONFIG = """
name: people
source:
  csv: people.csv
contact:
  email: email
"""
URL = "postgresql://ada@db.internal:5432/loops"


def test_a_postgresql_state_keeps_the_ledger_there_and_local_files_beside_the_config(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    config = load_config(write_config(CONFIG + f"state: {URL}\n", name="conf/sync.yaml"), env={})
    assert config.database == PgState(URL)
    assert config.state.ledger == PgState(URL)
    assert config.state_dir == (tmp_path / "conf" / ".loops-sync").resolve()
    assert config.state.rejects_file.parent == config.state_dir


def test_loops_sync_state_wins_over_the_config_either_way(write_config: WriteConfig) -> None:
    from_file = write_config(CONFIG + "state: ./here\n")
    assert load_config(from_file, env={"LOOPS_SYNC_STATE": URL}).database == PgState(URL)
    in_pg = write_config(CONFIG + f"state: {URL}\n", name="other.yaml")
    local = load_config(in_pg, env={"LOOPS_SYNC_STATE": "/srv/state"})
    assert local.database is None
    assert local.state.ledger == Path("/srv/state/ledger.sqlite")


def test_a_path_keeps_sqlite(write_config: WriteConfig, tmp_path: Path) -> None:
    config = load_config(write_config(CONFIG + "state: ./state\n"), env={})
    assert config.database is None
    assert config.state.ledger == (tmp_path / "state" / "ledger.sqlite").resolve()


def test_the_schema_is_loops_sync_unless_the_url_names_another() -> None:
    assert PgState.parse(URL).schema == "loops_sync"
    other = PgState.parse(URL + "?schema=team_b&sslmode=require")
    assert other.schema == "team_b"
    assert other.conninfo == URL + "?sslmode=require"  # libpq never sees `schema`


def test_a_bad_schema_is_a_config_error_naming_the_variable_not_the_url(
    write_config: WriteConfig,
) -> None:
    path = write_config(CONFIG)
    url = "postgresql://ada:hunter2@db/loops?schema=Team-B"
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"LOOPS_SYNC_STATE": url})
    assert caught.value.problems[0].path == "LOOPS_SYNC_STATE"
    assert "schema" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_password_is_masked_wherever_the_url_holds_it() -> None:
    assert masked("postgresql://ada:hunter2@db:5432/loops") == "postgresql://ada:***@db:5432/loops"
    assert "hunter2" not in masked("postgresql://ada@db/loops?password=hunter2&schema=x")
    assert PgState(URL).where == URL


def test_a_server_out_of_reach_stops_with_exit_6_and_no_password() -> None:
    state = PgState.parse("postgresql://ada:hunter2@127.0.0.1:1/loops")
    with pytest.raises(LedgerError) as caught:
        Ledger(state, "people")
    assert caught.value.exit_code == 6
    assert "postgresql://ada:***@127.0.0.1:1/loops" in str(caught.value)
    assert "hunter2" not in str(caught.value)
