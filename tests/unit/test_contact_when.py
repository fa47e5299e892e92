"""`contact.when`: only the rows it keeps become contacts; the same SQL as events' `when`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from sync.candidates import map_rows
from sync.check import check_config
from sync.columns import ROW
from sync.config import load_config
from sync.config_model import SyncConfig
from sync.errors import ConfigError, SourceError
from sync.pipeline import plan_sync
from sync.source_columns import check_columns
from tests.unit.conftest import WriteConfig

ROWS = pl.DataFrame(
    {
        "Email": ["ada@example.com", "not an email", "grace@example.com"],
        "Status": ["customer", "lead", "customer"],
        "Seats": ["5", "x", "2"],
    }
).with_row_index(ROW, offset=1)


def spec(contact: dict[str, Any], events: list[dict[str, Any]] | None = None) -> SyncConfig:
    raw: dict[str, Any] = {"name": "t", "source": {"csv": "unused.csv"}, "contact": contact}
    return SyncConfig.model_validate(raw | ({"events": events} if events else {}))


def test_only_the_rows_contact_when_keeps_become_contacts() -> None:
    mapped = map_rows(spec({"email": "Email", "when": "Status = 'customer'"}), ROWS)

    emails = [json.loads(body)["email"] for body in mapped.contacts["body"]]
    assert emails == ["ada@example.com", "grace@example.com"]
    assert mapped.rejects.is_empty()  # row 2's bad email is no contact's, so nothing to reject
    assert mapped.duplicates == 0


def test_a_row_contact_when_drops_keeps_its_events() -> None:
    config = spec(
        {"email": "Email", "when": "Status = 'lead'", "properties": {"seats": "Seats"}},
        events=[{"name": "seen", "email": "Email", "when": "Status = 'customer'"}],
    )

    mapped = map_rows(config, ROWS)

    assert mapped.contacts.is_empty() or mapped.contacts[ROW].to_list() == []
    assert mapped.rejects[ROW].to_list() == [2]  # the lead's contact has a malformed email
    assert sorted(mapped.events["email"].to_list()) == ["ada@example.com", "grace@example.com"]


def test_a_bad_contact_when_is_a_config_problem_at_its_line(write_config: WriteConfig) -> None:
    path = write_config("name: t\nsource: {csv: a.csv}\ncontact:\n  email: Email\n  when: 'a >'\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    [problem] = caught.value.problems
    assert (problem.path, problem.line) == ("contact.when", 5)
    assert "not a valid SQL condition" in problem.message


def test_a_contact_when_comparing_csv_text_with_a_number_shows_the_cast(
    write_config: WriteConfig,
) -> None:
    path = write_config("name: t\nsource: {csv: a.csv}\ncontact: {email: Email, when: Seats > 3}\n")

    with pytest.raises(ConfigError) as caught:
        check_columns(load_config(path, env={}), {"Email": pl.String(), "Seats": pl.String()})

    [problem] = caught.value.problems
    assert problem.path == "contact.when"
    assert "`CAST(Seats AS INT) > 3`" in problem.message


def test_a_contact_when_that_fails_on_a_cell_stops_naming_the_row() -> None:
    config = spec({"email": "Email", "when": "CAST(Seats AS INT) > 3"})

    with pytest.raises(SourceError) as caught:
        map_rows(config, ROWS)

    assert str(caught.value).startswith("contact.when: `CAST(Seats AS INT) > 3` fails on row 2")


def test_the_plan_counts_only_the_contacts_kept(write_config: WriteConfig, tmp_path: Path) -> None:
    ROWS.drop(ROW).write_csv(tmp_path / "people.csv")
    path = write_config(
        "name: t\nsource: {csv: people.csv}\n"
        "contact:\n  email: Email\n  when: \"Status = 'customer'\"\n"
    )

    report = plan_sync(load_config(path, env={})).report

    assert (report.rows_read, report.contacts_new, report.rows_rejected) == (3, 2, 0)
    assert report.duplicates == 0


def test_check_reports_what_contact_when_keeps_and_its_failure_at_its_line(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    ROWS.drop(ROW).write_csv(tmp_path / "people.csv")
    config = "name: t\nsource: {csv: people.csv}\ncontact:\n  email: Email\n  when: WHEN\n"

    kept = check_config(
        load_config(write_config(config.replace("WHEN", "Status = 'customer'")), env={})
    )
    failed = check_config(
        load_config(write_config(config.replace("WHEN", "CAST(Seats AS INT) > 3")), env={})
    )

    assert kept.filters == ["contact.when keeps 2 of the first 3"]
    assert kept.problems == []  # the lead's bad email is not checked: it is no contact
    [problem] = failed.problems
    assert (problem.path, problem.line) == ("contact.when", 5)
    assert "fails on row 2" in problem.message
    assert "becomes no contact" in problem.message
