"""The rejects file: the rows a person must fix, safe to open in a spreadsheet."""

from __future__ import annotations

import codecs
import csv
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from sync import report
from sync.candidates import map_rows
from sync.columns import ROW
from sync.config_model import SyncConfig
from sync.report import reject_groups, write_rejects

REJECTS_SCHEMA = {ROW: pl.UInt32, "column": pl.String, "reason": pl.String}


def source(data: dict[str, list[Any]]) -> pl.DataFrame:
    return pl.DataFrame(data).with_row_index(ROW, offset=1)


def rejected(rows: list[tuple[int, str, str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=REJECTS_SCHEMA, orient="row")


def read_rows(path: Path) -> list[dict[str, str]]:
    """The file as a spreadsheet sees it: every cell as written."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        return list(csv.DictReader(handle))


def test_the_file_is_utf8_with_a_byte_order_mark_for_excel_on_windows(tmp_path: Path) -> None:
    path = tmp_path / "test-rejects.csv"
    write_rejects(path, source({"Name": ["Zoë"]}), rejected([(1, "Name", "too ë")]))
    text = path.read_bytes()
    assert text.startswith(codecs.BOM_UTF8)
    assert text.decode("utf-8-sig").startswith("row,column,reason,Name")


def test_the_file_has_the_original_columns_plus_row_column_and_reason(tmp_path: Path) -> None:
    frame = source(
        {
            "Email": ["ok@example.com", "bad", "also-ok@example.com", "x@y"],
            "Seats": ["1", "2", "3", "many"],
        }
    )
    path = tmp_path / "state" / "test-rejects.csv"

    written = write_rejects(
        path,
        frame,
        rejected([(4, "Email; Seats", "bad email; not a number"), (2, "Email", "bad email")]),
    )

    assert written == path
    rows = read_rows(path)
    assert list(rows[0]) == ["row", "column", "reason", "Email", "Seats"]
    assert rows == [
        {"row": "2", "column": "Email", "reason": "bad email", "Email": "bad", "Seats": "2"},
        {
            "row": "4",
            "column": "Email; Seats",
            "reason": "bad email; not a number",
            "Email": "x@y",
            "Seats": "many",
        },
    ]


@pytest.mark.parametrize("cell", ['=HYPERLINK("http://x")', "+1", "-2+3", "@SUM(A1:A2)", "\t=1"])
def test_a_cell_a_spreadsheet_would_run_gets_a_leading_quote(tmp_path: Path, cell: str) -> None:
    frame = source({"Email": [cell], "Note": ["plain text"]})
    path = tmp_path / "rejects.csv"

    write_rejects(path, frame, rejected([(1, "Email", f"'{cell}' is not a valid email address")]))

    [row] = read_rows(path)
    assert row["Email"] == "'" + cell
    assert row["Note"] == "plain text"
    assert row["reason"] == f"'{cell}' is not a valid email address"


def test_safe_cells_are_written_unchanged(tmp_path: Path) -> None:
    frame = source({"Email": ["a@example.com"], "Name": ["Ann-Marie"], "Seats": [-3]})
    path = tmp_path / "rejects.csv"
    write_rejects(path, frame, rejected([(1, "Seats", "negative")]))

    [row] = read_rows(path)
    assert (row["Email"], row["Name"], row["Seats"]) == ("a@example.com", "Ann-Marie", "-3")


def test_no_rejects_means_no_file_and_an_old_one_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "rejects.csv"
    frame = source({"Email": ["a@example.com"]})
    assert write_rejects(path, frame, rejected([])) is None
    assert not path.exists()

    path.write_text("row,column,reason\n1,Email,from an earlier run\n")
    assert write_rejects(path, frame, rejected([])) is None
    assert not path.exists()


def test_a_source_column_named_like_ours_keeps_its_data(tmp_path: Path) -> None:
    frame = source({"Email": ["bad"], "row": ["r-7"], "reason": ["churned"], "column": ["B"]})
    path = tmp_path / "rejects.csv"

    write_rejects(path, frame, rejected([(1, "Email", "bad email")]))

    [row] = read_rows(path)
    assert row["row"] == "1"
    assert row["reason"] == "bad email"
    assert row["row (source)"] == "r-7"
    assert row["reason (source)"] == "churned"
    assert row["column (source)"] == "B"


def test_the_rejects_of_a_mapping_go_into_the_file(tmp_path: Path) -> None:
    spec = SyncConfig.model_validate(
        {
            "name": "t",
            "source": {"csv": "unused.csv"},
            "contact": {"email": "Email", "properties": {"n": {"column": "N", "type": "number"}}},
        }
    )
    frame = source(
        {"Email": ["a@example.com", "=cmd|' /C calc'!A0", "c@example.com"], "N": ["1", "2", "x"]}
    )
    mapped = map_rows(spec, frame)
    path = tmp_path / "rejects.csv"

    write_rejects(path, frame, mapped.rejects)

    rows = read_rows(path)
    assert [row["row"] for row in rows] == ["2", "3"]
    assert rows[0]["Email"] == "'=cmd|' /C calc'!A0"
    assert rows[1] == {
        "row": "3",
        "column": "N",
        "reason": "'x' is not a number",
        "Email": "c@example.com",
        "N": "x",
    }


def test_source_columns_csv_cannot_hold_are_written_as_text(tmp_path: Path) -> None:
    """A SQL `text[]` or JSON column, a Parquet list or struct, or bytes, read with `select *`:
    the rejects file still gets written (it crashed every run), the values whole and readable."""
    frame = source(
        {
            "Email": ["bad", "ok@example.com"],
            "tags": [["vip", "beta"], ["x"]],
            "profile": [{"plan": "pro", "seats": 3}, None],
            "avatar": [b"\x00\xff", None],
        }
    )
    path = tmp_path / "rejects.csv"

    write_rejects(path, frame, rejected([(1, "Email", "bad email")]))

    [row] = read_rows(path)
    assert row["tags"] == '["vip","beta"]'
    assert row["profile"] == '{"plan":"pro","seats":3}'
    assert row["avatar"] == "0x00ff"
    assert row["Email"] == "bad"


def test_rows_rejected_for_one_kind_of_reason_are_one_group_whatever_their_values() -> None:
    """A broken export rejects every row, each for its own value: the plan, the report and the
    run history name each kind of reason once (with one value and how many others), not a
    million lines. Reasons as mapping writes them."""
    spec = SyncConfig.model_validate(
        {
            "name": "t",
            "source": {"csv": "unused.csv"},
            "contact": {
                "email": "Email",
                "user_id": "Id",
                "properties": {
                    "n": {"column": "N", "type": "number"},
                    "on": {"column": "On", "type": "boolean"},
                    "at": {"column": "At", "type": "date"},
                },
            },
        }
    )
    frame = source(
        {
            "Email": [
                "x",
                "y",
                "z",
                "d@x.io",
                "d@x.io",
                "e@x.io",
                "e@x.io",
                "f@x.io",
                "g@x.io",
                "h@x.io",
                "i@x.io",
                "j@x.io",
                "k@x.io",
                "l@x.io",
                "m@x.io",
            ],
            "Id": [str(i) for i in range(1, 12)] + ["98", "98", "99", "99"],
            "N": ["1"] * 7 + ["one", "two", "1", "1"] + ["1"] * 4,
            "On": ["yes"] * 9 + ["maybe", "perhaps"] + ["yes"] * 4,
            "At": ["2026-01-01"] * 9 + ["soon", "soon"] + ["2026-01-01"] * 4,
        }
    )
    groups = reject_groups(map_rows(spec, frame).rejects)
    assert groups.more == 0
    assert [
        (g["column"], g["count"], g["other_values"], g["first_rows"]) for g in groups.shown
    ] == [
        ("Email", 4, 1, [4, 5, 6, 7]),  # two emails, each on two rows with different user ids
        ("Email", 4, 1, [12, 13, 14, 15]),  # two user ids, each on two rows with different emails
        ("Email", 3, 2, [1, 2, 3]),
        ("N", 2, 1, [8, 9]),
        ("On; At", 2, 1, [10, 11]),  # two reasons a row: both masked
    ]
    assert groups.shown[2]["reason"] == "'x' is not a valid email address"


def test_only_the_biggest_groups_are_listed_and_the_rest_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(report, "REJECT_GROUPS", 2)
    rows = [(1, "a", "'x' is not a number"), (2, "b", "'x' is not a number")]
    rows += [(3, "c", "'x' is not a number"), (4, "c", "'y' is not a number")]
    groups = reject_groups(rejected(rows))
    assert [(g["column"], g["count"]) for g in groups.shown] == [("c", 2), ("a", 1)]
    assert groups.more == 1
