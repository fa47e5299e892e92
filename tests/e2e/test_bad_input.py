"""Bad input through the real CLI: one clear message and exit 2, never a traceback, nothing sent."""

from __future__ import annotations

import polars as pl

from tests.e2e.conftest import Project

CONFIG = """
    name: people
    source:
      csv: people.csv
    loops:
      rate_limit: 200
    contact:
      email: Email
    events:
      - name: bigTeam
        email: Email
        when: "CAST(Seats AS INT) > 3"
"""
CSV = """
    Email,Seats
    ada@example.com,5
    grace@example.com,n/a
"""


def assert_refused(result_stderr: str, returncode: int, *expected: str) -> None:
    assert returncode == 2, result_stderr
    assert "Traceback" not in result_stderr
    for text in expected:
        assert text in result_stderr


def test_a_when_that_fails_on_a_cell_stops_plan_and_run_naming_the_filter_and_value(
    project: Project,
) -> None:
    project.write(CONFIG, CSV)
    expected = ("events[0].when", "fails on row 2 (Seats = 'n/a')", "TRY_CAST(")

    planned = project.run("plan", str(project.config))
    assert_refused(planned.stderr, planned.returncode, *expected)
    ran = project.sync()
    assert_refused(ran.stderr, ran.returncode, *expected)
    assert project.emulator.contacts() == []

    project.write(CONFIG.replace("CAST(Seats", "TRY_CAST(Seats"))
    assert project.run("plan", str(project.config)).returncode == 0
    assert project.sync().returncode == 0
    assert [event["email"] for event in project.emulator.events()] == ["ada@example.com"]
    assert len(project.emulator.contacts()) == 2


def test_a_parquet_list_column_mapped_as_a_value_is_a_config_error(project: Project) -> None:
    pl.DataFrame({"Email": ["ada@example.com"], "tags": [["a", "b"]]}).write_parquet(
        project.root / "people.parquet"
    )
    project.write(
        "name: people\nsource: {parquet: people.parquet}\n"
        "contact:\n  email: Email\n  properties: {tags: tags}\n"
    )
    result = project.run("plan", str(project.config))
    assert_refused(
        result.stderr,
        result.returncode,
        "contact.properties.tags: column 'tags' holds List(String), many values per row",
    )


def test_a_duplicated_csv_header_is_a_source_error(project: Project) -> None:
    project.write(CONFIG, "Email,Seats,Email\nada@example.com,5,grace@example.com\n")
    result = project.run("plan", str(project.config))
    assert_refused(
        result.stderr,
        result.returncode,
        f"{project.root / 'people.csv'}: the header 'Email' (columns 1, 3) is given more than once",
    )


def test_an_unknown_type_names_the_closest_one(project: Project) -> None:
    project.write(
        "name: people\nsource: {csv: people.csv}\n"
        "contact:\n  email: Email\n  properties:\n    seats: {column: Seats, type: integr}\n",
        CSV,
    )
    result = project.run("plan", str(project.config))
    assert_refused(
        result.stderr,
        result.returncode,
        "contact.properties.seats.type (line 6): unknown type 'integr'; did you mean 'number'?",
    )
