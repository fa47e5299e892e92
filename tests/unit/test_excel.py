"""Excel sources: a path alone reads the first sheet, and the plan says which sheet it read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import xlsxwriter

from sync.config import load_config
from sync.errors import SourceError
from sync.pipeline import plan_sync
from sync.sources import read_source


def workbook(path: Path, *sheets: str) -> Path:
    """A workbook whose sheets each hold one contact, named after the sheet."""
    book = xlsxwriter.Workbook(path)
    for sheet in sheets:
        page = book.add_worksheet(sheet)
        page.write_row(0, 0, ["Email", "Seats"])
        page.write_row(1, 0, [f"{sheet.lower()}@example.com", "3"])
    book.close()
    return path


def config_for(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "sync.yaml"
    path.write_text(f"name: xl\nsource:\n  excel: {source}\ncontact:\n  email: Email\n")
    return path


def test_a_path_alone_reads_the_first_sheet_as_csv_would(tmp_path: Path) -> None:
    workbook(tmp_path / "leads.xlsx", "Leads", "Archive")

    frame = read_source(load_config(config_for(tmp_path, "leads.xlsx"), env={}))

    assert frame.rows() == [("leads@example.com", "3")]


def test_a_sheet_the_workbook_lacks_lists_the_sheets_there_are(tmp_path: Path) -> None:
    book = workbook(tmp_path / "leads.xlsx", "Leads", "Archive")
    config = load_config(config_for(tmp_path, "{path: leads.xlsx, sheet: leads}"), env={})

    with pytest.raises(SourceError) as caught:
        read_source(config)

    assert str(caught.value) == (
        f"{book}: no sheet 'leads' in the workbook; its sheets: 'Leads', 'Archive' "
        "(set source.excel.sheet to one of them)"
    )


def test_with_several_sheets_and_none_named_the_plan_names_the_one_it_read(
    tmp_path: Path,
) -> None:
    workbook(tmp_path / "leads.xlsx", "Leads", "Archive", "Notes")
    config = config_for(tmp_path, "leads.xlsx")

    preview = plan_sync(load_config(config, env={}))
    shown = subprocess.run(
        [sys.executable, "-m", "sync", "plan", str(config)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    note = (
        "read the first sheet, 'Leads', of leads.xlsx; its other sheets ('Archive', 'Notes') are "
        "not read (set source.excel.sheet to read another)"
    )
    assert note in preview.report.warnings
    assert note in shown
    assert preview.report.contacts_new == 1


def test_a_named_sheet_is_read_without_a_note(tmp_path: Path) -> None:
    workbook(tmp_path / "leads.xlsx", "Leads", "Archive")
    config = load_config(config_for(tmp_path, "{path: leads.xlsx, sheet: Archive}"), env={})

    preview = plan_sync(config)

    assert read_source(config).rows() == [("archive@example.com", "3")]
    assert not any("sheet, '" in warning for warning in preview.report.warnings)


def test_a_workbook_of_one_sheet_says_which_it_read(tmp_path: Path) -> None:
    workbook(tmp_path / "leads.xlsx", "Sheet1")

    preview = plan_sync(load_config(config_for(tmp_path, "leads.xlsx"), env={}))

    assert "read the only sheet, 'Sheet1', of leads.xlsx" in preview.report.warnings
