"""Coerce each mapped cell: its value in the form Loops takes, and beside it the reason the
cell cannot be sent (or null).

A `Field` is that pair of Polars expressions for one output key, built once from the config and
the source's schema; `mapping` runs them over each slice and assembles rows from them. Two checks
that fail the way a cell does are made here too, before any row is mapped: a constant its
declared type refuses (`constant_problems`), and a `when` filter that cannot run on some row
(`check_filters`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from sync.columns import COLUMN_SEPARATOR, ROW
from sync.config_model import (
    ContactSection,
    EventSection,
    PropertyMapping,
    PropertyType,
    SyncConfig,
)
from sync.errors import ConfigProblem, SourceError

__all__ = [
    "Cells",
    "Field",
    "check_filters",
    "coerce_contact",
    "coerce_event",
    "constant_problems",
]

# The columns `Cells` computes once per slice: "__cell.<what><US><source column>".
PREPARED = "__cell."
MAX_JSON_CHARS = 500
EMAIL_PATTERN = r"^[^@\s\"(),:;<>\[\]\\]+@[^@\s\"(),:;<>\[\]\\]+\.[^@\s\"(),:;<>\[\]\\]+$"
# The type of each kind's value: a date is Unix milliseconds.
VALUE_TYPES: dict[PropertyType, pl.DataType] = {
    "string": pl.String(),
    "number": pl.Float64(),
    "boolean": pl.Boolean(),
    "date": pl.Int64(),
}
TRUE_WORDS = ["true", "yes", "1", "t", "y"]
FALSE_WORDS = ["false", "no", "0", "f", "n"]
# A whole number in a date column: YYYYMMDD, or an epoch of at least nine digits (see
# `_numeric_date`); epoch values below EPOCH_MS_THRESHOLD are seconds (it is 5138 AD in
# seconds, 1973 in milliseconds).
NUMBER_PATTERN = r"^-?\d{1,18}$"
EPOCH_MIN = 100_000_000
EPOCH_MS_THRESHOLD = 100_000_000_000
# The other ISO 8601 shapes, rewritten into RFC 3339 step by step (no offset means UTC).
ISO_REWRITES = [
    (r"^(\d{4}-\d{2}-\d{2})$", "${1}T00:00"),
    (r"^(\d{4}-\d{2}-\d{2}) ", "${1}T"),
    (r"T(\d{2}:\d{2})($|[+-]|[zZ])", "T${1}:00${2}"),
    (r"(T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)$", "${1}+00:00"),
    (r"([+-]\d{2})(\d{2})$", "${1}:${2}"),
]


@dataclass(frozen=True)
class Field:
    """One output key: its value expression, and the reason its cell is bad (or null)."""

    key: str
    column: str | None
    value: pl.Expr
    error: pl.Expr
    kind: PropertyType


class Cells:
    """The source's cells as the coercers read them: the schema, and the columns each slice
    computes once, in stages, before any field's value or reason (`computed`).

    A cell's canonical text, its lower-case form, a parsed date: many expressions use each, and
    Polars computes a shared part again inside every expression that holds it (its
    common-subexpression pass leaves out expressions like ours). So the coercers ask for such a
    part here by name and refer to its column: it is computed once per slice, and a column
    two fields (a contact's and an event's email) share is computed once for both.
    """

    def __init__(self, schema: pl.Schema) -> None:
        self.schema = schema
        self._stage: dict[str, int] = {}
        self._exprs: dict[str, pl.Expr] = {}

    def prepared(self, name: str, column: str, expr: pl.Expr) -> pl.Expr:
        """`expr`, computed once per slice as a column named after `name` and `column`; in the
        stage after the prepared columns it reads."""
        label = f"{PREPARED}{name}{COLUMN_SEPARATOR}{column}"
        if label not in self._exprs:
            reads = [self._stage.get(root, 0) for root in expr.meta.root_names()]
            self._stage[label] = 1 + max(reads, default=0)
            self._exprs[label] = expr.alias(label)
        return pl.col(label)

    def text(self, column: str) -> pl.Expr:
        """The cell as trimmed, canonical text (see `_raw_text`); an empty cell is null."""
        # `replace`, not when/then: that would compute the text twice.
        return self.prepared("text", column, _raw_text(column, self.schema).replace("", None))

    def computed(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        """`frame` with every prepared column, each stage after those it reads."""
        for stage in sorted(set(self._stage.values())):
            frame = frame.with_columns(
                expr for label, expr in self._exprs.items() if self._stage[label] == stage
            )
        return frame


def constant_problems(spec: SyncConfig) -> list[ConfigProblem]:
    """Constants that their declared type refuses: a config error, not a reject on every row."""
    sections: list[tuple[str, dict[str, PropertyMapping]]] = []
    if spec.contact:
        sections.append(("contact.properties", spec.contact.properties))
    sections += [(f"events[{i}].properties", e.properties) for i, e in enumerate(spec.events)]
    problems = []
    for prefix, properties in sections:
        for name, mapping in properties.items():
            if mapping.column is None:
                error = _property(name, mapping, Cells(pl.Schema())).error
                reason = pl.select(error).item()
                if reason is not None:
                    problems.append(ConfigProblem(f"{prefix}.{name}.value", str(reason)))
    return problems


def coerce_contact(section: ContactSection, cells: Cells) -> list[Field]:
    fields = _identity_fields(section.email, section.user_id, cells)
    fields += [_property(name, m, cells) for name, m in section.properties.items()]
    fields += [
        _coerce(f"mailingLists.{list_id}", column, cells, "boolean")
        for list_id, column in section.mailing_lists.items()
    ]
    return fields


def coerce_event(event: EventSection, cells: Cells) -> list[Field]:
    fields = _identity_fields(event.email, event.user_id, cells)
    fields += [_property(f"eventProperties.{k}", m, cells) for k, m in event.properties.items()]
    # once_per values are hashed into the key, never sent: no length limit applies to them.
    fields += [Field(f"once_per.{c}", c, *_string(c, cells), "string") for c in event.once_per]
    return fields


def _identity_fields(email: str | None, user_id: str | None, cells: Cells) -> list[Field]:
    columns = [c for c in (email, user_id) if c]
    fields = []
    if email:
        fields.append(_email(email, cells))
    if user_id:
        fields.append(_coerce("userId", user_id, cells, "string"))
    no_identity = pl.all_horizontal([cells.text(c).is_null() for c in columns])
    named = " and ".join(f"'{c}'" for c in columns) + (" are" if len(columns) > 1 else " is")
    missing = pl.when(no_identity).then(pl.lit(f"no identity: {named} empty"))
    fields.append(Field("__identity", " / ".join(columns), pl.lit(None), missing, "string"))
    return fields


def _email(column: str, cells: Cells) -> Field:
    text = _lower(column, cells)
    valid = cells.prepared("email", column, text.str.contains(EMAIL_PATTERN))
    bad = text.is_not_null() & ~valid
    invalid = _reason("'{}' is not a valid email address", column, cells, bad)
    error = pl.coalesce(invalid, _too_long(text, column))
    return Field("email", column, pl.when(~bad).then(text), error, "string")


def _lower(column: str, cells: Cells) -> pl.Expr:
    return cells.prepared("lower", column, cells.text(column).str.to_lowercase())


def _reason(template: str, column: str, cells: Cells, bad: pl.Expr) -> pl.Expr:
    """`template` with the cell's text in its '{}', on the rows that are `bad`; else null.

    A bad cell is never empty, so its text is the text as written (trimmed)."""
    return pl.format(template, pl.when(bad).then(cells.text(column)))


def _property(key: str, mapping: PropertyMapping, cells: Cells) -> Field:
    if mapping.column is not None:
        return _coerce(key, mapping.column, cells, mapping.value_type)
    # A constant is coerced once, here, by the same expressions as a column.
    constant = pl.DataFrame({"__constant": [mapping.value]})
    own = Cells(constant.schema)
    field = _coerce(key, "__constant", own, mapping.value_type)
    computed = own.computed(constant.lazy()).select(field.value.alias("v"), field.error.alias("e"))
    value, error = computed.collect().row(0)
    # Typed, also when it is empty (a blank text is no value): a null has no type of its own.
    typed = pl.lit(value, dtype=VALUE_TYPES[mapping.value_type])
    return Field(key, None, typed, pl.lit(error, dtype=pl.String), mapping.value_type)


def _coerce(key: str, column: str, cells: Cells, kind: PropertyType) -> Field:
    coercers = {"string": _string, "number": _number, "boolean": _boolean, "date": _date}
    value, error = coercers[kind](column, cells)
    if kind == "string":
        error = pl.coalesce(error, _too_long(value, column))
    return Field(key, column, value, error, kind)


def _raw_text(column: str, schema: pl.Schema) -> pl.Expr:
    """The cell as text in its canonical form, whatever the source's type.

    The same value gives the same text from CSV text, a Parquet integer or float, or a SQL
    integer or decimal: ids, `once_per` values and properties must not change when a column's
    type drifts (one null turns a Parquet Int64 column into Float64). A whole float is an
    integer (101, not 101.0), another float its shortest round-trip form (19.9), a decimal
    loses its trailing zeros (19.90 is 19.9). Text is trimmed, and otherwise kept as written.
    """
    dtype, cell = schema[column], pl.col(column)
    if dtype == pl.Date:
        return cell.dt.to_string("%Y-%m-%d")
    if dtype == pl.Datetime:
        offset = "%:z" if getattr(dtype, "time_zone", None) else ""
        return cell.dt.to_string(f"%Y-%m-%dT%H:%M:%S%.3f{offset}")
    if dtype.is_float():
        whole = cell.is_finite() & (cell == cell.floor()) & (cell.abs() < 2.0**63)
        as_integer = cell.cast(pl.Int64, strict=False).cast(pl.String)
        return pl.when(whole).then(as_integer).otherwise(cell.cast(pl.String))
    if dtype.is_decimal():
        text = cell.cast(pl.String)
        return text.str.replace(r"(\.\d*?)0+$", "${1}").str.strip_suffix(".")
    return cell.cast(pl.String).str.strip_chars()


def _string(column: str, cells: Cells) -> tuple[pl.Expr, pl.Expr]:
    return cells.text(column), pl.lit(None, dtype=pl.String)


def _number(column: str, cells: Cells) -> tuple[pl.Expr, pl.Expr]:
    dtype, text = cells.schema[column], cells.text(column)
    if dtype.is_numeric() or dtype == pl.Boolean:
        value = pl.col(column).cast(pl.Float64)
    else:
        value = cells.prepared("number", column, text.cast(pl.Float64, strict=False))
    bad = text.is_not_null() & (value.is_null() | ~value.is_finite())
    error = _reason("'{}' is not a number", column, cells, bad)
    return pl.when(~bad).then(value), error


def _boolean(column: str, cells: Cells) -> tuple[pl.Expr, pl.Expr]:
    dtype = cells.schema[column]
    if dtype == pl.Boolean:
        return pl.col(column), pl.lit(None, dtype=pl.String)
    if dtype.is_numeric():
        number = pl.col(column)
        value = pl.when(number == 1).then(pl.lit(True)).when(number == 0).then(pl.lit(False))
        bad = number.is_not_null() & value.is_null()
        return value, _reason("'{}' is not a boolean (1 or 0)", column, cells, bad)
    word = _lower(column, cells)
    true, false = word.is_in(TRUE_WORDS), word.is_in(FALSE_WORDS)
    said = pl.when(true).then(pl.lit(True)).when(false).then(pl.lit(False))
    meant = cells.prepared("boolean", column, said)
    bad = word.is_not_null() & meant.is_null()
    error = _reason("'{}' is not a boolean (true/false, yes/no, 1/0)", column, cells, bad)
    return meant, error


def _date(column: str, cells: Cells) -> tuple[pl.Expr, pl.Expr]:
    """Any accepted date becomes Unix milliseconds (UTC): one form, taken by Loops for any date."""
    dtype = cells.schema[column]
    if dtype == pl.Date:
        return pl.col(column).cast(pl.Datetime("ms")).dt.epoch("ms"), pl.lit(None, dtype=pl.String)
    if dtype == pl.Datetime:
        value = pl.col(column)
        if getattr(dtype, "time_zone", None) is None:
            value = value.dt.replace_time_zone("UTC")
        return value.dt.epoch("ms"), pl.lit(None, dtype=pl.String)
    # Numbers of any type come as their canonical text: 20240102.0 from a widened Parquet
    # column is the same date as 20240102 from an integer one or from CSV text.
    text = cells.text(column)
    digits = cells.prepared("digits", column, pl.when(text.str.contains(NUMBER_PATTERN)).then(text))
    # RFC 3339 (a date, a time and an offset or Z: what exports mostly hold) parses fast; the
    # other ISO shapes are normalised into it first, only on the rows it did not parse.
    rfc3339 = cells.prepared("rfc3339", column, _parsed(text))
    iso: pl.Expr = pl.when(rfc3339.is_null() & digits.is_null()).then(text)
    for pattern, replacement in ISO_REWRITES:
        iso = iso.str.replace(pattern, replacement)
    candidates = [_numeric_date(column, cells, digits), rfc3339, _parsed(iso)]
    value = cells.prepared("date", column, pl.coalesce(candidates))
    bad = text.is_not_null() & value.is_null()
    reason = "'{}' is not a date (ISO 8601, YYYY-MM-DD, YYYYMMDD, or epoch seconds/ms)"
    return value, _reason(reason, column, cells, bad)


def _parsed(text: pl.Expr) -> pl.Expr:
    """RFC 3339 text as Unix milliseconds; null for other text."""
    moment = text.str.to_datetime("%+", time_zone="UTC", strict=False, time_unit="ms")
    return moment.dt.epoch("ms")


def _numeric_date(column: str, cells: Cells, digits: pl.Expr) -> pl.Expr:
    """A date written as a number (`digits`: the text, where it is a whole number), in Unix
    milliseconds; null for any other number.

    Eight digits that form a valid date are YYYYMMDD (20240102). Nine digits or more are Unix
    seconds, or milliseconds from EPOCH_MS_THRESHOLD on. Anything shorter is no date anyone
    means: `2024` would be 2024 seconds after 1970, so it is rejected, not guessed.
    """
    compact = pl.when(digits.str.len_chars() == 8).then(
        digits.str.to_date("%Y%m%d", strict=False).cast(pl.Datetime("ms")).dt.epoch("ms")
    )
    number = cells.prepared("integer", column, digits.cast(pl.Int64, strict=False))
    size = number.abs()
    in_ms = pl.when(size < EPOCH_MS_THRESHOLD).then(number * 1000).otherwise(number)
    return pl.coalesce(compact, pl.when(size >= EPOCH_MIN).then(in_ms))


def _too_long(text: pl.Expr, column: str) -> pl.Expr:
    """Loops refuses a value whose JSON form (quotes and escapes counted) exceeds 500 characters.

    Counted as JavaScript's JSON.stringify(value).length: escapes add characters, and a
    character outside the BMP counts twice (UTF-16).
    """
    # Up to 83 characters fit even if every one is escaped (\u0000 is 6): count only longer ones.
    long = pl.when(text.str.len_bytes() > 83).then(text)
    length = (
        long.str.len_chars()
        + 2
        + long.str.count_matches(r'["\\\n\r\t\x08\x0c]')
        + 5 * long.str.count_matches(r"[\x00-\x07\x0b\x0e-\x1f]")
        + long.str.count_matches(r"[\x{10000}-\x{10FFFF}]")
    )
    return pl.when(length > MAX_JSON_CHARS).then(
        pl.format(f"value of {{}} characters is over Loops' limit of {MAX_JSON_CHARS}", length)
    )


def check_filters(spec: SyncConfig, frame: pl.DataFrame) -> None:
    """Every `when` must run on every row, or the run stops before anything is mapped.

    A strict CAST of a cell that does not convert (the README's `CAST(seats AS INT) > 3` on a
    cell 'n/a') stops Polars for the whole frame. Rejecting the row instead would hold back its
    contact and its other events for a filter's sake, and treating it as no match would hide a
    filter that does not do what it says; so it is a source error that names the filter, the
    row and its values, and says how to choose no match on purpose (TRY_CAST).
    """
    for path, when in spec.filters():
        condition = pl.sql_expr(when)
        reason = _fails(frame, condition)
        if reason is not None:
            where = _first_failure(frame, condition)
            outcome = _dropped(spec, path)
            raise SourceError(f"{path}: `{when}` fails{where}: {reason}. {_advice(when, outcome)}")


def _fails(rows: pl.DataFrame, condition: pl.Expr) -> str | None:
    """The first line of Polars' error if `condition` cannot be evaluated on `rows`, else None."""
    try:
        rows.select(condition)
    except pl.exceptions.PolarsError as error:
        return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return None


def _first_failure(frame: pl.DataFrame, condition: pl.Expr) -> str:
    """' on row N (column = value, ...)': the first row `condition` fails on, found by halving
    (only on this error's path); '' if it fails only on rows together (an aggregate)."""
    rows = frame
    while rows.height > 1:
        half = rows.height // 2
        head, tail = rows.head(half), rows.slice(half)
        if _fails(head, condition) is not None:
            rows = head
        elif _fails(tail, condition) is not None:
            rows = tail
        else:
            return ""
    if rows.height == 0:
        return ""
    cells = [
        f"{name} = {_shown(rows.item(0, name))}"
        for name in condition.meta.root_names()
        if name in rows.columns
    ]
    return f" on row {rows.item(0, ROW)}" + (f" ({', '.join(cells)})" if cells else "")


def _dropped(spec: SyncConfig, path: str) -> str:
    """What a row the filter at `path` does not match goes without."""
    if path == "contact.when":
        return "becomes no contact"
    index = int(path.removeprefix("events[").split("]", 1)[0])
    return f"gets no '{spec.events[index].name}' event"


def _advice(when: str, dropped: str) -> str:
    if re.search(r"(?<![A-Za-z_])CAST\s*\(", when, re.IGNORECASE):
        return (
            "Fix the cells, or write TRY_CAST(...) for CAST(...): a value that does not convert "
            f"then matches nothing, and its row {dropped}."
        )
    return "Fix the cells, or the condition."


def _shown(value: object) -> str:
    if value is None:
        return "NULL"
    text = str(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"'{text}'" if isinstance(value, str) else text
