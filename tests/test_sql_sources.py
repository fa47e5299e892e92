"""SQL sources against the real PostgreSQL and MariaDB servers of this machine, and Excel.

In CI (CI=true) a server that cannot be reached fails the test; elsewhere it is skipped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import psycopg
import pymysql
import pytest

from sync.candidates import map_rows
from sync.columns import ROW
from sync.config import load_config
from sync.errors import ConfigError, SourceError
from sync.source_columns import check_columns
from sync.sources import open_source, read_source

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
MARIADB = "mysql://root@127.0.0.1:3306/test"
TABLE = "loops_sync_test_users"


def unreachable(server: str, error: Exception) -> None:
    message = f"{server} is not reachable: {error}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def postgres_table_of(table: str, columns: str, rows: str) -> Iterator[str]:
    """A table in the local PostgreSQL for one test, dropped after it."""
    try:
        connection = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        unreachable("PostgreSQL at 127.0.0.1:5432", error)
    with connection:
        connection.execute(f"DROP TABLE IF EXISTS {table}")
        connection.execute(f"CREATE TABLE {table} ({columns})")
        connection.execute(f"INSERT INTO {table} VALUES {rows}")
        yield table
        connection.execute(f"DROP TABLE IF EXISTS {table}")


@pytest.fixture
def postgres_table() -> Iterator[str]:
    yield from postgres_table_of(
        TABLE,
        "id bigint, email text, seats integer, mrr numeric(8, 2), signed_up timestamptz,"
        " trial_ends date, newsletter boolean, plan text",
        "(1, 'Ada@Example.com', 3, 19.90, '2026-01-05 10:00:00+02', '2026-02-01', true, 'pro'),"
        " (2, 'grace@example.com', NULL, NULL, NULL, NULL, NULL, 'free')",
    )


@pytest.fixture
def mariadb_table() -> Iterator[str]:
    try:
        connection = pymysql.connect(
            host="127.0.0.1",
            port=3306,
            user="root",
            password="",
            database="test",
            connect_timeout=5,
        )
    except pymysql.err.OperationalError as error:
        unreachable("MariaDB at 127.0.0.1:3306", error)
    with connection, connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
        cursor.execute(
            f"CREATE TABLE {TABLE} (id bigint, email varchar(200), seats int, mrr decimal(8, 2),"
            " signed_up datetime, trial_ends date, newsletter tinyint(1), plan varchar(20))"
        )
        cursor.execute(
            f"INSERT INTO {TABLE} VALUES"
            " (1, 'Ada@Example.com', 3, 19.90, '2026-01-05 08:00:00', '2026-02-01', 1, 'pro'),"
            " (2, 'grace@example.com', NULL, NULL, NULL, NULL, NULL, 'free')"
        )
        connection.commit()
        yield TABLE
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")
        connection.commit()


def sql_config(tmp_path: Path, url: str, query: str) -> Path:
    path = tmp_path / "sync.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: db-users
            source:
              sql:
                url: "{url}"
                query: "{query}"
            contact:
              email: email
              user_id: id
              properties:
                seats: {{column: seats, type: number}}
                mrr: {{column: mrr, type: number}}
                signedUpAt: {{column: signed_up, type: date}}
                trialEndsAt: {{column: trial_ends, type: date}}
                plan: plan
              mailing_lists:
                cm06f5v0e45nf0ml5754o9cix: newsletter
            """
        )
    )
    return path


def bodies_from(config_path: Path) -> list[dict[str, object]]:
    config = load_config(config_path)
    frame = read_source(config).with_row_index(ROW, offset=1)
    mapped = map_rows(config.spec, frame)
    assert mapped.rejects.is_empty()
    return [json.loads(body) for body in mapped.contacts["body"]]


EXPECTED = [
    {
        "email": "ada@example.com",
        "userId": "1",
        "seats": 3,
        "mrr": 19.9,
        "signedUpAt": int(dt.datetime(2026, 1, 5, 8, tzinfo=dt.UTC).timestamp() * 1000),
        "trialEndsAt": int(dt.datetime(2026, 2, 1, tzinfo=dt.UTC).timestamp() * 1000),
        "plan": "pro",
        "mailingLists": {"cm06f5v0e45nf0ml5754o9cix": True},
    },
    {"email": "grace@example.com", "userId": "2", "plan": "free"},
]


def test_postgresql_rows_become_the_same_bodies(tmp_path: Path, postgres_table: str) -> None:
    path = sql_config(tmp_path, POSTGRES, f"select * from {postgres_table} order by id")
    assert bodies_from(path) == EXPECTED


def test_mariadb_rows_become_the_same_bodies(tmp_path: Path, mariadb_table: str) -> None:
    path = sql_config(tmp_path, MARIADB, f"select * from {mariadb_table} order by id")
    assert bodies_from(path) == EXPECTED


def test_the_database_url_can_come_from_the_environment(
    tmp_path: Path, postgres_table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APP_DATABASE_URL", POSTGRES)
    path = sql_config(tmp_path, "${APP_DATABASE_URL}", f"select * from {postgres_table}")
    assert len(bodies_from(path)) == 2


def test_a_failing_query_names_the_database_without_its_password(
    tmp_path: Path, postgres_table: str
) -> None:
    url = "postgresql://postgres:hunter2secret@127.0.0.1:5432/test"
    path = sql_config(tmp_path, url, "select * from no_such_table")
    with pytest.raises(SourceError) as caught:
        read_source(load_config(path))
    assert "127.0.0.1:5432/test" in str(caught.value)
    assert "hunter2secret" not in str(caught.value)


def test_an_excel_sheet_is_read_as_text(tmp_path: Path) -> None:
    workbook = tmp_path / "leads.xlsx"
    pl.DataFrame({"Email": ["a@x.io"], "Zip": ["01234"]}).write_excel(workbook, worksheet="Leads")
    path = tmp_path / "sync.yaml"
    path.write_text(
        "name: xl\nsource:\n  excel: {path: leads.xlsx, sheet: Leads}\n"
        "contact:\n  email: Email\n  properties: {zip: Zip}\n"
    )
    frame = read_source(load_config(path))
    assert frame.rows() == [("a@x.io", "01234")]


# --- one text form for SQL numbers, and array columns ---------------------------------------------

NUMBERS_TABLE = "loops_sync_bad_input_numbers"  # its own name: other tests use TABLE in parallel
NUMBERS_CONFIG = """
name: db-numbers
source:
  sql: {{url: "{url}", query: "select * from {table} order by n"}}
contact:
  user_id: account
  properties:
    ref: account
    total: {{column: amount, type: number}}
    amountText: amount
events:
  - name: order
    user_id: account
    once_per: [order_id]
"""


@pytest.fixture
def numbers_table() -> Iterator[str]:
    """Ids and amounts as PostgreSQL numeric (read as decimal[38,10], as connectorx read them),
    and a text[] column."""
    yield from postgres_table_of(
        NUMBERS_TABLE,
        "n int, account numeric(10, 0), amount numeric(8, 2), order_id numeric, tags text[]",
        "(1, 101, 19.90, 7001, ARRAY['a', 'b']), (2, 102, 101.00, 7002.0, NULL)",
    )


def test_sql_numeric_ids_and_amounts_have_the_text_of_the_same_csv_values(
    tmp_path: Path, numbers_table: str
) -> None:
    """numeric(10,0) 101 is '101' (not '101.0000000000'); numeric(8,2) 19.90 is '19.9'; the
    event keys are those of the same values read from CSV text; an unmapped text[] column is
    no trouble."""
    path = tmp_path / "sync.yaml"
    path.write_text(NUMBERS_CONFIG.format(url=POSTGRES, table=numbers_table))
    config = load_config(path)
    frame = read_source(config)
    check_columns(config, frame.schema)
    mapped = map_rows(config.spec, frame.with_row_index(ROW, offset=1))

    assert [json.loads(body) for body in mapped.contacts["body"]] == [
        {"userId": "101", "ref": "101", "total": 19.9, "amountText": "19.9"},
        {"userId": "102", "ref": "102", "total": 101, "amountText": "101"},
    ]
    as_text = pl.DataFrame(
        {"account": ["101", "102"], "amount": ["19.9", "101"], "order_id": ["7001", "7002"]}
    )
    from_csv = map_rows(config.spec, as_text.with_row_index(ROW, offset=1))
    assert mapped.events["key"].to_list() == from_csv.events["key"].to_list()


def test_a_sql_array_column_mapped_as_a_value_is_a_config_error(
    tmp_path: Path, numbers_table: str
) -> None:
    path = tmp_path / "sync.yaml"
    path.write_text(
        NUMBERS_CONFIG.format(url=POSTGRES, table=numbers_table).replace(
            "amountText: amount", "labels: tags"
        )
    )
    config = load_config(path)
    with pytest.raises(ConfigError) as caught:
        check_columns(config, read_source(config).schema)
    [problem] = caught.value.problems
    assert problem.path == "contact.properties.labels"
    assert problem.message.startswith("column 'tags' holds List(String), many values per row")


def test_a_postgresql_query_streams_in_slices_with_one_schema(
    tmp_path: Path, postgres_table: str
) -> None:
    """The rows come a slice at a time from the driver's stream, never the whole table."""
    config = load_config(sql_config(tmp_path, POSTGRES, f"select * from {postgres_table}"))
    stream = open_source(config, slice_rows=1)
    slices = list(stream.slices)
    assert [piece.height for piece in slices] == [1, 1]
    assert all(piece.schema == stream.schema for piece in slices)
    assert pl.concat(slices).equals(read_source(config))
