"""A starting config from a source's columns, for `loops-sync init SOURCE`.

The first rows of the file (CSV, Parquet, Excel) or the query are read as a run reads them;
the email column is found by its name or else by its values, each other column becomes a
contact property with a camelCase name, and its type is guessed from the values read: a
native type where the source has one, else text that all reads as a number, a boolean or a
date. The draft loads and plans as it is; `check` and `plan` then show what to change.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from sync.config import Config
from sync.config_model import (
    DEFAULT_BASE_URL,
    EVENT_REQUEST_KEYS,
    IDENTITY_KEYS,
    RESERVED_PROPERTIES,
    PropertyType,
    SyncConfig,
)
from sync.errors import SourceError
from sync.sources import open_source

__all__ = ["SAMPLE_ROWS", "Draft", "Property", "draft_config"]

SAMPLE_ROWS = 1_000
EMAIL_NAMES = ("email", "e-mail", "email address", "e-mail address", "work email", "mail")
USER_ID_NAMES = ("user_id", "userid", "user id", "uid")
EMAIL_VALUE = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
NUMBER_TEXT = r"^[-+]?(0|[1-9]\d*)(\.\d+)?$"  # no leading zero: '01234' is an identifier
BOOLEAN_WORDS = frozenset({"true", "false", "yes", "no", "t", "f", "y", "n"})
DATE_TEXT = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$"
# The share of a column's filled cells that must read as a type for it to be guessed: a few
# odd cells in an export are the rows `plan` then rejects, each with its reason.
GUESS_SHARE = 0.9
SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".xlsx": "excel",
    ".xlsm": "excel",
    ".xls": "excel",
}


@dataclass(frozen=True)
class Property:
    """One contact property of the draft: its name, the column it reads, its type."""

    name: str
    column: str
    type: PropertyType
    doubt: str | None = None  # cells of the first rows the type refuses, e.g. '1 of 47: ~50'


@dataclass
class Draft:
    """A starting config: what was found in the source, and how to write it as YAML."""

    name: str
    source: dict[str, Any]
    rows_read: int
    email: str | None
    user_id: str | None
    properties: list[Property]
    notes: list[str] = field(default_factory=list)  # what the user should look at first

    def yaml(self) -> str:
        """The config as YAML, with comments that say what to look at."""
        lines = [
            f"# Made by `loops-sync init` from the first {self.rows_read} rows; check it with",
            "# `loops-sync check` and `loops-sync plan` (paths are relative to this file).",
            f"name: {self.name}",
            "source:",
            *_source_lines(self.source),
            "contact:",
            f"  email: {_scalar(self.email or 'EMAIL_COLUMN')}",
        ]
        if self.user_id:
            lines.append(f"  user_id: {_scalar(self.user_id)}")
        if self.properties:
            lines.append("  properties:")
            for mapped in self.properties:
                if mapped.doubt:
                    lines.append(f"    # {_scalar(mapped.column)}: {mapped.doubt}")
                lines.append(f"    {_property(mapped)}")
        lines += [
            "# events:",
            "#   - name: signup",
            f"#     email: {_scalar(self.email or 'EMAIL_COLUMN')}",
            "#     when: \"plan = 'pro'\"",
        ]
        return "\n".join(lines) + "\n"


def draft_config(source: str, *, query: str | None = None, name: str | None = None) -> Draft:
    """The draft for `source`: a file's path, or a database URL with `query`."""
    spec_source = _source_of(source, query)
    frame = _sample(spec_source)
    email = _email_column(frame)
    user_id = _user_id_column(frame)
    taken = {column for column in (email, user_id) if column}
    properties = _properties([column for column in frame.columns if column not in taken], frame)
    notes = [] if email else ["no column looks like an email: set contact.email"]
    return Draft(
        name=name or _name_of(source, query),
        source=spec_source,
        rows_read=frame.height,
        email=email,
        user_id=user_id,
        properties=properties,
        notes=notes,
    )


def _source_of(source: str, query: str | None) -> dict[str, Any]:
    if "://" in source:
        if not query:
            raise SourceError("a database URL needs its query: add --query 'select …'")
        return {"sql": {"url": source, "query": query}}
    kind = SUFFIXES.get(Path(source).suffix.lower())
    if kind is None:
        known = ", ".join(sorted(SUFFIXES))
        raise SourceError(f"{source}: cannot tell the kind of file from its name ({known})")
    if kind == "csv":
        return {"csv": source, **_separator(Path(source))}
    return {kind: source}


def _separator(path: Path) -> dict[str, str]:
    """The separator of a CSV's header line, when it is not a comma."""
    try:
        with path.open("rb") as file:
            header = file.readline(65_536).decode("utf-8", errors="replace")
    except OSError as error:
        raise SourceError(f"{path}: cannot read it: {error.strerror}") from None
    counts = {found: header.count(found) for found in (",", ";", "\t", "|")}
    best = max(counts, key=lambda found: counts[found])
    return {} if best == "," or counts[best] <= counts[","] else {"separator": best}


def _sample(source: dict[str, Any]) -> pl.DataFrame:
    """The first rows, read as a run reads the source (CSV as text, other types native)."""
    raw = {"name": "init", "source": source, "contact": {"email": "unused"}}
    config = Config(
        file=Path.cwd() / "init.yaml",
        spec=SyncConfig.model_validate(raw),
        base_url=DEFAULT_BASE_URL,
        state_dir=Path.cwd(),
        config_hash="",
        api_key=None,
    )
    stream = open_source(config, slice_rows=SAMPLE_ROWS)
    first = next(stream.slices, None)
    getattr(stream.slices, "close", lambda: None)()
    return pl.DataFrame(schema=stream.schema) if first is None else first.head(SAMPLE_ROWS)


def _email_column(frame: pl.DataFrame) -> str | None:
    """A column named like an email, else the one whose values most look like emails."""
    for column in frame.columns:
        if column.strip().lower() in EMAIL_NAMES:
            return column
    best, best_share = None, 0.5  # at least half the filled cells
    for column in _text_columns(frame):
        values = _filled(frame, column)
        share = values.str.contains(EMAIL_VALUE).mean() if values.len() else 0.0
        if isinstance(share, float) and share > best_share:
            best, best_share = column, share
    return best


def _user_id_column(frame: pl.DataFrame) -> str | None:
    for column in frame.columns:
        if column.strip().lower() in USER_ID_NAMES:
            return column
    return None


def _properties(columns: list[str], frame: pl.DataFrame) -> list[Property]:
    taken = set(RESERVED_PROPERTIES | IDENTITY_KEYS | EVENT_REQUEST_KEYS)
    found = []
    for column in columns:
        name = _camel_case(column)
        if name in taken:  # 'id' is reserved by Loops; a second 'firstName' would shadow one
            name = _unique(f"source{name[0].upper()}{name[1:]}", taken)
        taken.add(name)
        found.append(Property(name, column, *_guessed_type(frame, column)))
    return found


def _camel_case(column: str) -> str:
    """'First Name', 'first_name' and 'first-name' are all 'firstName'; a name that would not
    start with a letter gets one ('2024 Revenue': 'p2024Revenue')."""
    words = re.findall(r"[A-Za-z0-9]+", column)
    if not words:
        return "property"
    first, rest = words[0], words[1:]
    first = first.lower() if first.isupper() or not rest else first[0].lower() + first[1:]
    name = first + "".join(word[0].upper() + word[1:].lower() for word in rest)
    return name if name[0].isalpha() else f"p{name}"


def _unique(name: str, taken: set[str]) -> str:
    number, candidate = 2, name
    while candidate in taken:
        candidate, number = f"{name}{number}", number + 1
    return candidate


def _guessed_type(frame: pl.DataFrame, column: str) -> tuple[PropertyType, str | None]:
    """The column's type, and a word on the cells of the first rows that type refuses."""
    dtype = frame.schema[column]
    native = _native_type(dtype)
    if native is not None:
        return native, None
    values = _filled(frame, column)
    if dtype != pl.String or values.len() == 0:
        return "string", None
    fits: dict[PropertyType, pl.Series] = {
        "boolean": values.str.to_lowercase().is_in(list(BOOLEAN_WORDS)),
        "number": values.str.contains(NUMBER_TEXT),
        "date": values.str.contains(DATE_TEXT),
    }
    for kind, fit in fits.items():
        if fit.mean() >= GUESS_SHARE:  # type: ignore[operator]  # a boolean Series: a float
            odd = values.filter(~fit)
            if odd.is_empty():
                return kind, None
            doubt = (
                f"{odd.len()} of {values.len()} cells read are not a {kind} (e.g. {odd[0]!r}); "
                "plan rejects their rows"
            )
            return kind, doubt
    return "string", None


def _native_type(dtype: pl.DataType) -> PropertyType | None:
    """The type a typed source's column says itself (Parquet, SQL, Excel dates)."""
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_numeric():
        return "number"
    return "date" if dtype.is_temporal() else None


def _text_columns(frame: pl.DataFrame) -> list[str]:
    return [name for name, dtype in frame.schema.items() if dtype == pl.String]


def _filled(frame: pl.DataFrame, column: str) -> pl.Series:
    values = frame.get_column(column).cast(pl.String).str.strip_chars()
    return values.filter(values.is_not_null() & (values != ""))


def _name_of(source: str, query: str | None) -> str:
    """A sync name from the file's name (or the database's), as `name:` allows it."""
    stem = Path(source).stem if query is None else source.rstrip("/").rsplit("/", 1)[-1]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-._")[:64]
    return slug if slug and slug[0].isalnum() else "my-sync"


def _source_lines(source: dict[str, Any]) -> list[str]:
    if "sql" in source:
        sql = source["sql"]
        return ["  sql:", f"    url: {_scalar(sql['url'])}", f"    query: {_scalar(sql['query'])}"]
    return [f"  {key}: {_scalar(value)}" for key, value in source.items()]


def _property(mapped: Property) -> str:
    if mapped.type == "string":
        return f"{mapped.name}: {_scalar(mapped.column)}"
    return f"{mapped.name}: {{column: {_scalar(mapped.column)}, type: {mapped.type}}}"


def _scalar(text: str) -> str:
    """`text` as a YAML scalar: plain where that reads back the same, else double-quoted
    (JSON's quoting is YAML's, and it shows an invisible character as its escape)."""
    plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-/]*( [A-Za-z0-9_.\-/]+)*", text)
    words = {"true", "false", "yes", "no", "on", "off", "null", "y", "n"}
    return text if plain and text.lower() not in words else json.dumps(text)
