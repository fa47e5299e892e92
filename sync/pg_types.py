"""PostgreSQL columns, as the ADBC driver's Arrow batches hold them, in the Polars types the
rest of loops-sync has always seen from PostgreSQL (those connectorx gave before issue 10).

The driver keeps each column's PostgreSQL type in the field's metadata. Most arrive as they
should (text, bigint, double precision, boolean, date, time, timestamp, timestamptz in UTC,
bytea, arrays). The others are put in that earlier form here, so that a body sent before
hashes the same now: smallint and integer widen to Int64 and real to Float64; numeric, which
the driver gives as text, becomes Decimal(38, 10); json and jsonb, which it gives as the
server's text, become compact JSON with sorted keys; uuid (16 bytes) its usual text; citext,
inet, cidr and macaddr text. A type none of these covers and that the driver gives only as
bytes is refused, by name, before any row is read: its bytes are the server's wire format,
not a value anyone would send.
"""

from __future__ import annotations

import importlib
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import polars as pl

from sync.errors import SourceError

__all__ = ["PgColumns"]

TYPE_KEY = b"POSTGRESQL:type"
DECIMAL = pl.Decimal(38, 10)
WIDER: dict[pl.DataType, pl.DataType] = {
    pl.Int8(): pl.Int64(),
    pl.Int16(): pl.Int64(),
    pl.Int32(): pl.Int64(),
    pl.Float32(): pl.Float64(),
}


@dataclass(frozen=True)
class PgColumns:
    """How each column of one query's result becomes its Polars form."""

    names: tuple[str, ...]
    pg_types: tuple[str, ...]

    @classmethod
    def of(cls, arrow_schema: Any, where: str) -> PgColumns:
        """The columns of a result's Arrow schema; a type that cannot be read is a SourceError
        (`where` names the database in it)."""
        names, pg_types = [], []
        for field in arrow_schema:
            pg_type = (field.metadata or {}).get(TYPE_KEY, b"").decode()
            storage = getattr(field.type, "storage_type", field.type)
            if (_is_bytes(storage) and pg_type not in BYTES_READ) or not _polars_reads(storage):
                raise SourceError(_unreadable(field.name, pg_type, where))
            names.append(field.name)
            pg_types.append(pg_type)
        return cls(tuple(names), tuple(pg_types))

    def frame(self, batch: Any, where: str) -> pl.DataFrame:
        """One Arrow record batch as a frame in the earlier types."""
        pa = importlib.import_module("pyarrow")
        plain = pa.RecordBatch.from_arrays(
            [getattr(column, "storage", column) for column in batch.columns],
            names=list(self.names),
        )
        try:
            frame = pl.from_arrow(plain)
        except (pl.exceptions.PolarsError, ValueError, TypeError) as error:
            raise SourceError(f"source.sql: cannot read the result from {where}: {error}") from None
        assert isinstance(frame, pl.DataFrame)  # noqa: S101  # a record batch is a table
        return frame.with_columns(
            self._column(frame, name, pg_type, where)
            for name, pg_type in zip(self.names, self.pg_types, strict=True)
            if pg_type in CONVERSIONS or frame.schema[name] in WIDER
        )

    def schema(self, arrow_schema: Any, where: str) -> pl.Schema:
        """The Polars schema every frame will have (read from an empty batch of the result)."""
        pa = importlib.import_module("pyarrow")
        empty = [pa.array([], type=field.type) for field in arrow_schema]
        return self.frame(pa.RecordBatch.from_arrays(empty, schema=arrow_schema), where).schema

    @staticmethod
    def _column(frame: pl.DataFrame, name: str, pg_type: str, where: str) -> pl.Series:
        series = frame[name]
        convert = CONVERSIONS.get(pg_type)
        if convert is None:
            return series.cast(WIDER[series.dtype])
        try:
            return convert(series)
        except (pl.exceptions.PolarsError, ValueError) as error:
            first = str(error).strip().splitlines()[0]
            raise SourceError(
                f"source.sql: column '{name}' ({pg_type}) from {where} cannot be read: {first}; "
                f"cast it in the query (e.g. {name}::text)"
            ) from None


def _polars_reads(arrow_type: Any) -> bool:
    """Whether Polars takes a column of this Arrow type (not an interval, say)."""
    pa = importlib.import_module("pyarrow")
    try:
        pl.from_arrow(pa.array([], type=arrow_type))
    except (pl.exceptions.PolarsError, ValueError, TypeError):
        return False
    return True


def _is_bytes(arrow_type: Any) -> bool:
    return str(arrow_type) in ("binary", "large_binary") or str(arrow_type).startswith(
        "fixed_size_binary"
    )


def _unreadable(name: str, pg_type: str, where: str) -> str:
    return (
        f"source.sql: column '{name}' from {where} has the PostgreSQL type {pg_type or 'unknown'}, "
        f"which loops-sync cannot read; select it as text ({name}::text) or leave it out"
    )


# --- the conversions, each of a whole column ------------------------------------------------------


def _numeric(series: pl.Series) -> pl.Series:
    return series.cast(DECIMAL)


def _json(series: pl.Series) -> pl.Series:
    return pl.Series(series.name, [_compact_json(text) for text in series], dtype=pl.String)


def _compact_json(text: str | None) -> str | None:
    """The JSON text without spaces, keys sorted, as connectorx (serde_json) wrote it."""
    if text is None:
        return None
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:  # an integer beyond 64 bits, which orjson does not take
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def _uuid(series: pl.Series) -> pl.Series:
    hexed = series.bin.encode("hex")
    parts = [hexed.str.slice(start, length) for start, length in UUID_PARTS]
    return pl.select(pl.concat_str(parts, separator="-").alias(series.name)).to_series()


UUID_PARTS = ((0, 8), (8, 4), (12, 4), (16, 4), (20, 12))


def _text(series: pl.Series) -> pl.Series:
    return series.cast(pl.String)


def _each(decode: Callable[[bytes], str]) -> Callable[[pl.Series], pl.Series]:
    def convert(series: pl.Series) -> pl.Series:
        values = [None if value is None else decode(value) for value in series]
        return pl.Series(series.name, values, dtype=pl.String)

    return convert


def _inet(value: bytes) -> str:
    """PostgreSQL's binary inet and cidr (family, bits, is_cidr, length, address) as its text:
    a host address alone, a network with its prefix length."""
    bits, is_cidr, address = value[1], value[2], value[4:]
    ip = ipaddress.ip_address(address)
    return f"{ip}/{bits}" if is_cidr or bits != len(address) * 8 else str(ip)


def _macaddr(value: bytes) -> str:
    return ":".join(f"{byte:02x}" for byte in value)


CONVERSIONS: dict[str, Callable[[pl.Series], pl.Series]] = {
    "numeric": _numeric,
    "json": _json,
    "jsonb": _json,
    "uuid": _uuid,
    "citext": _text,
    "inet": _each(_inet),
    "cidr": _each(_inet),
    "macaddr": _each(_macaddr),
    "macaddr8": _each(_macaddr),
}
# The types whose bytes are read: as bytes (bytea), or into text here.
BYTES_READ = {"bytea", "uuid", "citext", "inet", "cidr", "macaddr", "macaddr8"}
