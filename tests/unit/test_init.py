"""`loops-sync init SOURCE`: a starting config from the source's columns that loads and plans."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from sync.config import load_config
from sync.init import draft_config
from sync.pipeline import plan_sync

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_data"


def loops_sync(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sync", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(
    ("sample", "args", "email"),
    [
        ("clay_export.csv", ["clay_export.csv"], "Email"),
        ("product_users.parquet", ["product_users.parquet"], "email"),
        ("app.db", ["sqlite:///app.db", "--query", "select * from users"], "email"),
    ],
)
def test_the_config_init_prints_for_the_sample_data_loads_and_plans(
    tmp_path: Path, sample: str, args: list[str], email: str
) -> None:
    shutil.copy(SAMPLES / sample, tmp_path / sample)

    made = loops_sync(tmp_path, "init", *args)
    (tmp_path / "sync.yaml").write_text(made.stdout)
    planned = loops_sync(tmp_path, "plan", "sync.yaml")

    assert made.returncode == 0, made.stderr
    config = load_config(tmp_path / "sync.yaml", env={})
    assert config.spec.contact is not None
    assert config.spec.contact.email == email
    assert planned.returncode == 0, planned.stderr
    assert plan_sync(config).report.contacts_new > 0


def test_the_clay_export_gets_camel_case_names_and_the_types_its_values_have(
    tmp_path: Path,
) -> None:
    draft = draft_config(str(SAMPLES / "clay_export.csv"))

    found = {p.column: (p.name, p.type) for p in draft.properties}
    assert found["First Name"] == ("firstName", "string")
    assert found["LinkedIn URL"] == ("linkedInUrl", "string")
    assert found["Employee Count"] == ("employeeCount", "number")
    assert found["Enriched At"] == ("enrichedAt", "date")
    assert found["Newsletter Opt-In"] == ("newsletterOptIn", "boolean")
    assert draft.email == "Email"
    # The odd cells of a guessed column are said beside it: plan rejects their rows.
    assert "# Employee Count: 1 of 48 cells read are not a number (e.g. '~50')" in draft.yaml()


def test_types_are_guessed_from_text_values(tmp_path: Path) -> None:
    pl.DataFrame(
        {
            "Work Email": ["a@x.io", "b@x.io"],
            "zip": ["01234", "00042"],  # leading zeros: an identifier, not a number
            "seats": ["3", "12.5"],
            "signed_up_at": ["2024-01-02", "2024-01-03T10:00:00Z"],
            "Active?": ["yes", "NO"],
            "ID": ["7", "8"],  # 'id' is reserved by Loops
            "2024 revenue": ["1", "2"],
        }
    ).write_csv(tmp_path / "people.csv")

    draft = draft_config(str(tmp_path / "people.csv"))

    found = {p.column: (p.name, p.type) for p in draft.properties}
    assert draft.email == "Work Email"
    assert found == {
        "zip": ("zip", "string"),
        "seats": ("seats", "number"),
        "signed_up_at": ("signedUpAt", "date"),
        "Active?": ("active", "boolean"),
        "ID": ("sourceId", "number"),
        "2024 revenue": ("p2024Revenue", "number"),
    }


def test_the_email_column_is_found_by_its_values_and_the_separator_by_the_header(
    tmp_path: Path,
) -> None:
    (tmp_path / "people.csv").write_text("who;contact\nAda;ada@example.com\nBo;bo@example.com\n")

    draft = draft_config(str(tmp_path / "people.csv"))

    assert draft.email == "contact"
    assert draft.source == {"csv": str(tmp_path / "people.csv"), "separator": ";"}


def test_a_header_with_an_invisible_character_is_written_so_it_reads_back(
    tmp_path: Path,
) -> None:
    (tmp_path / "people.csv").write_text("Email,First\u00a0Name\nada@example.com,Ada\n")
    made = loops_sync(tmp_path, "init", "people.csv")
    (tmp_path / "sync.yaml").write_text(made.stdout)

    config = load_config(tmp_path / "sync.yaml", env={})

    assert '"First\\u00a0Name"' in made.stdout
    assert config.spec.contact is not None
    assert config.spec.contact.properties["firstName"].column == "First\u00a0Name"


def test_a_file_of_no_known_kind_is_one_message_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "people.json").write_text("[]")

    result = loops_sync(tmp_path, "init", "people.json")

    assert result.returncode == 2
    assert "people.json: cannot tell the kind of file from its name" in result.stderr
    assert "Traceback" not in result.stderr
