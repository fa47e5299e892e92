"""Sources: CSV, Parquet and SQLite read as the user's file says, and every failure explained."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from sync.config import Config, load_config
from sync.errors import SourceError
from sync.sources import open_source, read_source
from tests.unit.conftest import WriteConfig


def source_config(write_config: WriteConfig, source: str) -> Config:
    """A config in tmp_path/configs/ whose source is the given YAML flow mapping."""
    path = write_config(
        f"name: test\nsource: {source}\ncontact: {{email: Email}}\n", name="configs/sync.yaml"
    )
    return load_config(path, env={})


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tmp_path/configs/data, with the working directory elsewhere (paths follow the config)."""
    folder = tmp_path / "configs" / "data"
    folder.mkdir(parents=True)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    return folder


# --- CSV ------------------------------------------------------------------------------------------


def test_csv_with_bom_crlf_quoted_commas_and_newlines(
    write_config: WriteConfig, data_dir: Path
) -> None:
    (data_dir / "leads.csv").write_bytes(
        b"\xef\xbb\xbfid,Email,Note\r\n"
        b'007,ada@example.com,"Acme, Inc."\r\n'
        b'0010,bo@example.com,"line one\r\nline two"\r\n'
    )
    frame = read_source(source_config(write_config, "{csv: data/leads.csv}"))

    assert frame.columns == ["id", "Email", "Note"]  # no BOM glued to the first name
    assert frame.to_dicts() == [
        {"id": "007", "Email": "ada@example.com", "Note": "Acme, Inc."},
        {"id": "0010", "Email": "bo@example.com", "Note": "line one\r\nline two"},
    ]


def test_every_csv_column_is_text(write_config: WriteConfig, data_dir: Path) -> None:
    (data_dir / "leads.csv").write_text(
        "zip,seats,ok,when\n01234,5,true,2024-01-02\n00000,1.50,false,2024-01-03\n"
    )
    frame = read_source(source_config(write_config, "{csv: data/leads.csv}"))

    assert set(frame.schema.values()) == {pl.String}
    assert frame["zip"].to_list() == ["01234", "00000"]
    assert frame["seats"].to_list() == ["5", "1.50"]


def test_a_latin1_csv_without_encoding_is_explained(
    write_config: WriteConfig, data_dir: Path
) -> None:
    path = data_dir / "leads.csv"
    path.write_bytes("id,Name\n1,Renée Müller\n".encode("latin-1"))

    with pytest.raises(SourceError) as caught:
        read_source(source_config(write_config, "{csv: data/leads.csv}"))

    message = str(caught.value)
    assert str(path) in message
    assert "not UTF-8" in message
    assert "encoding:" in message
    assert caught.value.exit_code == 2


def test_a_latin1_csv_with_its_encoding_reads(write_config: WriteConfig, data_dir: Path) -> None:
    (data_dir / "leads.csv").write_bytes("id,Name\n1,Renée Müller\n".encode("latin-1"))
    config = source_config(write_config, "{csv: data/leads.csv, encoding: latin-1}")
    assert read_source(config).to_dicts() == [{"id": "1", "Name": "Renée Müller"}]


def test_a_separator_can_be_set(write_config: WriteConfig, data_dir: Path) -> None:
    (data_dir / "leads.csv").write_text("id;Email\n1;a@example.com\n")
    config = source_config(write_config, "{csv: data/leads.csv, separator: ';'}")
    assert read_source(config).columns == ["id", "Email"]


def test_a_glob_concatenates_every_matching_file(write_config: WriteConfig, data_dir: Path) -> None:
    (data_dir / "part-2.csv").write_text("id,Email\n2,b@example.com\n")
    (data_dir / "part-1.csv").write_text("id,Email\n1,a@example.com\n")
    (data_dir / "other.csv").write_text("id,Email\n9,z@example.com\n")

    frame = read_source(source_config(write_config, '{csv: "data/part-*.csv"}'))

    assert frame["id"].to_list() == ["1", "2"]


@pytest.mark.parametrize("kind", ["csv", "parquet"])
def test_a_file_name_with_glob_characters_is_read_as_named(
    write_config: WriteConfig, data_dir: Path, kind: str
) -> None:
    frame = pl.DataFrame({"id": ["1"], "Email": ["a@example.com"]})
    path = data_dir / f"leads [2024].{kind}"
    if kind == "csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)

    read = read_source(source_config(write_config, f'{{{kind}: "data/leads [2024].{kind}"}}'))

    assert read.equals(frame)


def test_no_matching_file_names_the_pattern(write_config: WriteConfig, data_dir: Path) -> None:
    with pytest.raises(SourceError) as caught:
        read_source(source_config(write_config, '{csv: "data/leads-*.csv"}'))
    assert "no file matches 'data/leads-*.csv'" in str(caught.value)
    assert str(data_dir / "leads-*.csv") in str(caught.value)


def test_an_empty_file_is_an_error(write_config: WriteConfig, data_dir: Path) -> None:
    path = data_dir / "leads.csv"
    path.write_bytes(b"")
    with pytest.raises(SourceError) as caught:
        read_source(source_config(write_config, "{csv: data/leads.csv}"))
    assert str(path) in str(caught.value)
    assert "empty" in str(caught.value)


def test_a_duplicated_header_the_config_maps_is_an_error_naming_the_file_and_the_header(
    write_config: WriteConfig, data_dir: Path
) -> None:
    """Polars would rename the second 'Email' to 'Email_duplicated_0' and read the first."""
    path = data_dir / "leads.csv"
    path.write_text("Email,Name,Email,Name\nold@x.io,Ada,new@x.io,Ada L.\n")

    with pytest.raises(SourceError) as caught:
        read_source(source_config(write_config, "{csv: data/leads.csv}"))

    assert str(caught.value) == (
        f"{path}: the header 'Email' (columns 1, 3) is given more than once, so which column "
        "the config means is unclear; rename or remove all but one"
    )
    assert caught.value.exit_code == 2


def test_every_duplicated_header_the_config_uses_is_named(
    write_config: WriteConfig, data_dir: Path
) -> None:
    (data_dir / "leads.csv").write_text("id,Email,Plan,Email,Plan,Plan\n1,a@x.io,a,b,c,d\n")
    path = write_config(
        "name: test\nsource: {csv: data/leads.csv}\ncontact: {email: Email}\n"
        "events:\n  - {name: paid, email: Email, when: \"Plan = 'pro'\"}\n",
        name="configs/sync.yaml",
    )
    with pytest.raises(SourceError) as caught:
        read_source(load_config(path, env={}))

    message = str(caught.value)
    assert (
        "the headers 'Email' (columns 2, 4) and 'Plan' (columns 3, 5, 6) are given more" in message
    )


def test_a_duplicated_header_the_config_does_not_use_is_read(
    write_config: WriteConfig, data_dir: Path
) -> None:
    """An export's two 'Notes' columns do not stop a sync that reads neither."""
    (data_dir / "leads.csv").write_text("Notes,Email,Notes,,\nx,a@x.io,y,,\n")
    frame = read_source(source_config(write_config, "{csv: data/leads.csv}"))
    assert frame["Email"].to_list() == ["a@x.io"]


def test_a_column_named_like_a_renamed_duplicate_is_no_duplicate(
    write_config: WriteConfig, data_dir: Path
) -> None:
    (data_dir / "leads.csv").write_text("Email,Email_duplicated_0\na@x.io,b\n")
    frame = read_source(source_config(write_config, "{csv: data/leads.csv}"))
    assert frame.columns == ["Email", "Email_duplicated_0"]


# --- Parquet --------------------------------------------------------------------------------------


def test_parquet_keeps_its_types(write_config: WriteConfig, data_dir: Path) -> None:
    original = pl.DataFrame(
        {
            "user_id": ["007", "008"],
            "seats": [5, None],
            "mrr": [2.5, 3.0],
            "active": [True, False],
            "created_at": [dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), None],
            "local_at": [dt.datetime(2024, 1, 2, 3, 4, 5), None],
            "born": [dt.date(1990, 5, 6), None],
        },
        schema={
            "user_id": pl.String,
            "seats": pl.Int64,
            "mrr": pl.Float64,
            "active": pl.Boolean,
            "created_at": pl.Datetime("us", "UTC"),
            "local_at": pl.Datetime("us"),
            "born": pl.Date,
        },
    )
    original.write_parquet(data_dir / "users.parquet")

    frame = read_source(source_config(write_config, "{parquet: data/users.parquet}"))

    assert frame.schema == original.schema
    assert frame.equals(original)


# --- SQL ------------------------------------------------------------------------------------------


def make_database(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("create table users (id integer, email text, mrr real, zip text)")
        connection.executemany(
            "insert into users values (?, ?, ?, ?)",
            [(1, "a@example.com", 9.5, "01234"), (2, "b@example.com", None, None)],
        )
    connection.close()


def test_sqlite_url_is_relative_to_the_config(write_config: WriteConfig, data_dir: Path) -> None:
    make_database(data_dir / "app.db")
    config = source_config(
        write_config,
        '{sql: {url: "sqlite:///data/app.db", query: "select * from users order by id"}}',
    )

    frame = read_source(config)

    assert frame.schema == pl.Schema(
        {"id": pl.Int64, "email": pl.String, "mrr": pl.Float64, "zip": pl.String}
    )
    assert frame.to_dicts() == [
        {"id": 1, "email": "a@example.com", "mrr": 9.5, "zip": "01234"},
        {"id": 2, "email": "b@example.com", "mrr": None, "zip": None},
    ]


def test_sqlite_is_opened_read_only(write_config: WriteConfig, data_dir: Path) -> None:
    make_database(data_dir / "app.db")
    config = source_config(
        write_config, '{sql: {url: "sqlite:///data/app.db", query: "delete from users"}}'
    )
    with pytest.raises(SourceError):
        read_source(config)
    with sqlite3.connect(data_dir / "app.db") as connection:
        assert connection.execute("select count(*) from users").fetchone() == (2,)
    connection.close()


def test_a_bad_query_is_a_source_error(write_config: WriteConfig, data_dir: Path) -> None:
    make_database(data_dir / "app.db")
    config = source_config(
        write_config, '{sql: {url: "sqlite:///data/app.db", query: "select * from nope"}}'
    )
    with pytest.raises(SourceError) as caught:
        read_source(config)
    assert "no such table: nope" in str(caught.value)
    assert str(data_dir / "app.db") in str(caught.value)


def test_a_missing_sqlite_file_is_a_source_error(write_config: WriteConfig, data_dir: Path) -> None:
    config = source_config(
        write_config, '{sql: {url: "sqlite:///data/missing.db", query: "select 1"}}'
    )
    with pytest.raises(SourceError, match="no SQLite database"):
        read_source(config)
    assert not (data_dir / "missing.db").exists()


@pytest.mark.parametrize("scheme", ["oracle", "mssql", "snowflake"])
def test_an_unsupported_database_is_a_source_error(
    write_config: WriteConfig, data_dir: Path, scheme: str
) -> None:
    config = source_config(
        write_config, f'{{sql: {{url: "{scheme}://user:pw@host/db", query: "select 1"}}}}'
    )
    with pytest.raises(SourceError) as caught:
        read_source(config)
    assert f"unsupported database '{scheme}'" in str(caught.value)
    assert "pw" not in str(caught.value)


# --- bounded slices -------------------------------------------------------------------------------


def test_the_source_comes_as_bounded_slices_after_its_schema(
    write_config: WriteConfig, data_dir: Path
) -> None:
    """A large export is never held whole: slices of at most `slice_rows`, in source order."""
    rows = "".join(f"p{i}@x.com,{i}\n" for i in range(25))
    (data_dir / "a.csv").write_text("Email,seats\n" + rows)
    config = source_config(write_config, "{csv: data/a.csv}")
    stream = open_source(config, slice_rows=10)
    assert stream.schema == pl.Schema({"Email": pl.String, "seats": pl.String})
    heights = [piece.height for piece in stream.slices]
    assert max(heights) <= 10
    assert sum(heights) == 25
    assert read_source(config)["seats"].to_list() == [str(i) for i in range(25)]


def test_files_of_a_glob_stream_as_one_source_with_every_column(
    write_config: WriteConfig, data_dir: Path
) -> None:
    pl.DataFrame({"Email": ["a@x.com"], "seats": [1]}).write_parquet(data_dir / "1.parquet")
    pl.DataFrame({"Email": ["b@x.com"], "plan": ["pro"]}).write_parquet(data_dir / "2.parquet")
    config = source_config(write_config, "{parquet: 'data/*.parquet'}")
    stream = open_source(config, slice_rows=1)
    slices = list(stream.slices)
    assert [piece.schema for piece in slices] == [stream.schema, stream.schema]
    assert pl.concat(slices).rows() == [("a@x.com", 1, None), ("b@x.com", None, "pro")]


def test_a_bad_byte_far_into_a_csv_is_a_source_error_naming_the_file(
    write_config: WriteConfig, data_dir: Path
) -> None:
    good = "".join(f"p{i}@x.com\n" for i in range(5000)).encode()
    (data_dir / "late.csv").write_bytes(b"Email\n" + good + b"caf\xe9@x.com\n")
    config = source_config(write_config, "{csv: data/late.csv}")
    with pytest.raises(SourceError, match=r"late\.csv: the file is not UTF-8"):
        list(open_source(config, slice_rows=100).slices)


# --- CSV with another separator -------------------------------------------------------------------


def test_a_semicolon_csv_read_with_commas_names_the_separator_to_set(
    write_config: WriteConfig, data_dir: Path
) -> None:
    # A row with a comma in a cell gives more fields than the header: Polars' own words then
    # name its schema, not the separator.
    (data_dir / "leads.csv").write_text("Email;Company\nada@example.com;Acme, Inc.\n")

    with pytest.raises(SourceError) as caught:
        read_source(source_config(write_config, "{csv: data/leads.csv}"))

    message = str(caught.value)
    assert str(data_dir / "leads.csv") in message
    assert "separated by ';'" in message
    assert "separator: ';'" in message
    assert "Schema" not in message


def test_a_tab_separated_csv_read_as_one_column_names_the_separator_to_set(
    write_config: WriteConfig, data_dir: Path
) -> None:
    (data_dir / "leads.csv").write_text("Email\tSeats\nada@example.com\t5\n")

    with pytest.raises(SourceError) as caught:
        read_source(source_config(write_config, "{csv: data/leads.csv}"))

    assert "separated by tabs" in str(caught.value)
    assert 'separator: "\\t"' in str(caught.value)


def test_a_one_column_csv_whose_header_holds_a_semicolon_the_config_maps_is_read(
    write_config: WriteConfig, data_dir: Path
) -> None:
    (data_dir / "leads.csv").write_text('"Email;Work"\nada@example.com\n')
    path = write_config(
        "name: test\nsource: {csv: data/leads.csv}\ncontact: {email: 'Email;Work'}\n",
        name="configs/sync.yaml",
    )

    assert read_source(load_config(path, env={})).columns == ["Email;Work"]
