"""`state export` / `state import`: a sync's ledger moves between backends whole (every delivered
event, contact hash, failure and run), joins a state without losing what it held, and refuses
what is not a ledger."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from sync.config import Config, load_config
from sync.errors import SourceError
from sync.ledger import Ledger
from sync.ledger_db import PgState
from sync.ledger_move import export_state, import_state
from sync.model import Occurrence
from tests.ledger_backends import (
    Place,
    Places,
    drop_schema,
    new_pg_state,
    place,
    places,
    require_postgres,
)

__all__ = ["place", "places"]  # the fixtures

CONFIG = """
    name: people
    source:
      csv: people.csv
    contact:
      email: email
    events:
      - name: signup
        email: email
"""


def config_for(folder: Path, place: Place) -> Config:
    """The config of sync `people`, its state at `place`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sync.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    state = place.url if isinstance(place, PgState) else str(place.parent)
    return load_config(path, env={"LOOPS_SYNC_STATE": state})


def fill(place: Place) -> None:
    """Two syncs' rows: `people`'s, to move, and `other`'s, to leave behind."""
    ledger, other = Ledger(place, "people"), Ledger(place, "other")
    for n in range(3):
        ledger.contact_delivered(f"e:{n}@x.io", f"c1:{n}", ["email"])
        found_by = Occurrence(key_email=f"ls2-e{n}", key_user=f"ls2-u{n}", email=f"{n}@x.io")
        ledger.event_delivered(f"ls2-e{n}", f"e:{n}@x.io", "signup", found_by)
    ledger.request_failed("contact", "e:9@x.io", "HTTP 500")
    run = ledger.start_run("cfg")
    ledger.finish_run(run, 1, {"contacts_sent": 3}, reason="1 failed")
    other.event_delivered("ls2-other", "e:o@x.io", "signup")
    ledger.close()
    other.close()


def everything(place: Place, sync: str = "people") -> dict[str, list[tuple[object, ...]]]:
    ledger = Ledger(place, sync)
    runs = [(r.started_at, r.exit_code, r.counts, r.status, r.reason) for r in ledger.runs()]
    found = {
        "contacts": sorted(ledger.delivered_contacts().rows()),
        "events": sorted(ledger.delivered_events().rows()),
        "failures": sorted(ledger.failures().rows()),
        "runs": sorted(runs, key=str),
    }
    ledger.close()
    return found


@pytest.fixture
def other_backend(places: Places, tmp_path: Path) -> Iterator[Place]:
    """An empty ledger place on the backend that `places` is not."""
    if not places.postgresql:
        require_postgres()
        state = new_pg_state()
        yield state
        drop_schema(state)
    else:
        yield tmp_path / "sqlite-state" / "ledger.sqlite"


def test_a_ledger_moves_to_the_other_backend_whole_and_only_its_sync(
    tmp_path: Path, place: Place, other_backend: Place
) -> None:
    fill(place)
    file = tmp_path / "people.ledger"
    exported = export_state(config_for(tmp_path / "from", place), file)
    assert exported.rows == {
        "contacts": 3,
        "events": 3,
        "event_once_per": 0,
        "failures": 1,
        "runs": 1,
    }
    assert everything(file, "other")["events"] == []  # another sync's rows stay behind

    imported = import_state(config_for(tmp_path / "to", other_backend), file)
    assert imported.rows == exported.rows
    moved = everything(other_backend)
    assert moved == everything(place)
    assert moved["events"] == sorted((f"ls2-{k}{n}",) for n in range(3) for k in "eu")

    import_state(config_for(tmp_path / "to", other_backend), file)  # again: nothing doubles
    assert everything(other_backend) == moved


def test_an_import_joins_what_the_state_holds_and_loses_none_of_it(
    tmp_path: Path, place: Place, other_backend: Place
) -> None:
    fill(place)
    file = tmp_path / "people.ledger"
    export_state(config_for(tmp_path / "from", place), file)
    there = Ledger(other_backend, "people")
    there.event_delivered("ls2-e0", "e:0@x.io", "signup")  # known there by its email only
    there.event_delivered("ls2-only-there", "e:7@x.io", "signup")
    there.contact_delivered("e:0@x.io", "c1:newer")  # delivered after the export
    there.close()

    import_state(config_for(tmp_path / "to", other_backend), file)
    ledger = Ledger(other_backend, "people")
    keys = set(ledger.delivered_events().get_column("key"))
    assert {"ls2-only-there", "ls2-e0", "ls2-u0"} <= keys  # e0 now found by its userId too
    hashes = dict(ledger.delivered_contacts().select("identity", "hash").iter_rows())
    assert hashes["e:0@x.io"] == "c1:newer"
    assert hashes["e:1@x.io"] == "c1:1"
    ledger.close()


def test_an_export_never_overwrites_a_file(tmp_path: Path, place: Place) -> None:
    fill(place)
    file = tmp_path / "taken.ledger"
    file.write_text("someone's notes")
    with pytest.raises(SourceError, match="already exists") as caught:
        export_state(config_for(tmp_path / "from", place), file)
    assert caught.value.exit_code == 2
    assert file.read_text() == "someone's notes"


def test_an_import_refuses_what_is_not_a_ledger_of_the_sync(tmp_path: Path, place: Place) -> None:
    config = config_for(tmp_path / "to", place)
    stray = tmp_path / "notes.txt"
    stray.write_text("not a database")
    with pytest.raises(SourceError, match="not a loops-sync ledger"):
        import_state(config, stray)
    with pytest.raises(SourceError, match="no such file"):
        import_state(config, tmp_path / "missing.ledger")
    elsewhere = tmp_path / "elsewhere" / "ledger.sqlite"
    Ledger(elsewhere, "clay").event_delivered("ls2-x", "e:a@x.io", "signup")
    with pytest.raises(SourceError, match=r"no rows of sync 'people' \(it holds: clay\)"):
        import_state(config, elsewhere)
    assert (
        Ledger(place, "people").delivered_events().equals(pl.DataFrame(schema={"key": pl.String}))
    )
