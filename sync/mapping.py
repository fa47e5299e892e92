"""Turn source rows into request bodies, vectorised in Polars.

Each mapped column is coerced by a Polars expression that yields the value and, beside it, the
reason the cell cannot be sent (or null). A row with any reason is rejected whole, with every
reason, and none of its requests are sent: half a row in Loops is worse than none. The few
Python steps left (a dict and canonical JSON per surviving row) run over bounded slices.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import polars as pl

from sync.config import ContactSection, EventSection, PropertyMapping, PropertyType, SyncConfig
from sync.errors import ConfigProblem
from sync.keys import canonical_json, event_key, payload_hash

__all__ = ["ROW", "Mapped", "constant_problems", "map_rows"]

ROW = "__row"
MAX_JSON_CHARS = 500
SLICE_ROWS = 50_000
EMAIL_PATTERN = r"^[^@\s\"(),:;<>\[\]\\]+@[^@\s\"(),:;<>\[\]\\]+\.[^@\s\"(),:;<>\[\]\\]+$"
TRUE_WORDS = ["true", "yes", "1", "t", "y"]
FALSE_WORDS = ["false", "no", "0", "f", "n"]
# Epoch values below this are seconds (this is 5138 AD in seconds, 1973 in milliseconds).
EPOCH_MS_THRESHOLD = 100_000_000_000
DATE_FORMATS_WITH_OFFSET = [
    "%Y-%m-%dT%H:%M:%S%.f%:z",
    "%Y-%m-%dT%H:%M%:z",
    "%Y-%m-%d %H:%M:%S%.f%:z",
]
DATE_FORMATS = [
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
]


@dataclass(frozen=True)
class Mapped:
    """What the source becomes: valid request bodies, and the rows that cannot be sent.

    `contacts`: row, identity, body (canonical JSON), hash, one per identity (the last row wins).
    `events`: row, identity, event, key, body, one per key.
    `rejects`: row, column, reason: one line per rejected row, its problems joined by '; '.
    """

    rows_read: int
    contacts: pl.DataFrame
    events: pl.DataFrame
    rejects: pl.DataFrame
    duplicates: int


@dataclass(frozen=True)
class _Field:
    """One output key: its value expression, and the reason its cell is bad (or null)."""

    key: str
    column: str | None
    value: pl.Expr
    error: pl.Expr
    kind: PropertyType


def map_rows(spec: SyncConfig, frame: pl.DataFrame) -> Mapped:
    """Coerce, validate, deduplicate and serialise every row of `frame` (which has ROW)."""
    errors: list[pl.Expr] = []
    contact_fields: list[_Field] = []
    if spec.contact:
        contact_fields = _contact_fields(spec.contact, frame.schema)
        errors += [_labelled(field) for field in contact_fields]
    event_fields = [_event_fields(event, frame.schema) for event in spec.events]
    for event, fields in zip(spec.events, event_fields, strict=True):
        errors += [pl.when(_applies(event, fields)).then(_labelled(field)) for field in fields]

    checked = frame.with_columns(
        _row_problems(errors).alias("__problems"),
        *[_value_column(f"__c.{f.key}", f) for f in contact_fields],
        *[
            _value_column(f"__e{i}.{f.key}", f)
            for i, fields in enumerate(event_fields)
            for f in fields
        ],
        *[
            _applies(event, f).alias(f"__e{i}")
            for i, (event, f) in enumerate(zip(spec.events, event_fields, strict=True))
        ],
    )
    rejects = _rejects(checked)
    contacts, duplicates = _contacts(spec, checked, contact_fields)
    valid = checked.filter(pl.col("__problems").is_null())
    events = _events(spec, valid, event_fields)
    return Mapped(frame.height, contacts, events, rejects, duplicates)


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
                error = _property(name, mapping, pl.Schema()).error
                reason = pl.select(error).item()
                if reason is not None:
                    problems.append(ConfigProblem(f"{prefix}.{name}.value", str(reason)))
    return problems


# --- coercion -------------------------------------------------------------------------------


def _contact_fields(section: ContactSection, schema: pl.Schema) -> list[_Field]:
    fields = _identity_fields(section.email, section.user_id, schema)
    fields += [_property(name, m, schema) for name, m in section.properties.items()]
    fields += [
        _coerce(f"mailingLists.{list_id}", column, schema, "boolean")
        for list_id, column in section.mailing_lists.items()
    ]
    return fields


def _event_fields(event: EventSection, schema: pl.Schema) -> list[_Field]:
    fields = _identity_fields(event.email, event.user_id, schema)
    fields += [_property(f"eventProperties.{k}", m, schema) for k, m in event.properties.items()]
    # once_per values are hashed into the key, never sent: no length limit applies to them.
    fields += [_Field(f"once_per.{c}", c, *_string(c, schema), "string") for c in event.once_per]
    return fields


def _identity_fields(email: str | None, user_id: str | None, schema: pl.Schema) -> list[_Field]:
    columns = [c for c in (email, user_id) if c]
    fields = []
    if email:
        fields.append(_email(email, schema))
    if user_id:
        fields.append(_coerce("userId", user_id, schema, "string"))
    no_identity = pl.all_horizontal([_text(c, schema).is_null() for c in columns])
    named = " and ".join(f"'{c}'" for c in columns) + (" are" if len(columns) > 1 else " is")
    missing = pl.when(no_identity).then(pl.lit(f"no identity: {named} empty"))
    fields.append(_Field("__identity", " / ".join(columns), pl.lit(None), missing, "string"))
    return fields


def _email(column: str, schema: pl.Schema) -> _Field:
    text = _text(column, schema).str.to_lowercase()
    bad = text.is_not_null() & ~text.str.contains(EMAIL_PATTERN)
    invalid = pl.when(bad).then(pl.format("'{}' is not a valid email address", _raw_text(column)))
    error = pl.coalesce(invalid, _too_long(text, column))
    return _Field("email", column, pl.when(~bad).then(text), error, "string")


def _property(key: str, mapping: PropertyMapping, schema: pl.Schema) -> _Field:
    if mapping.column is not None:
        return _coerce(key, mapping.column, schema, mapping.value_type)
    # A constant is coerced once, here, by the same expressions as a column.
    constant = pl.DataFrame({"__constant": [mapping.value]})
    field = _coerce(key, "__constant", constant.schema, mapping.value_type)
    value, error = constant.select(field.value.alias("v"), field.error.alias("e")).row(0)
    return _Field(key, None, pl.lit(value), pl.lit(error, dtype=pl.String), mapping.value_type)


def _coerce(key: str, column: str, schema: pl.Schema, kind: PropertyType) -> _Field:
    coercers = {"string": _string, "number": _number, "boolean": _boolean, "date": _date}
    value, error = coercers[kind](column, schema)
    if kind == "string":
        error = pl.coalesce(error, _too_long(value, column))
    return _Field(key, column, value, error, kind)


def _raw_text(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String).str.strip_chars()


def _text(column: str, schema: pl.Schema) -> pl.Expr:
    """The cell as trimmed text; an empty cell is null."""
    dtype = schema[column]
    text = _raw_text(column)
    if dtype == pl.Date:
        text = pl.col(column).dt.to_string("%Y-%m-%d")
    elif dtype == pl.Datetime:
        offset = "%:z" if getattr(dtype, "time_zone", None) else ""
        text = pl.col(column).dt.to_string(f"%Y-%m-%dT%H:%M:%S%.3f{offset}")
    return pl.when(text != "").then(text)


def _string(column: str, schema: pl.Schema) -> tuple[pl.Expr, pl.Expr]:
    return _text(column, schema), pl.lit(None, dtype=pl.String)


def _number(column: str, schema: pl.Schema) -> tuple[pl.Expr, pl.Expr]:
    dtype = schema[column]
    if dtype.is_numeric() or dtype == pl.Boolean:
        value = pl.col(column).cast(pl.Float64)
    else:
        value = _text(column, schema).cast(pl.Float64, strict=False)
    finite = value.is_finite()
    bad = _text(column, schema).is_not_null() & (value.is_null() | ~finite)
    error = pl.when(bad).then(pl.format("'{}' is not a number", _raw_text(column)))
    return pl.when(~bad).then(value), error


def _boolean(column: str, schema: pl.Schema) -> tuple[pl.Expr, pl.Expr]:
    if schema[column] == pl.Boolean:
        return pl.col(column), pl.lit(None, dtype=pl.String)
    if schema[column].is_numeric():
        number = pl.col(column)
        value = pl.when(number == 1).then(pl.lit(True)).when(number == 0).then(pl.lit(False))
        bad = number.is_not_null() & value.is_null()
        return value, pl.when(bad).then(pl.format("'{}' is not a boolean (1 or 0)", number))
    word = _text(column, schema).str.to_lowercase()
    value = (
        pl.when(word.is_in(TRUE_WORDS))
        .then(pl.lit(True))
        .when(word.is_in(FALSE_WORDS))
        .then(pl.lit(False))
    )
    bad = word.is_not_null() & value.is_null()
    error = pl.when(bad).then(
        pl.format("'{}' is not a boolean (true/false, yes/no, 1/0)", _raw_text(column))
    )
    return value, error


def _date(column: str, schema: pl.Schema) -> tuple[pl.Expr, pl.Expr]:
    """Any accepted date becomes Unix milliseconds (UTC): one form, taken by Loops for any date."""
    dtype = schema[column]
    if dtype == pl.Date:
        return pl.col(column).cast(pl.Datetime("ms")).dt.epoch("ms"), pl.lit(None, dtype=pl.String)
    if dtype == pl.Datetime:
        value = pl.col(column)
        if getattr(dtype, "time_zone", None) is None:
            value = value.dt.replace_time_zone("UTC")
        return value.dt.epoch("ms"), pl.lit(None, dtype=pl.String)
    text = _text(column, schema)
    if dtype.is_integer():
        number = pl.col(column).cast(pl.Int64)
    else:
        number = pl.when(text.str.contains(r"^\d{1,15}$")).then(text.cast(pl.Int64, strict=False))
    iso = text.str.replace(r"[zZ]$", "+00:00")
    candidates = [
        pl.when(number < EPOCH_MS_THRESHOLD).then(number * 1000).otherwise(number),
        *[
            iso.str.to_datetime(f, time_zone="UTC", strict=False, time_unit="ms").dt.epoch("ms")
            for f in DATE_FORMATS_WITH_OFFSET
        ],
        *[
            iso.str.to_datetime(f, strict=False, time_unit="ms").dt.epoch("ms")
            for f in DATE_FORMATS
        ],
    ]
    value = pl.coalesce(candidates)
    bad = text.is_not_null() & value.is_null()
    error = pl.when(bad).then(
        pl.format(
            "'{}' is not a date (ISO 8601, YYYY-MM-DD, or epoch seconds/ms)", _raw_text(column)
        )
    )
    return pl.when(~bad).then(value), error


def _too_long(text: pl.Expr, column: str) -> pl.Expr:
    """Loops refuses a value whose JSON form (quotes and escapes counted) exceeds 500 characters.

    Counted as JavaScript's JSON.stringify(value).length: escapes add characters, and a
    character outside the BMP counts twice (UTF-16).
    """
    length = (
        text.str.len_chars()
        + 2
        + text.str.count_matches(r'["\\\n\r\t\x08\x0c]')
        + 5 * text.str.count_matches(r"[\x00-\x07\x0b\x0e-\x1f]")
        + text.str.count_matches(r"[\x{10000}-\x{10FFFF}]")
    )
    return pl.when(length > MAX_JSON_CHARS).then(
        pl.format(f"value of {{}} characters is over Loops' limit of {MAX_JSON_CHARS}", length)
    )


# --- rows, rejects, payloads ----------------------------------------------------------------


def _applies(event: EventSection, fields: list[_Field]) -> pl.Expr:
    """Whether the row makes this event: its `when` holds (a null comparison does not), and
    every `once_per` cell is filled (an order id that is empty is no order)."""
    applies = pl.sql_expr(event.when).fill_null(False) if event.when else pl.lit(True)
    occurrences = [f.value.is_not_null() for f in fields if f.key.startswith("once_per.")]
    return pl.all_horizontal(applies, *occurrences)


def _value_column(name: str, field: _Field) -> pl.Expr:
    return field.value.alias(name)


def _row_problems(errors: list[pl.Expr]) -> pl.Expr:
    """Every problem of the row as 'column<US>reason' joined by <RS>; null when there is none."""
    if not errors:
        return pl.lit(None, dtype=pl.String)
    joined = pl.concat_str(errors, separator="\x1e", ignore_nulls=True)
    return pl.when(joined != "").then(joined)


def _labelled(field: _Field) -> pl.Expr:
    return pl.format("{}\x1f{}", pl.lit(field.column or field.key), field.error)


def _rejects(checked: pl.DataFrame) -> pl.DataFrame:
    problems = (
        checked.filter(pl.col("__problems").is_not_null())
        .select(ROW, pl.col("__problems").str.split("\x1e").alias("p"))
        .explode("p")
        .select(
            ROW,
            pl.col("p").str.split_exact("\x1f", 1).struct.rename_fields(["column", "reason"]),
        )
        .unnest("p")
    )
    return (
        problems.group_by(ROW, maintain_order=True)
        .agg(
            pl.col("column").unique(maintain_order=True).str.join("; "),
            pl.col("reason").unique(maintain_order=True).str.join("; "),
        )
        .sort(ROW)
    )


def _identity(prefix: str, has_email: bool, has_user_id: bool) -> pl.Expr:
    """A contact's ledger identity: its userId where mapped (emails change), else its email."""
    by_email = pl.lit("e:") + pl.col(f"{prefix}email") if has_email else pl.lit(None, pl.String)
    if not has_user_id:
        return by_email
    by_user_id = pl.lit("u:") + pl.col(f"{prefix}userId")
    return pl.when(pl.col(f"{prefix}userId").is_not_null()).then(by_user_id).otherwise(by_email)


def _contacts(
    spec: SyncConfig, checked: pl.DataFrame, fields: list[_Field]
) -> tuple[pl.DataFrame, int]:
    """One body per identity, from its last row. A rejected last row wins too: the identity is
    then sent nothing, rather than the older values of an earlier row."""
    empty = pl.DataFrame(
        schema={ROW: pl.UInt32, "identity": pl.String, "body": pl.String, "hash": pl.String}
    )
    if spec.contact is None:
        return empty, 0
    section = spec.contact
    fields = [f for f in fields if f.key != "__identity"]
    identity = _identity("__c.", section.email is not None, section.user_id is not None)
    ranked = checked.select(
        ROW,
        identity.alias("identity"),
        pl.col("__problems").is_null().alias("__valid"),
        *[pl.col(f"__c.{f.key}") for f in fields],
    ).filter(pl.col("identity").is_not_null())
    ranked = ranked.with_columns(pl.col("identity").is_last_distinct().alias("__last"))
    duplicates = ranked.filter(pl.col("__valid") & ~pl.col("__last")).height
    keep = ranked.filter(pl.col("__valid") & pl.col("__last")).drop("__valid", "__last")
    build = _payload_builder(fields, clear=section.empty == "clear")
    bodies = [build(values) for values in _rows(keep.drop(ROW, "identity"))]
    return (
        keep.select(ROW, "identity").with_columns(
            pl.Series("body", bodies, dtype=pl.String),
            pl.Series("hash", [payload_hash(b.encode()) for b in bodies], dtype=pl.String),
        ),
        duplicates,
    )


def _events(spec: SyncConfig, valid: pl.DataFrame, all_fields: list[list[_Field]]) -> pl.DataFrame:
    frames = [
        pl.DataFrame(
            schema={
                ROW: pl.UInt32,
                "identity": pl.String,
                "event": pl.String,
                "key": pl.String,
                "body": pl.String,
            }
        )
    ]
    for index, (event, fields) in enumerate(zip(spec.events, all_fields, strict=True)):
        prefix = f"__e{index}."
        sent = [f for f in fields if f.key != "__identity"]
        payload_fields = [f for f in sent if not f.key.startswith("once_per.")]
        once_per = [f for f in sent if f.key.startswith("once_per.")]
        rows = valid.filter(pl.col(f"__e{index}")).select(
            ROW,
            _identity(prefix, event.email is not None, event.user_id is not None).alias("identity"),
            pl.concat_list([pl.col(prefix + f.key) for f in once_per]).alias("once_per")
            if once_per
            else pl.lit(None, dtype=pl.List(pl.String)).alias("once_per"),
            *[pl.col(prefix + f.key) for f in payload_fields],
        )
        build = _payload_builder(payload_fields, clear=False, event_name=event.name)
        keys = [
            event_key(spec.name, event.name, identity, once or [])
            for identity, once in rows.select("identity", "once_per").iter_rows()
        ]
        bodies = [build(values) for values in _rows(rows.drop(ROW, "identity", "once_per"))]
        frame = rows.select(ROW, "identity").with_columns(
            pl.lit(event.name).alias("event"),
            pl.Series("key", keys, dtype=pl.String),
            pl.Series("body", bodies, dtype=pl.String),
        )
        frames.append(frame.filter(pl.col("key").is_last_distinct()))
    return pl.concat(frames).sort(ROW, maintain_order=True)


def _rows(frame: pl.DataFrame) -> Iterator[tuple[Any, ...]]:
    """Rows as tuples, a bounded slice at a time."""
    for piece in frame.iter_slices(SLICE_ROWS):
        yield from piece.iter_rows()


def _payload_builder(fields: list[_Field], *, clear: bool, event_name: str | None = None) -> Any:
    """A function from one row's values to its canonical JSON body.

    Empty cells are left out, or sent as null when `clear` asks for it; identities and
    mailing lists are never sent as null. Whole numbers go as integers, so 5 and 5.0 hash alike.
    """
    plan = []
    for field in fields:
        # Split at the first dot: an event property's own name may hold dots ("plan.tier").
        group, dot, name = field.key.partition(".")
        group, name = (group, name) if dot else ("", group)
        # Null erases a value in Loops; for these keys it would erase who the contact is or
        # whether they may be mailed, so an empty cell is left out even with `empty: clear`.
        nullable = (
            clear and field.key not in ("email", "userId", "subscribed") and group != "mailingLists"
        )
        plan.append((group, name, field.kind == "number", nullable))

    def build(values: tuple[Any, ...]) -> str:
        body: dict[str, Any] = {} if event_name is None else {"eventName": event_name}
        for (group, name, is_number, nullable), value in zip(plan, values, strict=True):
            if value is None and not nullable:
                continue
            whole = is_number and value is not None and value.is_integer() and abs(value) < 2**53
            (body.setdefault(group, {}) if group else body)[name] = int(value) if whole else value
        return canonical_json(body).decode()

    return build
