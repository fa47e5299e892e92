"""Reading PostgreSQL and MySQL/MariaDB as a user notices it: every type as it arrived before the
readers streamed (the values below are what connectorx gave, issue 10), the rows in slices of
at most the slice size with every row once, the schema of an empty result, a query failing
halfway as one SourceError without the password, and no connection left open.

Against this machine's servers (in CI, CI=true, one that cannot be reached fails the test).
"""

from __future__ import annotations

import datetime as dt
import textwrap
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import polars as pl
import psycopg
import pymysql
import pytest

from sync.config import Config, load_config
from sync.errors import SourceError
from sync.sources import SourceStream, open_source
from sync.sql_postgres import _sliced as sliced
from tests.test_sql_sources import MARIADB, POSTGRES, postgres_table_of, unreachable

PG_TABLE = "loops_sync_test_read_types"
MY_TABLE = "loops_sync_test_read_types"
ROWS_TABLE = "loops_sync_test_read_rows"
UTC = dt.UTC


def config_for(tmp_path: Path, url: str, query: str) -> Config:
    path = tmp_path / "sync.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: read
            source:
              sql: {{url: "{url}", query: "{query}"}}
            contact: {{email: email}}
            """
        )
    )
    return load_config(path)


def opened(tmp_path: Path, url: str, query: str, slice_rows: int = 50_000) -> SourceStream:
    return open_source(config_for(tmp_path, url, query), slice_rows=slice_rows)


@pytest.fixture
def mariadb() -> Iterator[pymysql.Connection]:
    try:
        connection = pymysql.connect(
            host="127.0.0.1", port=3306, user="root", database="test", connect_timeout=5
        )
    except pymysql.err.OperationalError as error:
        unreachable("MariaDB at 127.0.0.1:3306", error)
    with connection:
        yield connection


def mariadb_table(connection: pymysql.Connection, table: str, columns: str, rows: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {table}")
        cursor.execute(f"CREATE TABLE {table} ({columns})")
        cursor.execute(f"INSERT INTO {table} VALUES {rows}")
    connection.commit()


def mariadb_drop(connection: pymysql.Connection, table: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {table}")
    connection.commit()


# --- every type as before -------------------------------------------------------------------------

PG_COLUMNS = (
    "id bigint, n int, small smallint, email text, name varchar(20), code char(3),"
    " mrr numeric(8, 2), amount numeric, ratio double precision, r real, signed_up timestamptz,"
    " seen timestamp, trial_ends date, newsletter boolean, attrs jsonb, doc json, u uuid, ip inet"
)
PG_ROWS = (
    "(1, 3, 2, 'Ada@Example.com', 'Ada', 'ab', 19.90, 12345678901234.5, 1.5, 2.5,"
    " '2026-01-05 10:00:00.123456+02', '2026-01-05 10:00:00.5', '2026-02-01', true,"
    """ '{"plan": "pro", "seats": [1, 2], "é": "ü"}', '{"b": 1, "a": 2.50}',"""
    " 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '10.0.0.1'),"
    " (2" + ", NULL" * 17 + ")"
)
PG_SCHEMA = {
    "id": pl.Int64,
    "n": pl.Int64,
    "small": pl.Int64,
    "email": pl.String,
    "name": pl.String,
    "code": pl.String,
    "mrr": pl.Decimal(38, 10),
    "amount": pl.Decimal(38, 10),
    "ratio": pl.Float64,
    "r": pl.Float64,
    "signed_up": pl.Datetime("us", "UTC"),
    "seen": pl.Datetime("us"),
    "trial_ends": pl.Date,
    "newsletter": pl.Boolean,
    "attrs": pl.String,
    "doc": pl.String,
    "u": pl.String,
    "ip": pl.String,
}
PG_VALUES = [
    (
        1,
        3,
        2,
        "Ada@Example.com",
        "Ada",
        "ab ",
        Decimal("19.9000000000"),
        Decimal("12345678901234.5000000000"),
        1.5,
        2.5,
        dt.datetime(2026, 1, 5, 8, 0, 0, 123456, tzinfo=UTC),
        dt.datetime(2026, 1, 5, 10, 0, 0, 500000),
        dt.date(2026, 2, 1),
        True,
        '{"plan":"pro","seats":[1,2],"é":"ü"}',  # compact, keys sorted: the same body hash
        '{"a":2.5,"b":1}',
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "10.0.0.1",
    ),
    (2, *[None] * 17),
]


@pytest.fixture
def pg_types() -> Iterator[str]:
    yield from postgres_table_of(PG_TABLE, PG_COLUMNS, PG_ROWS)


def test_postgresql_types_arrive_as_before(tmp_path: Path, pg_types: str) -> None:
    stream = opened(tmp_path, POSTGRES, f"select * from {pg_types} order by id")
    frame = pl.concat(list(stream.slices))
    assert dict(stream.schema) == PG_SCHEMA
    assert frame.schema == stream.schema
    assert frame.rows() == PG_VALUES


MY_COLUMNS = (
    "id bigint, tiny tinyint, flag tinyint(1), small smallint, n int, un int unsigned,"
    " email varchar(200), code char(3), txt text, mrr decimal(8, 2), ratio double, r float,"
    " signed_up datetime, precise datetime(6), trial_ends date, t time, attrs json,"
    " e enum('a', 'b'), blb blob"
)
MY_ROWS = (
    "(1, -2, 1, 3, 5, 4000000000, 'Ada@Example.com', 'ab', 'long text', 19.90, 1.5, 2.5,"
    " '2026-01-05 08:00:00', '2026-01-05 08:00:00.123456', '2026-02-01', '10:11:12',"
    """ '{"b": [1, 2], "a": 1}', 'b', 'xyz'),"""
    " (2" + ", NULL" * 18 + ")"
)
MY_SCHEMA = {
    "id": pl.Int64,
    "tiny": pl.Int8,
    "flag": pl.Int8,
    "small": pl.Int16,
    "n": pl.Int32,
    "un": pl.UInt32,
    "email": pl.String,
    "code": pl.String,
    "txt": pl.String,
    "mrr": pl.Decimal(38, 10),
    "ratio": pl.Float64,
    "r": pl.Float32,
    "signed_up": pl.Datetime("us"),
    "precise": pl.Datetime("us"),
    "trial_ends": pl.Date,
    "t": pl.Time,
    "attrs": pl.String,
    "e": pl.String,
    "blb": pl.Binary,
}
MY_VALUES = [
    (
        1,
        -2,
        1,
        3,
        5,
        4000000000,
        "Ada@Example.com",
        "ab",
        "long text",
        Decimal("19.9000000000"),
        1.5,
        2.5,
        dt.datetime(2026, 1, 5, 8, 0),
        dt.datetime(2026, 1, 5, 8, 0, 0, 123456),
        dt.date(2026, 2, 1),
        dt.time(10, 11, 12),
        '{"b": [1, 2], "a": 1}',  # MariaDB's JSON is text, kept as written
        "b",
        b"xyz",
    ),
    (2, *[None] * 18),
]


def test_mariadb_types_arrive_as_before(tmp_path: Path, mariadb: pymysql.Connection) -> None:
    mariadb_table(mariadb, MY_TABLE, MY_COLUMNS, MY_ROWS)
    try:
        stream = opened(tmp_path, MARIADB, f"select * from {MY_TABLE} order by id")
        frame = pl.concat(list(stream.slices))
    finally:
        mariadb_drop(mariadb, MY_TABLE)
    assert dict(stream.schema) == MY_SCHEMA
    assert frame.schema == stream.schema
    assert frame.rows() == MY_VALUES


def test_a_mariadb_zero_date_is_no_date(tmp_path: Path, mariadb: pymysql.Connection) -> None:
    """MySQL's '0000-00-00' (allowed by older sql_modes) is no date, not a failed read."""
    with mariadb.cursor() as cursor:
        cursor.execute("SET SESSION sql_mode = ''")
    mariadb_table(mariadb, MY_TABLE, "d date, at datetime", "('0000-00-00', '0000-00-00 00:00:00')")
    try:
        frame = pl.concat(list(opened(tmp_path, MARIADB, f"select * from {MY_TABLE}").slices))
    finally:
        mariadb_drop(mariadb, MY_TABLE)
    assert frame.rows() == [(None, None)]


# --- slices, every row once -----------------------------------------------------------------------


@pytest.fixture
def pg_rows() -> Iterator[str]:
    yield from postgres_table_of(
        ROWS_TABLE,
        "id int, email text",
        "(generate_series(1, 2500), 'x')",
    )


def test_a_postgresql_table_larger_than_a_slice_arrives_in_slices_every_row_once(
    tmp_path: Path, pg_rows: str
) -> None:
    stream = opened(tmp_path, POSTGRES, f"select * from {pg_rows}", slice_rows=1000)
    slices = list(stream.slices)
    assert [piece.height for piece in slices] == [1000, 1000, 500]
    assert sorted(pl.concat(slices)["id"].to_list()) == list(range(1, 2501))


def test_rows_spanning_many_driver_batches_arrive_in_whole_slices_every_row_once(
    tmp_path: Path,
) -> None:
    """The driver's batches (about 4 MB) do not line up with slices: rows are cut and joined
    across them, none lost or doubled."""
    query = "select i as id, repeat('x', 60) as email from generate_series(1, 300000) as i"
    slices = list(opened(tmp_path, POSTGRES, query, slice_rows=50_000).slices)
    assert [piece.height for piece in slices] == [50_000] * 6
    ids = pl.concat(slices)["id"]
    assert ids.to_list() == list(range(1, 300_001))


@pytest.mark.parametrize(
    ("heights", "slice_rows", "expected"),
    [
        ([3, 5, 1, 7], 4, [4, 4, 4, 4]),
        ([10], 4, [4, 4, 2]),
        ([1, 1, 1], 5, [3]),
        ([0, 4, 0], 4, [4]),
        ([], 4, []),
    ],
)
def test_frames_of_any_height_become_slices_of_the_slice_size(
    heights: list[int], slice_rows: int, expected: list[int]
) -> None:
    start = 0
    frames = []
    for height in heights:
        frames.append(pl.DataFrame({"n": range(start, start + height)}))
        start += height
    slices = list(sliced(iter(frames), slice_rows))
    assert [piece.height for piece in slices] == expected
    assert [n for piece in slices for n in piece["n"]] == list(range(start))


def test_a_mariadb_table_larger_than_a_slice_arrives_in_slices_every_row_once(
    tmp_path: Path,
    mariadb: pymysql.Connection,
) -> None:
    values = ", ".join(f"({i}, 'x')" for i in range(1, 2501))
    mariadb_table(mariadb, ROWS_TABLE, "id int, email text", values)
    try:
        stream = opened(tmp_path, MARIADB, f"select * from {ROWS_TABLE}", slice_rows=1000)
        slices = list(stream.slices)
    finally:
        mariadb_drop(mariadb, ROWS_TABLE)
    assert [piece.height for piece in slices] == [1000, 1000, 500]
    assert sorted(pl.concat(slices)["id"].to_list()) == list(range(1, 2501))


@pytest.mark.parametrize(
    ("url", "query"),
    [
        (POSTGRES, "select 1::bigint as id, 'a'::text as email, now() as at where false"),
        (MARIADB, "select 1 as id, 'a' as email, now() as at from dual where false"),
    ],
    ids=["postgresql", "mariadb"],
)
def test_an_empty_result_still_has_its_schema(tmp_path: Path, url: str, query: str) -> None:
    stream = opened(tmp_path, url, query)
    assert list(stream.schema) == ["id", "email", "at"]
    assert stream.schema["at"].is_temporal()
    assert list(stream.slices) == []


@pytest.mark.parametrize("end", [" ; ", ";\\n", " -- the first three", "\\n-- the first three\\n"])
def test_a_query_ending_in_a_semicolon_or_a_comment_is_read(
    tmp_path: Path, pg_rows: str, end: str
) -> None:
    """PostgreSQL's reader wraps the query in COPY (...): how it ends must not break that."""
    query = f"select * from {pg_rows} where id <= 3{end}"
    frame = pl.concat(list(opened(tmp_path, POSTGRES, query).slices))
    assert frame.height == 3


# --- failures -------------------------------------------------------------------------------------


def test_a_postgresql_query_failing_halfway_names_the_database_without_its_password(
    tmp_path: Path, pg_rows: str
) -> None:
    url = "postgresql://postgres:hunter2secret@127.0.0.1:5432/test"
    query = f"select id, 1 / (id - 2000) as x from {pg_rows} order by id"
    stream = opened(tmp_path, url, query, slice_rows=100)
    with pytest.raises(SourceError) as caught:
        list(stream.slices)
    message = str(caught.value)
    assert message == (
        "source.sql: the query failed on postgresql://postgres:***@127.0.0.1:5432/test: "
        "division by zero"
    )


def test_a_mariadb_query_failing_halfway_is_a_source_error_naming_the_database(
    tmp_path: Path,
    mariadb: pymysql.Connection,
) -> None:
    values = ", ".join(f"({i})" for i in range(1, 2501))
    mariadb_table(mariadb, ROWS_TABLE, "id int", values)
    query = (
        f"select id, if(id < 2000, id, (select id from {ROWS_TABLE})) as x "
        f"from {ROWS_TABLE} order by id"
    )
    try:
        with pytest.raises(SourceError) as caught:
            list(opened(tmp_path, MARIADB, query, slice_rows=100).slices)
    finally:
        mariadb_drop(mariadb, ROWS_TABLE)
    assert str(caught.value) == (
        "source.sql: the query failed on mysql://root@127.0.0.1:3306/test: "
        "Subquery returns more than 1 row"
    )


def test_a_postgresql_column_of_a_type_with_no_reading_is_named(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as caught:
        opened(tmp_path, POSTGRES, "select 'a@x.io' as email, interval '1 day' as waited")
    assert str(caught.value) == (
        "source.sql: column 'waited' from postgresql://postgres@127.0.0.1:5432/test has the "
        "PostgreSQL type interval, which loops-sync cannot read; select it as text "
        "(waited::text) or leave it out"
    )


# --- no connection left open ----------------------------------------------------------------------


def open_connections(marker: str) -> int:
    """The sessions of both servers whose query holds `marker`, other than the one asking."""
    with psycopg.connect(POSTGRES, autocommit=True) as db:
        found = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND pid <> pg_backend_pid()",
            (f"%{marker}%",),
        ).fetchone()
    with pymysql.connect(host="127.0.0.1", user="root", database="test") as db, db.cursor() as c:
        c.execute(
            "SELECT count(*) FROM information_schema.processlist "
            "WHERE info LIKE %s AND id <> connection_id()",
            (f"%{marker}%",),
        )
        found_my = c.fetchone()
    return int(found[0] if found else 0) + int(found_my[0] if found_my else 0)


@pytest.mark.parametrize(
    ("url", "rows"),
    [
        (POSTGRES, "select i as id from generate_series(1, 2000000) as i"),
        (MARIADB, "select seq as id from seq_1_to_2000000"),
    ],
    ids=["postgresql", "mariadb"],
)
def test_the_connection_is_closed_when_the_slices_are_left_unfinished(
    tmp_path: Path, url: str, rows: str
) -> None:
    """`init` takes one slice then closes; a run stopped halfway drops the rest. Either way the
    server's session ends at once, without the rows left being read."""
    marker = f"loops_sync_unfinished_{url.split(':', 1)[0]}"
    query = f"select /* {marker} */ id from ({rows}) as t"

    stream = opened(tmp_path, url, query, slice_rows=1000)
    assert next(stream.slices).height == 1000
    assert open_connections(marker) == 1
    stream.slices.close()  # type: ignore[attr-defined]
    assert gone(marker)

    stream = opened(tmp_path, url, query, slice_rows=1000)
    next(stream.slices)
    del stream
    assert gone(marker)


def gone(marker: str) -> bool:
    """Whether the session has ended: a server ends it a moment after the client closed."""
    deadline = time.monotonic() + 5
    while open_connections(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    return open_connections(marker) == 0
