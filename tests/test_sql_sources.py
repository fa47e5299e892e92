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

from sync.config import load_config
from sync.errors import SourceError
from sync.mapping import ROW, map_rows
from sync.sources import read_source

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
MARIADB = "mysql://root@127.0.0.1:3306/test"
TABLE = "loops_sync_test_users"


def unreachable(server: str, error: Exception) -> None:
    message = f"{server} is not reachable: {error}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def postgres_table() -> Iterator[str]:
    try:
        connection = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        unreachable("PostgreSQL at 127.0.0.1:5432", error)
    with connection:
        connection.execute(f"DROP TABLE IF EXISTS {TABLE}")
        connection.execute(
            f"CREATE TABLE {TABLE} (id bigint, email text, seats integer, mrr numeric(8, 2),"
            " signed_up timestamptz, trial_ends date, newsletter boolean, plan text)"
        )
        connection.execute(
            f"INSERT INTO {TABLE} VALUES"
            " (1, 'Ada@Example.com', 3, 19.90, '2026-01-05 10:00:00+02', '2026-02-01',"
            "  true, 'pro'),"
            " (2, 'grace@example.com', NULL, NULL, NULL, NULL, NULL, 'free')"
        )
        yield TABLE
        connection.execute(f"DROP TABLE IF EXISTS {TABLE}")


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
