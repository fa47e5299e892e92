"""Read a MySQL/MariaDB query through PyMySQL's unbuffered cursor, a slice at a time.

The unbuffered cursor takes rows off the connection as they are asked for, one slice ahead of
the one being mapped and planned (`read_ahead`); the server waits meanwhile, so what is held
does not grow with the table. (connectorx, used before, read on without limit: 742 MB for 5M
rows of the bench's table taken slowly, 213 MB taken at once.) PyMySQL is pure Python: about
4 s of CPU a million rows, against 0.8 s for connectorx. The text protocol gives each value as
text; a slice's columns are typed in Polars at once, into the types connectorx gave (so a body
sent before hashes the same now). The schema comes from the result's column descriptions,
before any row is read.
"""

from __future__ import annotations

import contextlib
import importlib
import socket
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl

from sync.errors import SourceError
from sync.sql_common import cannot_connect, query_failed, read_ahead, redact_url

__all__ = ["open_mysql"]

CONNECT_TIMEOUT = 10  # seconds: a database that takes longer to answer is not there
DEFAULT_PORT = 3306
BINARY_CHARSET = 63  # a text type in this character set holds bytes (BINARY, VARBINARY, BLOB)
UNSIGNED_FLAG = 32
DECIMAL = pl.Decimal(38, 10)
# MySQL's column type codes (pymysql.constants.FIELD_TYPE), as connectorx typed them.
SIGNED = {1: pl.Int8(), 2: pl.Int16(), 9: pl.Int32(), 3: pl.Int32(), 8: pl.Int64(), 13: pl.Int16()}
UNSIGNED = {1: pl.UInt8(), 2: pl.UInt16(), 9: pl.UInt32(), 3: pl.UInt32(), 8: pl.UInt64()}
OTHERS = {
    0: DECIMAL,  # DECIMAL
    246: DECIMAL,  # NEWDECIMAL
    4: pl.Float32(),  # FLOAT
    5: pl.Float64(),  # DOUBLE
    7: pl.Datetime("us"),  # TIMESTAMP
    12: pl.Datetime("us"),  # DATETIME
    10: pl.Date(),  # DATE
    14: pl.Date(),  # NEWDATE
    11: pl.Time(),  # TIME
    16: pl.Binary(),  # BIT
    245: pl.String(),  # JSON (MySQL; MariaDB's JSON is LONGTEXT)
    247: pl.String(),  # ENUM
    248: pl.String(),  # SET
}
TEXT = {15, 249, 250, 251, 252, 253, 254}  # VARCHAR, the BLOBs and TEXTs, VAR_STRING, STRING
ZERO_DATE = "0000-00-00"  # MySQL's "no date", which no date type holds: read as null


def open_mysql(url: str, query: str, slice_rows: int) -> tuple[pl.Schema, Iterator[pl.DataFrame]]:
    """The query's schema now, its rows a slice of at most `slice_rows` at a time; the
    connection is closed once the last is taken, or the slices closed or dropped."""
    pymysql = _driver()
    try:
        connection = pymysql.connect(**_connect_arguments(url, pymysql))
    except pymysql.err.MySQLError as error:
        raise cannot_connect(url, _reason(error)) from None
    cursor = connection.cursor()

    def rows() -> tuple[pl.Schema, Iterator[pl.DataFrame]]:
        try:
            cursor.execute(query)
        except pymysql.err.MySQLError as error:
            raise query_failed(url, _reason(error)) from None
        # The fields, not `description`: it lacks the flags and the character set.
        columns = [_column(field, redact_url(url)) for field in cursor._result.fields]
        schema = pl.Schema({column.name: column.dtype for column in columns})
        return schema, _slices(cursor, columns, slice_rows, url, pymysql)

    def release() -> None:
        _abandon(connection, cursor)

    def cancel() -> None:
        # A read waiting on the server (a slow query, Ctrl-C) ends when its socket does.
        sock = getattr(connection, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    return read_ahead(rows, release, cancel=cancel)


def _abandon(connection: Any, cursor: Any) -> None:
    """Close the connection without reading the rows left: PyMySQL's `cursor.close()` on an
    unbuffered cursor reads them all first, and so do its cursor and result when collected,
    from a connection by then closed, unless told the rows are gone."""
    for result in {id(r): r for r in (cursor._result, connection._result) if r}.values():
        result.unbuffered_active = False
    cursor.connection = None
    if connection.open:
        connection.close()


def _driver() -> Any:
    try:
        return importlib.import_module("pymysql")
    except ModuleNotFoundError:
        raise SourceError(
            "source.sql.url: reading MySQL/MariaDB needs PyMySQL: pip install 'loops-sync[sql]'"
        ) from None


def _connect_arguments(url: str, pymysql: Any) -> dict[str, Any]:
    parts = urllib.parse.urlsplit(url)
    if parts.query:
        raise SourceError(
            f"source.sql.url: {redact_url(url)}: parameters after '?' are not read for "
            "MySQL/MariaDB (no TLS options either); remove them"
        )
    unquote = urllib.parse.unquote
    # Only the encoders of Python types: without the decoders of column types every value
    # stays text, typed a slice at a time in Polars.
    conversions = pymysql.converters.conversions
    return {
        "host": parts.hostname or "localhost",
        "port": parts.port or DEFAULT_PORT,
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
        "database": unquote(parts.path.lstrip("/")) or None,
        "connect_timeout": CONNECT_TIMEOUT,
        "charset": "utf8mb4",
        # Values as the bytes the server sent: Polars makes them text a column at a time,
        # 15% less CPU than PyMySQL decoding each one.
        "use_unicode": False,
        "cursorclass": pymysql.cursors.SSCursor,
        "conv": {kind: code for kind, code in conversions.items() if not isinstance(kind, int)},
    }


def _reason(error: Any) -> str:
    return str(error.args[1]) if len(error.args) > 1 else str(error)


@dataclass(frozen=True)
class _Column:
    name: str
    dtype: pl.DataType


def _column(field: Any, where: str) -> _Column:
    code, binary = field.type_code, field.charsetnr == BINARY_CHARSET
    if code in TEXT:
        dtype: pl.DataType = pl.Binary() if binary else pl.String()
    elif code in SIGNED:
        dtype = (UNSIGNED if field.flags & UNSIGNED_FLAG and code in UNSIGNED else SIGNED)[code]
    elif code in OTHERS:
        dtype = OTHERS[code]
    elif code == 6:  # NULL: `select null as x`
        dtype = pl.String()
    else:
        names = importlib.import_module("pymysql.constants.FIELD_TYPE").__dict__.items()
        type_name = next((name for name, value in names if value == code), f"code {code}")
        raise SourceError(
            f"source.sql: column '{field.name}' from {where} has the MySQL type {type_name}, "
            f"which loops-sync cannot read; select it as text (CAST({field.name} AS CHAR)) "
            "or leave it out"
        )
    return _Column(field.name, dtype)


def _slices(
    cursor: Any, columns: list[_Column], slice_rows: int, url: str, pymysql: Any
) -> Iterator[pl.DataFrame]:
    while True:
        try:
            rows = cursor.fetchmany(slice_rows)
        except pymysql.err.MySQLError as error:
            raise query_failed(url, _reason(error)) from None
        if not rows:
            return
        yield _typed(rows, columns, url)


def _typed(rows: list[tuple[Any, ...]], columns: list[_Column], url: str) -> pl.DataFrame:
    """One slice's values (bytes) in the columns' types."""
    values = list(zip(*rows, strict=True))
    series = []
    for column, texts in zip(columns, values, strict=True):
        raw = pl.Series(column.name, texts, dtype=pl.Binary)
        try:
            series.append(_cast(raw, column.dtype))
        except pl.exceptions.PolarsError as error:
            first = str(error).strip().splitlines()[0]
            raise SourceError(
                f"source.sql: column '{column.name}' from {redact_url(url)} cannot be read as "
                f"{column.dtype}: {first}; cast it in the query (CAST({column.name} AS CHAR))"
            ) from None
    return pl.DataFrame(series)


def _cast(raw: pl.Series, dtype: pl.DataType) -> pl.Series:
    """A column of the bytes the server sent, in its type: bytes stay bytes, the rest is text
    (UTF-8, as the connection asks) first."""
    if dtype == pl.Binary():
        return raw
    text = raw.cast(pl.String)
    if isinstance(dtype, pl.Datetime | pl.Date):
        zero = text.str.starts_with(ZERO_DATE)
        text = pl.select(pl.when(zero).then(None).otherwise(text).alias(text.name)).to_series()
        if isinstance(dtype, pl.Date):
            return text.str.to_date("%Y-%m-%d")
        return text.str.to_datetime("%Y-%m-%d %H:%M:%S%.f", time_unit="us")
    if isinstance(dtype, pl.Time):
        return text.str.to_time("%H:%M:%S%.f")
    return text if dtype == pl.String() else text.cast(dtype)
