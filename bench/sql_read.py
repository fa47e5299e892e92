"""What reading a SQL table costs, driver by driver: wall and CPU seconds and peak RSS of only
taking every slice of 50,000 rows (nothing mapped or planned), each reader in a process of its
own (bench/measure.py).

`python bench/sql_read.py [ROWS ...]` (default 1000000 5000000) reads, at each size, the bench's
people as text from PostgreSQL (what bench/scaling.py loads) and from MariaDB, and a typed
PostgreSQL table (integers, numeric, timestamps with and without time zone, dates, booleans,
jsonb, nulls) made by the server. The readers (BENCH_READERS, comma-separated):

    connectorx        its Arrow stream, as loops-sync read both servers before issue 10
    adbc              the ADBC libpq driver's binary COPY stream, batches of about 16 MB
    psycopg           a psycopg 3 server-side cursor, fetchmany into Polars
    pymysql           PyMySQL's unbuffered cursor, fetchmany into Polars
    loops-sync        `sync.sql_source.open_sql`, whatever it is now

BENCH_SLICE_DELAY=SECONDS waits after each slice, as planning it would: a reader that reads
ahead of the slices taken shows it then. The tables are `pgread_*`, dropped at the end unless
BENCH_KEEP_TABLES=1. Nothing here asserts a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import psycopg
import pymysql
import pymysql.cursors
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import write_inputs

HERE = Path(__file__).resolve().parent
PY = sys.executable
SLICE = 50_000
DELAY = float(os.environ.get("BENCH_SLICE_DELAY", "0"))
URLS = {
    "postgresql": os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": "mysql://root@127.0.0.1:3306/test",
}
MYSQL = {"host": "127.0.0.1", "port": 3306, "user": "root", "password": "", "database": "test"}
READERS = os.environ.get("BENCH_READERS", "connectorx,adbc,psycopg,pymysql,loops-sync").split(",")
TYPED = """
CREATE UNLOGGED TABLE {table} AS SELECT
  i::bigint AS id,
  'person' || i || '@example' || (i %% 101) || '.com' AS email,
  'First' || i AS first_name,
  CASE WHEN i %% 5 = 0 THEN NULL ELSE (i * 37 %% 5000 + 1)::int END AS seats,
  ((i %% 100000) / 100.0)::numeric(8, 2) AS mrr,
  timestamptz '2026-01-01 00:00+00' + i * interval '1 second' AS signed_up,
  timestamp '2026-01-01' + i * interval '1 minute' AS seen,
  date '2026-01-01' + (i %% 365) AS trial_ends,
  i %% 2 = 0 AS newsletter,
  CASE WHEN i %% 7 = 0 THEN NULL
       ELSE jsonb_build_object('plan', CASE WHEN i %% 3 = 0 THEN 'pro' ELSE 'free' END, 'n', i)
  END AS attrs
FROM generate_series(1, %s) AS i
"""


# --- the tables -----------------------------------------------------------------------------------


def setup(rows: int) -> list[tuple[str, str]]:
    """(server, table) of `rows` rows each, made once and reused while they exist."""
    csv_file = write_inputs(rows)["csv"]
    header = csv_file.open(encoding="utf-8").readline().rstrip("\n").split(",")
    people, typed = f"pgread_people_{rows}", f"pgread_typed_{rows}"
    with psycopg.connect(URLS["postgresql"], autocommit=True) as db:
        have = {row[0] for row in db.execute("SELECT tablename FROM pg_tables").fetchall()}
        if people not in have:
            columns = sql.SQL(", ").join(
                sql.SQL("{} text").format(sql.Identifier(c)) for c in header
            )
            name = sql.Identifier(people)
            db.execute(sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(name, columns))
            copy_in = sql.SQL("COPY {} FROM STDIN (FORMAT csv, HEADER true)").format(name)
            with db.cursor().copy(copy_in) as copy, csv_file.open("rb") as data:
                while chunk := data.read(1 << 20):
                    copy.write(chunk)
        if typed not in have:
            db.execute(sql.SQL(TYPED).format(table=sql.Identifier(typed)), (rows,))
    with pymysql.connect(**MYSQL, local_infile=True) as db, db.cursor() as cursor:
        if not cursor.execute("SHOW TABLES LIKE %s", (people,)):
            columns_my = ", ".join(f"`{c}` varchar(200)" for c in header)
            cursor.execute(f"CREATE TABLE {people} ({columns_my})")
            cursor.execute(
                f"LOAD DATA LOCAL INFILE '{csv_file}' INTO TABLE {people} FIELDS TERMINATED BY "
                "',' OPTIONALLY ENCLOSED BY '\"' IGNORE 1 LINES"
            )
            db.commit()
    return [("postgresql", people), ("postgresql", typed), ("mysql", people)]


def drop(tables: list[tuple[str, str]]) -> None:
    with psycopg.connect(URLS["postgresql"], autocommit=True) as pg:
        for server, table in tables:
            if server == "postgresql":
                pg.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
    with pymysql.connect(**MYSQL) as my, my.cursor() as cursor:
        for server, table in tables:
            if server == "mysql":
                cursor.execute(f"DROP TABLE IF EXISTS {table}")


# --- the readers, each run in a process of its own ------------------------------------------------


def read_connectorx(url: str, query: str) -> Iterator[pl.DataFrame]:
    os.environ["RUST_LOG"] = "off"
    import connectorx  # noqa: PLC0415  # not a dependency of loops-sync any more

    for batch in connectorx.read_sql(url, query, return_type="arrow_stream", batch_size=SLICE):
        yield pl.from_arrow(batch)


def read_adbc(url: str, query: str) -> Iterator[pl.DataFrame]:
    import adbc_driver_postgresql.dbapi as adbc  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415

    with adbc.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(query)
        for batch in cursor.fetch_record_batch():
            plain = pa.RecordBatch.from_arrays(
                [getattr(column, "storage", column) for column in batch.columns],
                names=batch.schema.names,
            )
            yield pl.from_arrow(plain)


def read_psycopg(url: str, query: str) -> Iterator[pl.DataFrame]:
    with psycopg.connect(url) as connection, connection.cursor(name="pgread") as cursor:
        cursor.itersize = SLICE
        cursor.execute(query)
        while rows := cursor.fetchmany(SLICE):
            names = [column.name for column in cursor.description or []]
            yield pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)


def read_pymysql(url: str, query: str) -> Iterator[pl.DataFrame]:
    del url  # MYSQL says the same
    with (
        pymysql.connect(**MYSQL, cursorclass=pymysql.cursors.SSCursor) as db,
        db.cursor() as cursor,
    ):
        cursor.execute(query)
        names = [column[0] for column in cursor.description]
        while rows := cursor.fetchmany(SLICE):
            yield pl.DataFrame(rows, schema=names, orient="row", infer_schema_length=None)


def read_loops_sync(url: str, query: str) -> Iterator[pl.DataFrame]:
    from sync.sql_source import open_sql  # noqa: PLC0415

    source = SimpleNamespace(sql=SimpleNamespace(url=url, query=query))
    _, slices = open_sql(None, source, SLICE)  # type: ignore[arg-type]  # only SQLite uses config
    yield from slices


Reader = Callable[[str, str], Iterator[pl.DataFrame]]
# Each reader, and the servers it reads.
READS: dict[str, tuple[Reader, tuple[str, ...]]] = {
    "connectorx": (read_connectorx, ("postgresql", "mysql")),
    "adbc": (read_adbc, ("postgresql",)),
    "psycopg": (read_psycopg, ("postgresql",)),
    "pymysql": (read_pymysql, ("mysql",)),
    "loops-sync": (read_loops_sync, ("postgresql", "mysql")),
}


def read(reader: str, server: str, table: str) -> None:
    started = time.perf_counter()
    rows = slices = largest = 0
    query = f"select * from {table}"  # noqa: S608  # our own table
    for piece in READS[reader][0](URLS[server], query):
        rows, slices, largest = rows + piece.height, slices + 1, max(largest, piece.height)
        time.sleep(DELAY)
    seconds = time.perf_counter() - started
    print(json.dumps({"rows": rows, "slices": slices, "largest": largest, "seconds": seconds}))


def measure(reader: str, server: str, table: str) -> dict[str, Any]:
    argv = [PY, str(HERE / "measure.py"), PY, __file__, "--read", reader, server, table]
    out = subprocess.run(argv, capture_output=True, text=True, check=True)
    measured: dict[str, Any] = json.loads(out.stdout)
    if measured["returncode"] != 0:
        return {"failed": measured["stderr"].strip().splitlines()[-1]}
    return measured | json.loads(measured["stdout"])


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [1_000_000, 5_000_000]
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f}; {DELAY} s after each slice")
    print(
        f"{'server':<10} {'table':<22} {'reader':<11} {'rows':>9} {'slices':>6} {'largest':>7} "
        f"{'wall s':>7} {'cpu s':>7} {'peak MB':>8}"
    )
    made: list[tuple[str, str]] = []
    try:
        for rows in sizes:
            tables = setup(rows)
            made += tables
            for server, table in tables:
                for reader in READERS:
                    if server not in READS[reader][1]:
                        continue
                    m = measure(reader, server, table)
                    if "failed" in m:
                        print(f"{server:<10} {table:<22} {reader:<11} failed: {m['failed']}")
                        continue
                    print(
                        f"{server:<10} {table:<22} {reader:<11} {m['rows']:>9} {m['slices']:>6} "
                        f"{m['largest']:>7} {m['wall_seconds']:>7.1f} {m['cpu_seconds']:>7.1f} "
                        f"{m['peak_rss_mb']:>8.0f}",
                        flush=True,
                    )
    finally:
        if os.environ.get("BENCH_KEEP_TABLES") != "1":
            drop(made)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--read"]:
        read(*sys.argv[2:5])
    else:
        main()
