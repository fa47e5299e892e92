"""Read the configured source into a Polars frame.

CSV is read as text (identifiers keep their leading zeros; the mapping coerces the columns it
uses and words its own errors). Parquet, Excel and SQL keep their native types. Every failure
becomes a `SourceError` that names the file or database and says what to change.
"""

from __future__ import annotations

import glob
import os
import re
import sqlite3
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import polars as pl

from sync.config import Config, SourceConfig
from sync.errors import SourceError

__all__ = ["read_source"]


def read_source(config: Config) -> pl.DataFrame:
    """The whole source as one frame, columns as the source names them."""
    source = config.spec.source
    match source.kind:
        case "csv":
            return _read_csv(config, source)
        case "parquet":
            return _read_each(config, "parquet", source.parquet or "", _read_parquet)
        case "excel":
            return _read_excel(config, source)
        case "sql":
            return _read_sql(config, source)


def _expand(config: Config, key: str, pattern: str) -> list[Path]:
    """A path or a glob, relative to the config file; no match is an error, not zero rows."""
    resolved = config.resolve(pattern)
    if resolved.is_file():
        # An existing file is read as named, even when its name has glob characters ("[2024]").
        return [resolved]
    files = sorted(Path(p) for p in glob.glob(str(resolved)))
    if not files:
        raise SourceError(f"source.{key}: no file matches '{pattern}' (looked for {resolved})")
    return files


def _read_csv(config: Config, source: SourceConfig) -> pl.DataFrame:
    encoding = source.encoding.lower().replace("_", "-")
    utf8 = encoding in ("utf-8", "utf8", "utf-8-sig")

    def read(path: Path, *, header_only: bool = False) -> pl.DataFrame:
        try:
            return pl.read_csv(
                path,
                infer_schema=False,
                separator=source.separator,
                encoding="utf8" if utf8 else encoding,
                glob=False,  # `_expand` already did: a name with "[" is a name here
                has_header=not header_only,
                n_rows=1 if header_only else None,
            )
        except pl.exceptions.ComputeError as error:
            if "utf-8" in str(error).lower() or "utf8" in str(error).lower():
                raise SourceError(
                    f"{path}: the file is not UTF-8 text. Save it as UTF-8, or set its encoding "
                    "in the config, e.g. `source: {csv: ..., encoding: cp1252}` (or latin-1)."
                ) from None
            raise

    def read_checked(path: Path) -> pl.DataFrame:
        frame = read(path)
        if _renamed_duplicates(frame.columns):
            header = read(path, header_only=True).row(0)
            _refuse_duplicates(path, [str(name or "") for name in header], _used_columns(config))
        return frame

    return _read_each(config, "csv", source.csv or "", read_checked)


def _renamed_duplicates(columns: list[str]) -> bool:
    """Whether Polars may have renamed a repeated header ('Email' to 'Email_duplicated_0')."""
    names = set(columns)
    return any(
        (found := re.fullmatch(r"(.*)_duplicated_\d+", column)) and found.group(1) in names
        for column in columns
    )


def _refuse_duplicates(path: Path, header: list[str], used: set[str]) -> None:
    """A header the config uses must be given once: Polars reads the first of several and
    renames the others, so the config would silently read a column its author did not mean.
    Repeated headers the config does not use are left alone (an export's two 'Notes')."""
    positions: dict[str, list[int]] = {}
    for number, name in enumerate(header, start=1):
        positions.setdefault(name, []).append(number)
    repeated = [
        f"'{name}' (columns {', '.join(map(str, numbers))})"
        for name, numbers in positions.items()
        if len(numbers) > 1 and name in used
    ]
    if not repeated:
        return
    listed = (
        repeated[0] if len(repeated) == 1 else ", ".join(repeated[:-1]) + " and " + repeated[-1]
    )
    subject = f"the header {listed} is" if len(repeated) == 1 else f"the headers {listed} are"
    raise SourceError(
        f"{path}: {subject} given more than once, so which column the config means is unclear; "
        "rename or remove all but one"
    )


def _used_columns(config: Config) -> set[str]:
    """The columns the mapping reads, and those the `when` filters name."""
    used = set(config.source_columns())
    for event in config.spec.events:
        if event.when is not None:
            used.update(pl.sql_expr(event.when).meta.root_names())
    return used


def _read_each(
    config: Config, key: str, pattern: str, reader: Callable[[Path], pl.DataFrame]
) -> pl.DataFrame:
    frames: list[pl.DataFrame] = []
    for path in _expand(config, key, pattern):
        try:
            frames.append(reader(path))
        except SourceError:
            raise
        except pl.exceptions.NoDataError:
            raise SourceError(f"{path}: the file is empty (not even a header row)") from None
        except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError, LookupError) as error:
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise SourceError(f"{path}: cannot read it as {key}: {first_line}") from None
    if len(frames) == 1:
        return frames[0]
    try:
        return pl.concat(frames, how="diagonal_relaxed")
    except pl.exceptions.PolarsError as error:
        raise SourceError(f"source.{key}: the files matching '{pattern}' differ: {error}") from None


def _read_parquet(path: Path) -> pl.DataFrame:
    return pl.read_parquet(path, glob=False)  # `_expand` already did the globbing


def _read_excel(config: Config, source: SourceConfig) -> pl.DataFrame:
    assert source.excel is not None  # noqa: S101  # the config validated that this kind is set
    sheet = source.excel.sheet

    def read(path: Path) -> pl.DataFrame:
        try:
            if sheet is None:
                return pl.read_excel(path, infer_schema_length=0)
            return pl.read_excel(path, sheet_name=sheet, infer_schema_length=0)
        except ModuleNotFoundError as error:
            raise SourceError(
                f"{path}: reading Excel needs the 'fastexcel' package ({error.name} is missing)"
            ) from None
        except ValueError as error:
            raise SourceError(f"{path}: {error}") from None

    return _read_each(config, "excel", source.excel.path, read)


def _read_sql(config: Config, source: SourceConfig) -> pl.DataFrame:
    assert source.sql is not None  # noqa: S101  # the config validated that this kind is set
    # `url: ${DATABASE_URL}` keeps a database password out of the config file.
    url, query = os.path.expandvars(source.sql.url), source.sql.query
    if url.startswith("sqlite:///"):
        return _read_sqlite(config, url.removeprefix("sqlite:///"), query)
    scheme = url.split(":", 1)[0]
    if scheme not in ("postgresql", "postgres", "mysql", "mariadb"):
        raise SourceError(
            f"source.sql.url: unsupported database '{scheme}'; "
            "use sqlite:///path, postgresql://… or mysql://…"
        )
    try:
        return pl.read_database_uri(query, url.replace("mariadb://", "mysql://", 1))
    except ModuleNotFoundError:
        raise SourceError(
            f"source.sql.url: reading {scheme} needs connectorx: pip install 'loops-sync[sql]'"
        ) from None
    except Exception as error:  # noqa: BLE001  # connectorx raises bare RuntimeErrors
        message = _without_password(str(error), url)
        raise SourceError(f"source.sql: the query failed on {_redact(url)}: {message}") from None


def _read_sqlite(config: Config, path: str, query: str) -> pl.DataFrame:
    database = config.resolve(path)
    if not database.is_file():
        raise SourceError(f"source.sql.url: no SQLite database at {database}")
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return pl.read_database(query, connection, infer_schema_length=None)
    except (sqlite3.Error, pl.exceptions.PolarsError) as error:
        raise SourceError(f"source.sql.query failed on {database}: {error}") from None
    finally:
        connection.close()


def _without_password(text: str, url: str) -> str:
    password = urllib.parse.urlsplit(url).password
    return text.replace(password, "***") if password else text


def _redact(url: str) -> str:
    """A database URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
