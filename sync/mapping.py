"""Turn source rows into request bodies, vectorised in Polars.

Each mapped column is coerced (`sync.coerce`) into its value and, beside it, the reason the cell
cannot be sent (or null); this module assembles rows from those columns: their problems,
identities, bodies and event keys. A row with any reason is rejected whole, with every reason,
and none of its requests are sent: half a row in Loops is worse than none. Bodies and keys are
hashed in Polars too (`sync.keys`), so mapping a slice is Polars work from end to end, done one
slice ahead of the caller in a thread of its own. Mapping knows nothing of the ledger: planning
settles the slices against it and deduplicates them (`sync.candidates`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import polars as pl

from sync.ahead import one_ahead
from sync.coerce import Cells, Field, check_filters, coerce_contact, coerce_event
from sync.columns import (
    COLUMN_SEPARATOR,
    CONTACT,
    PROBLEM_SEPARATOR,
    PROBLEMS,
    ROW,
    contact_column,
    event_column,
)
from sync.config_model import ContactSection, EventSection, PropertyType, SyncConfig
from sync.keys import (
    JsonKind,
    event_keys,
    hash_event_keys,
    json_member,
    json_members,
    json_nested,
    legacy_event_keys,
    payload_hashes,
)

__all__ = ["SLICE_ROWS", "idempotency_keys", "map_slices"]

SLICE_ROWS = 50_000
# The JSON a coerced value is written as: a date is Unix milliseconds, an integer.
JSON_KINDS: dict[PropertyType, JsonKind] = {
    "string": "string",
    "number": "number",
    "boolean": "boolean",
    "date": "integer",
}


def map_slices(
    spec: SyncConfig,
    frames: Iterable[pl.DataFrame],
    schema: pl.Schema,
    *,
    ls1_keys: bool = False,
) -> Iterator[pl.DataFrame]:
    """Each slice of the source (with ROW) as its rows' problems, identities, bodies and hashed
    event keys: a pure function of the rows and the config, one slice at a time.

    In steps, each reading the columns the one before wrote: the parts of cells that several
    expressions share (`Cells`), each mapped column's value and reason, each row's problems,
    identities, bodies and event keys' JSON, and last their hashes. `ls1_keys`: also build the
    keys of ledgers written before ls2 (the planner asks for them when its ledger holds some).
    At least one slice comes out, empty for an empty source, so the columns are always known.
    """
    cells = Cells(schema)
    contact_fields = coerce_contact(spec.contact, cells) if spec.contact else []
    event_fields = [coerce_event(event, cells) for event in spec.events]
    coerce: list[pl.Expr] = [pl.col(ROW)]
    contact_applies = _condition(spec.contact.when if spec.contact else None)
    coerce.append(contact_applies.alias(CONTACT + "applies"))
    contact_columns = _coerced(contact_fields, CONTACT, contact_applies, coerce)
    errors = [field.error for field in contact_columns]
    build: list[pl.Expr] = []
    for index, (event, fields) in enumerate(zip(spec.events, event_fields, strict=True)):
        prefix = event_column(index)
        applies = _applies(event, fields)
        coerce.append(applies.alias(prefix + "applies"))
        coerced = _coerced(fields, prefix, applies, coerce)
        errors += [field.error for field in coerced]
        ls1_forms = _ls1_forms(fields, schema, prefix, coerce) if ls1_keys else None
        build += _event_columns(spec.name, event, coerced, prefix=prefix, ls1_forms=ls1_forms)
    build = [
        pl.col(ROW),
        _row_problems(errors).alias(PROBLEMS),
        *(_contact_columns(spec.contact, contact_columns) if spec.contact else []),
        *build,
    ]

    hashes, keys = _hashes(spec, legacy=ls1_keys), idempotency_keys(spec)

    def built(piece: pl.DataFrame) -> pl.DataFrame:
        check_filters(spec, piece)
        mapped = cells.computed(piece.lazy()).select(coerce).select(build)
        return mapped.with_columns(hashes).with_columns(keys).collect()

    empty = True
    for piece in one_ahead(built, iter(frames)):
        empty = False
        yield piece
    if empty:
        nothing = pl.DataFrame(schema=schema).with_columns(pl.lit(0, pl.UInt32).alias(ROW))
        yield built(nothing.head(0))


def _hashes(spec: SyncConfig, *, legacy: bool) -> list[pl.Expr]:
    """Each body's hash and each occurrence's keys, from the columns `build` wrote.

    `legacy`: the ledger holds `ls1` keys, so each occurrence's `ls1` key is looked up too."""
    hashes = []
    if spec.contact:
        body = pl.col(contact_column("body"))
        hashes.append(payload_hashes(body).alias(contact_column("hash")))
    for index in range(len(spec.events)):
        for name in ("key_email", "key_user"):
            material = pl.col(event_column(index, name))
            hashes.append(hash_event_keys(material).alias(event_column(index, name)))
        if legacy:
            material = pl.col(event_column(index, "legacy"))
            legacy_key = hash_event_keys(material, scheme="ls1")
            hashes.append(legacy_key.alias(event_column(index, "legacy")))
    return hashes


def idempotency_keys(spec: SyncConfig) -> list[pl.Expr]:
    """An event's `key`, its Idempotency-Key: its email's key, else its userId's."""
    return [
        pl.coalesce(event_column(i, "key_email"), event_column(i, "key_user")).alias(
            event_column(i, "key")
        )
        for i in range(len(spec.events))
    ]


def _coerced(
    fields: list[Field], prefix: str, applies: pl.Expr | None, into: list[pl.Expr]
) -> list[Field]:
    """Add each field's value and labelled reason to `into`; return the fields as those columns.

    An event's reasons count only on rows where the event `applies`.
    """
    columns = []
    for field in fields:
        value_name, error_name = f"{prefix}{field.key}", f"{prefix}!{field.key}"
        error = _labelled(field)
        into += [
            field.value.alias(value_name),
            (error if applies is None else pl.when(applies).then(error)).alias(error_name),
        ]
        columns.append(
            Field(field.key, field.column, pl.col(value_name), pl.col(error_name), field.kind)
        )
    return columns


def _condition(when: str | None) -> pl.Expr:
    """Whether a `when` holds on the row (a null comparison does not); no `when`: always."""
    return pl.sql_expr(when).fill_null(False) if when else pl.lit(True)


def _applies(event: EventSection, fields: list[Field]) -> pl.Expr:
    """Whether the row makes this event: its `when` holds, and every `once_per` cell is
    filled (an order id that is empty is no order)."""
    occurrences = [f.value.is_not_null() for f in fields if f.key.startswith("once_per.")]
    return pl.all_horizontal(_condition(event.when), *occurrences)


def _row_problems(errors: list[pl.Expr]) -> pl.Expr:
    """Every problem of the row as 'column<US>reason' joined by <RS>; null when there is none."""
    if not errors:
        return pl.lit(None, dtype=pl.String)
    return pl.concat_str(errors, separator=PROBLEM_SEPARATOR, ignore_nulls=True).replace("", None)


def _labelled(field: Field) -> pl.Expr:
    return pl.format("{}" + COLUMN_SEPARATOR + "{}", pl.lit(field.column or field.key), field.error)


def _identity(fields: list[Field]) -> pl.Expr:
    """A contact's ledger identity: its userId where mapped (emails change), else its email."""
    values = {f.key: f.value for f in fields}
    email, user_id = values.get("email"), values.get("userId")
    by_email = pl.lit("e:") + email if email is not None else pl.lit(None, pl.String)
    if user_id is None:
        return by_email
    return pl.when(user_id.is_not_null()).then(pl.lit("u:") + user_id).otherwise(by_email)


def _identifiers(fields: list[Field], prefix: str) -> list[pl.Expr]:
    """The email and userId sent, beside the body: the planner compares them without parsing."""
    values = {f.key: f.value for f in fields}
    return [
        values.get(key, pl.lit(None, pl.String)).cast(pl.String).alias(prefix + key)
        for key in ("email", "userId")
    ]


def _contact_columns(section: ContactSection, fields: list[Field]) -> list[pl.Expr]:
    """The contact's identity, body and identifiers; all null on a row `contact.when` drops,
    which then is no contact's (its events still go)."""
    sent = [f for f in fields if f.key != "__identity"]
    applies = pl.col(CONTACT + "applies")
    columns = [
        _identity(sent).alias(contact_column("identity")),
        _body(sent, clear=section.empty == "clear").alias(contact_column("body")),
        *_identifiers(sent, CONTACT),
    ]
    if section.when is None:
        return columns
    return [pl.when(applies).then(column) for column in columns]


def _ls1_forms(
    fields: list[Field], schema: pl.Schema, prefix: str, into: list[pl.Expr]
) -> dict[str, pl.Expr]:
    """The text `ls1` keys were made of where it differs from today's canonical text: a float or
    decimal id or `once_per` value was its plain cast (`101.0`). Found by these, the events an
    older ledger holds are not sent again."""
    forms = {}
    for field in fields:
        identifying = field.key == "userId" or field.key.startswith("once_per.")
        column = field.column
        if not identifying or column is None or column not in schema:
            continue
        if schema[column].is_float() or schema[column].is_decimal():
            text = pl.col(column).cast(pl.String).str.strip_chars()
            into.append(pl.when(text != "").then(text).alias(f"{prefix}ls1.{field.key}"))
            forms[field.key] = pl.col(f"{prefix}ls1.{field.key}")
    return forms


def _event_columns(
    sync_name: str,
    event: EventSection,
    fields: list[Field],
    *,
    prefix: str,
    ls1_forms: dict[str, pl.Expr] | None = None,
) -> list[pl.Expr]:
    """An occurrence's keys (by email, by userId, and, given `ls1_forms` because the ledger
    holds `ls1` keys, the `ls1` one), still to be hashed, its `once_per` values as a JSON object
    for the ledger, and the request body."""
    sent = [f for f in fields if f.key != "__identity"]
    payload = [f for f in sent if not f.key.startswith("once_per.")]
    once_per = {
        f.key.removeprefix("once_per."): f.value for f in sent if f.key.startswith("once_per.")
    }
    values = {f.key: f.value for f in sent}
    email, user_id = values.get("email"), values.get("userId")
    identity = _identity(sent)
    by = {
        "key_email": pl.lit("e:") + email if email is not None else None,
        "key_user": pl.lit("u:") + user_id if user_id is not None else None,
    }
    keys = [
        (
            event_keys(sync_name, event.name, identifier, once_per)
            if identifier is not None
            else pl.lit(None, pl.String)
        ).alias(prefix + name)
        for name, identifier in by.items()
    ]
    legacy = []
    if ls1_forms is not None:
        old = ls1_forms
        as_before = [Field(f.key, f.column, old.get(f.key, f.value), f.error, f.kind) for f in sent]
        ls1 = legacy_event_keys(
            sync_name,
            event.name,
            _identity(as_before),
            [old.get(f"once_per.{name}", value) for name, value in once_per.items()],
        )
        legacy.append(ls1.alias(prefix + "legacy"))
    return [
        pl.col(prefix + "applies"),
        identity.alias(prefix + "identity"),
        *keys,
        *legacy,
        json_members(
            {
                name: json_member(name, value, "string", null=True)
                for name, value in once_per.items()
            }
        ).alias(prefix + "once_per"),
        _body(payload, clear=False, event_name=event.name).alias(prefix + "body"),
        *_identifiers(sent, prefix),
    ]


def _body(fields: list[Field], *, clear: bool, event_name: str | None = None) -> pl.Expr:
    """Each row's request body as canonical JSON, built by Polars for the whole column.

    Empty cells are left out, or sent as null when `clear` asks for it. Null erases a value in
    Loops; for an identifier, `subscribed` or a mailing list it would erase who the contact is or
    whether they may be mailed, so those are left out even with `empty: clear`.
    """
    top: dict[str, pl.Expr | None] = {}
    groups: dict[str, dict[str, pl.Expr | None]] = {}
    for field in fields:
        # Split at the first dot: an event property's own name may hold dots ("plan.tier").
        group, dot, name = field.key.partition(".")
        group, name = (group, name) if dot else ("", group)
        nullable = clear and not group and name not in ("email", "userId", "subscribed")
        member = json_member(name, field.value, JSON_KINDS[field.kind], null=nullable)
        (groups.setdefault(group, {}) if group else top)[name] = _once(member)
    for group, members in groups.items():
        top[group] = json_nested(group, members)
    if event_name is not None:
        top["eventName"] = _once(json_member("eventName", pl.lit(event_name), "string"))
    return json_members(top)


def _once(expr: pl.Expr) -> pl.Expr:
    """An expression of no column (a constant's member) as its value, computed here once
    rather than on every row."""
    if expr.meta.root_names():
        return expr
    return pl.lit(pl.select(expr).item(), dtype=pl.String)
