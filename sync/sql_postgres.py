"""Read a PostgreSQL query through the ADBC libpq driver, a slice at a time.

The driver runs the query as `COPY (query) TO STDOUT (FORMAT binary)` and turns what the server
sends into Arrow batches of about 4 MB as they are asked for, one slice ahead of the one being
mapped and planned (`read_ahead`); the server waits meanwhile, so what is held does not grow
with the table. (connectorx, used before, read on without limit while the slices were planned:
1.2 GB for a plan of 5M rows.) The schema is known before any row is read: the driver describes
the query first.
"""

from __future__ import annotations

import importlib
import re
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any

import polars as pl

from sync.errors import SourceError
from sync.pg_types import PgColumns
from sync.sql_common import cannot_connect, query_failed, read_ahead, redact_url

__all__ = ["open_postgres"]

CONNECT_TIMEOUT = 10  # seconds, as the other drivers are given
BATCH_SIZE_HINT = "adbc.postgresql.batch_size_hint_bytes"
# The driver's batches: smaller than a slice of 25,000 rows of a wide table, so that little more
# than a slice is held (16 MB, its default, held 55 MB more reading 5M rows; the same CPU).
BATCH_BYTES = 4 << 20


def open_postgres(
    url: str, query: str, slice_rows: int
) -> tuple[pl.Schema, Iterator[pl.DataFrame]]:
    """The query's schema now, its rows a slice of exactly `slice_rows` (the last: fewer) at
    a time; the connection is closed once the last is taken, or the slices closed or dropped."""
    adbc, driver, pa = _modules()
    where = redact_url(url)
    # ADBC's own API, not its DB-API module: that one imports pyarrow.dataset, 19 MB held
    # for nothing. A connection of this API commits each statement itself.
    try:
        database = driver.connect(_with_connect_timeout(url))  # the driver logs in here
    except adbc.Error as error:
        raise cannot_connect(url, libpq_reason(str(error))) from None
    try:
        connection = adbc.AdbcConnection(database)
    except adbc.Error as error:
        database.close()
        raise cannot_connect(url, libpq_reason(str(error))) from None
    statement = adbc.AdbcStatement(connection)
    statement.set_options(**{BATCH_SIZE_HINT: str(BATCH_BYTES)})
    opened = [database, connection, statement]  # closed last first: the stream ends the COPY

    def rows() -> tuple[pl.Schema, Iterator[pl.DataFrame]]:
        try:
            statement.set_sql_query(_statement(query))
            stream, _ = statement.execute_query()
            reader = pa.RecordBatchReader.from_stream(stream)
        except adbc.Error as error:
            raise query_failed(url, libpq_reason(str(error))) from None
        opened.append(reader)
        columns = PgColumns.of(reader.schema, where)
        frames = (columns.frame(batch, where) for batch in _batches(reader, url))
        return columns.schema(reader.schema, where), _sliced(frames, slice_rows)

    def release() -> None:
        for resource in reversed(opened):
            resource.close()

    return read_ahead(rows, release, cancel=statement.cancel)


def _modules() -> tuple[Any, Any, Any]:
    """ADBC's driver manager, its PostgreSQL driver, and pyarrow, which holds its batches."""
    try:
        return tuple(
            importlib.import_module(name)
            for name in ("adbc_driver_manager", "adbc_driver_postgresql", "pyarrow")
        )  # type: ignore[return-value]
    except ModuleNotFoundError:
        raise SourceError(
            "source.sql.url: reading PostgreSQL needs adbc-driver-postgresql and pyarrow: "
            "pip install 'loops-sync[sql]'"
        ) from None


def _with_connect_timeout(url: str) -> str:
    """libpq waits for a server that does not answer as long as the network lets it, unless
    the URL says otherwise."""
    if "connect_timeout=" in urllib.parse.urlsplit(url).query:
        return url
    return f"{url}{'&' if '?' in url else '?'}connect_timeout={CONNECT_TIMEOUT}"


def _statement(query: str) -> str:
    """The driver wraps the query in `COPY (...) TO STDOUT`: a trailing `;` would end it early,
    and a trailing `-- comment` would hide the closing parenthesis without the new line."""
    return re.sub(r"[\s;]+\Z", "", query) + "\n"


def libpq_reason(text: str) -> str:
    """What the server or libpq said, without the driver's prefixes and the query echoed."""
    said = re.search(r"(?:ERROR|FATAL):\s*(.*)", text)
    if said:
        return said.group(1).strip()
    first = text.strip().splitlines()[0] if text.strip() else repr(text)
    return re.sub(r"^(?:[A-Z_]+: )?(?:\[libpq\] )?", "", first)


def _batches(reader: Any, url: str) -> Iterator[Any]:
    """The reader's batches; a failure halfway (the server stopped, a division by zero in row
    3,000,000) is the same SourceError as one at the start."""
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except Exception as error:  # noqa: BLE001  # pyarrow's OSError or the driver's errors
            raise query_failed(url, libpq_reason(str(error))) from None
        yield batch


def _sliced(frames: Iterable[pl.DataFrame], slice_rows: int) -> Iterator[pl.DataFrame]:
    """Frames of any height as slices of exactly `slice_rows` rows, the last one fewer; at most
    one slice and one frame are held."""
    pending: list[pl.DataFrame] = []
    held = 0
    for frame in frames:
        pending.append(frame)
        held += frame.height
        if held < slice_rows:
            continue
        whole = pl.concat(pending, rechunk=False)
        whole_slices = held - held % slice_rows
        for start in range(0, whole_slices, slice_rows):
            yield whole.slice(start, slice_rows)
        rest = whole.slice(whole_slices)
        pending, held = [rest], rest.height
    if held:
        yield pl.concat(pending)
