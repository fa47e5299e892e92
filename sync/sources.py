"""Read the configured source: its schema first, then its rows in bounded slices.

CSV is read as text (identifiers keep their leading zeros; the mapping coerces the columns it
uses and words its own errors). Parquet, Excel and SQL keep their native types. CSV and Parquet
are scanned lazily and PostgreSQL and MySQL/MariaDB are streamed (`sync/sql_source.py`), so a
slice at a time is held; Excel files (small by nature) and SQLite databases are read whole and
then sliced. Several files matching a glob are one stream with the union of their columns.
Every failure, also one found halfway through, becomes a `SourceError` that names the file or
database and says what to change.
"""

from __future__ import annotations

import dataclasses
import glob
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from sync.config import Config
from sync.config_model import SourceConfig
from sync.errors import SourceError
from sync.sql_source import open_sql

__all__ = ["SLICE_ROWS", "SourceStream", "open_source", "read_source"]

# Rows a slice of the source: mapping holds about two at once. 25,000 rather than 50,000 takes
# a nightly run over 10M rows under 1 GiB (peak RSS 1013 MB against 1093 MB; 1 GiB = 1074 MB)
# at no cost in time measured at 1M (the per-slice work is vectorised).
SLICE_ROWS = 25_000
# The separators a CSV is found with, as a message names them.
SEPARATOR_NAMES = {",": "commas", ";": "';'", "\t": "tabs", "|": "'|'"}


@dataclass(frozen=True)
class SourceStream:
    """The source as bounded slices: its schema, known before any row is read, and the slices in
    source order (one pass), each with exactly that schema."""

    schema: pl.Schema
    slices: Iterator[pl.DataFrame]
    # What a user should know of how the source was read: which sheet of a workbook, say.
    notes: tuple[str, ...] = ()


def read_source(config: Config) -> pl.DataFrame:
    """The whole source as one frame, columns as the source names them."""
    stream = open_source(config)
    frames = list(stream.slices)
    return pl.concat(frames) if frames else pl.DataFrame(schema=stream.schema)


def open_source(config: Config, *, slice_rows: int = SLICE_ROWS) -> SourceStream:
    """The source's schema now, its rows a slice of at most `slice_rows` at a time."""
    source = config.spec.source
    separator = source.separator if source.kind == "csv" else None
    notes: list[str] = []
    match source.kind:
        case "csv":
            parts = _each(config, "csv", source.csv or "", _csv_reader(config, source), separator)
        case "parquet":
            parts = _each(config, "parquet", source.parquet or "", _scan_parquet)
        case "excel":
            assert source.excel is not None  # noqa: S101  # the config validated this kind
            parts = _each(config, "excel", source.excel.path, _excel_reader(source, notes))
        case "sql":
            return SourceStream(*open_sql(config, source, slice_rows))
    stream = _joined(parts, source.kind, slice_rows, separator)
    return dataclasses.replace(stream, notes=tuple(notes))


@dataclass(frozen=True)
class _Part:
    """One file of the source: its schema, and a lazy frame that reads it."""

    path: Path
    rows: pl.LazyFrame
    schema: pl.Schema


def _each(
    config: Config,
    key: str,
    pattern: str,
    reader: Callable[[Path], pl.LazyFrame],
    separator: str | None = None,
) -> list[_Part]:
    parts = []
    for path in _expand(config, key, pattern):
        with _read_errors(path, key, separator):
            rows = reader(path)
            parts.append(_Part(path, rows, rows.collect_schema()))
    return parts


def _joined(
    parts: list[_Part], key: str, slice_rows: int, separator: str | None = None
) -> SourceStream:
    """The files as one stream, every slice in the union of their columns (a column a file
    lacks is null there; a column typed differently takes the type both fit in)."""
    try:
        schema = pl.concat(
            [pl.DataFrame(schema=part.schema) for part in parts], how="diagonal_relaxed"
        ).schema
    except pl.exceptions.PolarsError as error:
        raise SourceError(f"source.{key}: the files differ: {error}") from None

    def slices() -> Iterator[pl.DataFrame]:
        for part in parts:
            with _read_errors(part.path, key, separator):
                for piece in part.rows.collect_batches(chunk_size=slice_rows):
                    yield _aligned(piece, schema)

    return SourceStream(schema, slices())


def _aligned(piece: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    return piece.select(
        pl.col(name).cast(dtype) if name in piece.columns else pl.lit(None, dtype).alias(name)
        for name, dtype in schema.items()
    )


@contextmanager
def _read_errors(path: Path, key: str, separator: str | None = None) -> Iterator[None]:
    """What reading a file can raise, as a SourceError naming the file. `separator`: the CSV
    separator configured, for the rows that have more fields than the header (the file's own
    separator is then most likely another)."""
    try:
        yield
    except SourceError:
        raise
    except pl.exceptions.NoDataError:
        raise SourceError(f"{path}: the file is empty (not even a header row)") from None
    except pl.exceptions.ComputeError as error:
        if "utf-8" in str(error).lower() or "utf8" in str(error).lower():
            raise SourceError(
                f"{path}: the file is not UTF-8 text. Save it as UTF-8, or set its encoding "
                "in the config, e.g. `source: {csv: ..., encoding: cp1252}` (or latin-1)."
            ) from None
        found = _other_separator(path, separator) if separator else None
        if found and separator and "more fields" in str(error):
            raise SourceError(_separator_advice(path, separator, found)) from None
        raise SourceError(f"{path}: cannot read it as {key}: {_first_line(error)}") from None
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError, LookupError) as error:
        raise SourceError(f"{path}: cannot read it as {key}: {_first_line(error)}") from None


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else repr(error)


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


def _csv_reader(config: Config, source: SourceConfig) -> Callable[[Path], pl.LazyFrame]:
    """UTF-8 files are scanned lazily; another encoding is decoded whole first (Polars scans
    UTF-8 only), which only exports saved by older spreadsheets need."""
    encoding = source.encoding.lower().replace("_", "-")
    utf8 = encoding in ("utf-8", "utf8", "utf-8-sig")

    def read(path: Path, *, header_only: bool = False) -> pl.LazyFrame:
        has_header, n_rows = not header_only, 1 if header_only else None
        if utf8:
            return pl.scan_csv(
                path,
                glob=False,
                infer_schema=False,
                separator=source.separator,
                has_header=has_header,
                n_rows=n_rows,
            )
        decoded = pl.read_csv(
            path,
            encoding=encoding,
            infer_schema=False,
            separator=source.separator,
            has_header=has_header,
            n_rows=n_rows,
        )
        return decoded.lazy()

    def read_checked(path: Path) -> pl.LazyFrame:
        rows = read(path)
        names = rows.collect_schema().names()
        if len(names) == 1 and names[0] not in _used_columns(config):
            found = _other_separator(path, source.separator)
            if found:
                raise SourceError(_separator_advice(path, source.separator, found))
        if _renamed_duplicates(names):
            header = read(path, header_only=True).collect().row(0)
            _refuse_duplicates(path, [str(name or "") for name in header], _used_columns(config))
        return rows

    return read_checked


def _other_separator(path: Path, configured: str) -> str | None:
    """The separator the file's header line seems to use when it is not `configured`: the
    one it holds most of, if more than of `configured`. Only asked once reading went wrong."""
    try:
        with path.open("rb") as file:
            header = file.readline(65_536).decode("utf-8", errors="replace")
    except OSError:
        return None
    counts = {found: header.count(found) for found in SEPARATOR_NAMES if found != configured}
    best = max(counts, key=lambda found: counts[found])
    return best if counts[best] > header.count(configured) else None


def _separator_advice(path: Path, configured: str, found: str) -> str:
    written = '"\\t"' if found == "\t" else f"'{found}'"
    return (
        f"{path}: the file seems separated by {SEPARATOR_NAMES[found]}, not by "
        f"{SEPARATOR_NAMES.get(configured, repr(configured))}; set `separator: {written}` "
        "under `source:`"
    )


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
    for _, when in config.spec.filters():
        used.update(pl.sql_expr(when).meta.root_names())
    return used


def _scan_parquet(path: Path) -> pl.LazyFrame:
    return pl.scan_parquet(path, glob=False)  # `_expand` already did the globbing


def _excel_reader(source: SourceConfig, notes: list[str]) -> Callable[[Path], pl.LazyFrame]:
    """Each workbook's sheet as text: the one `sheet:` names, else the first, said in `notes`."""
    sheet = source.excel.sheet if source.excel else None

    def read(path: Path) -> pl.LazyFrame:
        try:
            import fastexcel  # noqa: PLC0415  # Polars' Excel engine; only Excel needs it

            sheets: list[str] = fastexcel.read_excel(path).sheet_names
        except ModuleNotFoundError as error:
            raise SourceError(
                f"{path}: reading Excel needs the 'fastexcel' package ({error.name} is missing)"
            ) from None
        except Exception as error:  # noqa: BLE001  # fastexcel's errors share no base class
            raise SourceError(f"{path}: cannot read it as excel: {_first_line(error)}") from None
        if sheet is not None and sheet not in sheets:
            raise SourceError(
                f"{path}: no sheet '{sheet}' in the workbook; its sheets: {_listed(sheets)} "
                "(set source.excel.sheet to one of them)"
            )
        if sheet is None and sheets:
            notes.append(_sheet_note(path, sheets))
        try:
            return pl.read_excel(path, sheet_name=sheet or sheets[0], infer_schema_length=0).lazy()
        except ValueError as error:
            raise SourceError(f"{path}: {error}") from None

    return read


def _sheet_note(path: Path, sheets: list[str]) -> str:
    if len(sheets) == 1:
        return f"read the only sheet, '{sheets[0]}', of {path.name}"
    return (
        f"read the first sheet, '{sheets[0]}', of {path.name}; its other sheets "
        f"({_listed(sheets[1:])}) are not read (set source.excel.sheet to read another)"
    )


def _listed(names: list[str]) -> str:
    return ", ".join(f"'{name}'" for name in names)
