"""`when` filters on the source's real columns: what cannot run, said in the user's words."""

from __future__ import annotations

import polars as pl
import pytest

from sync.config import Config, load_config
from sync.errors import ConfigError, ConfigProblem
from sync.source_columns import check_columns
from tests.unit.conftest import WriteConfig


def with_when(write_config: WriteConfig, when: str, source: str = "{csv: people.csv}") -> Config:
    path = write_config(
        f"name: people\nsource: {source}\ncontact: {{email: Email}}\n"
        f"events:\n  - name: bigTeam\n    email: Email\n    when: '{when}'\n"
    )
    return load_config(path, env={})


def problem_of(config: Config, schema: dict[str, pl.DataType]) -> ConfigProblem:
    with pytest.raises(ConfigError) as caught:
        check_columns(config, schema)
    [problem] = caught.value.problems
    return problem


CSV_SCHEMA: dict[str, pl.DataType] = {"Email": pl.String(), "Seats": pl.String()}


@pytest.mark.parametrize(
    ("when", "cast"),
    [
        ("Seats > 3", "CAST(Seats AS INT) > 3"),
        ("Seats >= 3.5", "CAST(Seats AS DOUBLE) >= 3.5"),
        ("3 < Seats", "3 < CAST(Seats AS INT)"),
        ('"Seats" BETWEEN 2 AND 9', 'CAST("Seats" AS INT) BETWEEN 2 AND 9'),
    ],
)
def test_a_number_compared_with_csv_text_says_csv_is_text_and_shows_the_cast(
    write_config: WriteConfig, when: str, cast: str
) -> None:
    problem = problem_of(with_when(write_config, when), CSV_SCHEMA)

    assert problem.path == "events[0].when"
    assert "CSV columns are text" in problem.message
    assert f"`{cast}`" in problem.message
    assert "TRY_CAST" in problem.message
    assert "i32" not in problem.message


def test_a_float_compared_with_text_is_refused_though_polars_would_compare_as_text(
    write_config: WriteConfig,
) -> None:
    # Polars runs `Seats >= 3.5` on text as a text comparison ('n/a' >= '3.5' holds): a filter
    # that would silently keep the wrong rows.
    rows = pl.DataFrame({"Seats": ["n/a", "10"]})
    assert rows.filter(pl.sql_expr("Seats >= 3.5"))["Seats"].to_list() == ["n/a"]

    problem = problem_of(with_when(write_config, "Seats >= 3.5"), CSV_SCHEMA)

    assert "`CAST(Seats AS DOUBLE) >= 3.5`" in problem.message


def test_a_number_compared_with_a_text_column_of_a_typed_source_names_the_column_as_text(
    write_config: WriteConfig,
) -> None:
    config = with_when(write_config, "Seats > 3", source="{parquet: people.parquet}")

    problem = problem_of(config, CSV_SCHEMA)

    assert "'Seats' is text in the source" in problem.message
    assert "CSV" not in problem.message


def test_the_casts_and_text_comparisons_that_run_are_accepted(write_config: WriteConfig) -> None:
    for when in ("TRY_CAST(Seats AS INT) > 3", "Seats = ''3''", "Email LIKE ''%@acme.com''"):
        check_columns(with_when(write_config, when), CSV_SCHEMA)
    numbers: dict[str, pl.DataType] = {"Email": pl.String(), "Seats": pl.Int64()}
    check_columns(with_when(write_config, "Seats > 3"), numbers)


def test_a_number_inside_a_text_literal_is_no_comparison_with_a_number(
    write_config: WriteConfig,
) -> None:
    check_columns(with_when(write_config, "Email = ''a > 3''"), CSV_SCHEMA)
