"""Turn source rows into request bodies, vectorised in Polars.

Each mapped column is coerced by a Polars expression that yields the value and, beside it, the
reason the cell cannot be sent (or null). A row with any reason is rejected whole, with every
reason, and none of its requests are sent: half a row in Loops is worse than none. The one
Python step left, sha256 per body and key, runs over bounded slices while Polars builds the next.
"""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import orjson
import polars as pl

from sync.config import ContactSection, EventSection, PropertyMapping, PropertyType, SyncConfig
from sync.errors import ConfigProblem, SourceError
from sync.keys import (
    event_keys,
    hash_event_keys,
    json_object,
    json_value,
    legacy_event_keys,
    payload_hashes,
)
from sync.ledger import Snapshot

__all__ = ["ROW", "Mapped", "constant_problems", "delivered_events", "map_rows"]

ROW = "__row"
MAX_JSON_CHARS = 500
SLICE_ROWS = 50_000
EMAIL_PATTERN = r"^[^@\s\"(),:;<>\[\]\\]+@[^@\s\"(),:;<>\[\]\\]+\.[^@\s\"(),:;<>\[\]\\]+$"
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


# A delivered occurrence found by one identifier that now carries another: `by`, the key it
# was found by; the other key and identifier, for the ledger to find it by those too.
_LEARNED = pl.DataFrame(
    schema=dict.fromkeys(("by", "key_email", "key_user", "email", "user_id"), pl.String)
)


@dataclass(frozen=True)
class Mapped:
    """What the source becomes: valid request bodies, and the rows that cannot be sent.

    `contacts`: row, identity, body (canonical JSON), hash, one per identity (the last row wins).
    `events`: row, identity, event, key, body, one per key.
    `rejects`: row, column, reason: one line per rejected row, its problems joined by '; '.
    Given the ledger's snapshot, what Loops already holds is left out: a row it holds whole is
    only counted (`contacts_settled`, `events_settled`), and a body it holds is null. So
    `contacts` and `events` are the candidates to send, not a census of the source.
    """

    rows_read: int
    contacts: pl.DataFrame
    events: pl.DataFrame
    rejects: pl.DataFrame
    duplicates: int
    contacts_settled: int = 0
    events_settled: int = 0
    skipped_when_empty: tuple[str, ...] = ()  # contact properties `empty: skip` leaves out
    # Delivered occurrences whose other identifier the ledger lacks (see `_learned`).
    learned: pl.DataFrame = dataclasses.field(default_factory=_LEARNED.clear)


@dataclass(frozen=True)
class _Slice:
    """A mapped slice: `pending`, rows with something to send or to reject, all columns; and
    `settled`, rows Loops already holds whole: row, contact identity, event fingerprints."""

    pending: pl.DataFrame
    settled: pl.DataFrame
    learned: pl.DataFrame


@dataclass(frozen=True)
class _Field:
    """One output key: its value expression, and the reason its cell is bad (or null)."""

    key: str
    column: str | None
    value: pl.Expr
    error: pl.Expr
    kind: PropertyType


def map_rows(spec: SyncConfig, frame: pl.DataFrame, *, confirmed: Snapshot | None = None) -> Mapped:
    """Coerce, validate, deduplicate and serialise every row of `frame` (which has ROW).

    A bounded slice at a time, in two steps: coerce each mapped column once (value and reason),
    then build each row's problems, identities, bodies and event keys from those columns. Only
    that compact result is kept for the whole source; deduplication then runs over it. What
    Loops already `confirmed` (same hash, same event key) is set aside at once (see `_settle`).
    """
    _check_filters(spec, frame)
    held = _Held.of(confirmed) if confirmed is not None else None
    legacy = held is not None and held.legacy
    contact_fields = _contact_fields(spec.contact, frame.schema) if spec.contact else []
    event_fields = [_event_fields(event, frame.schema) for event in spec.events]
    coerce: list[pl.Expr] = [pl.col(ROW)]
    contact_columns = _coerced(contact_fields, "__c.", None, coerce)
    errors = [field.error for field in contact_columns]
    build: list[pl.Expr] = []
    for index, (event, fields) in enumerate(zip(spec.events, event_fields, strict=True)):
        prefix = f"__e{index}."
        applies = _applies(event, fields)
        coerce.append(applies.alias(prefix + "applies"))
        coerced = _coerced(fields, prefix, applies, coerce)
        errors += [field.error for field in coerced]
        ls1_forms = _ls1_forms(fields, frame.schema, prefix, coerce) if legacy else None
        build += _event_columns(spec.name, event, coerced, prefix=prefix, ls1_forms=ls1_forms)
    build = [
        pl.col(ROW),
        _row_problems(errors).alias("__problems"),
        *(_contact_columns(spec.contact, contact_columns) if spec.contact else []),
        *build,
    ]

    def built(piece: pl.DataFrame) -> pl.DataFrame:
        return piece.lazy().select(coerce).collect().select(build)

    pieces = [
        _settle(spec, _hashed(spec, piece, legacy=legacy), held)
        for piece in _one_ahead(built, frame.iter_slices(SLICE_ROWS))
    ]
    if not pieces:
        empty = frame.head(0).select(coerce).select(build)
        pieces = [_settle(spec, _hashed(spec, empty, legacy=legacy), None)]
    checked = pl.concat([piece.pending for piece in pieces], rechunk=False)
    settled = pl.concat([piece.settled for piece in pieces], rechunk=False)
    checked = checked.with_columns(_one_contact_twice(spec, checked, settled).alias("__problems"))
    rejects = _rejects(checked)
    contacts, duplicates, contacts_settled = _contacts(spec, checked, settled)
    valid = checked.filter(pl.col("__problems").is_null())
    events = _events(spec, valid).filter(
        ~pl.col("identity").is_in(_rejected_last(spec, checked, settled)).fill_null(False)
    )
    events_settled = _count_settled_events(spec, settled, events)
    skipped = (
        tuple(spec.contact.properties) if spec.contact and spec.contact.empty == "skip" else ()
    )
    return Mapped(
        frame.height,
        contacts,
        events,
        rejects,
        duplicates,
        contacts_settled,
        events_settled,
        skipped,
        pl.concat([piece.learned for piece in pieces]),
    )


def _one_ahead(
    work: Callable[[pl.DataFrame], pl.DataFrame], pieces: Iterator[pl.DataFrame]
) -> Iterator[pl.DataFrame]:
    """`work` on each piece, the next one in a thread while the caller takes this one.

    Polars lets go of the GIL while it works, and the caller's sha256 loop needs it: the two
    overlap. One piece ahead, no more, so that memory holds two slices at most.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead: Future[pl.DataFrame] | None = None
        for piece in pieces:
            following = pool.submit(work, piece)
            if ahead is not None:
                yield ahead.result()
            ahead = following
        if ahead is not None:
            yield ahead.result()


def _hashed(spec: SyncConfig, piece: pl.DataFrame, *, legacy: bool) -> pl.DataFrame:
    """Hash a slice's bodies and event keys while it is small (sha256 runs in Python).

    An event's `key`, its Idempotency-Key, is its email's key, else its userId's. `legacy`: the
    ledger holds `ls1` keys, so each occurrence's `ls1` key is looked up too."""
    hashes = []
    if spec.contact:
        hashes.append(payload_hashes(piece.get_column("__c.body")).alias("__c.hash"))
    for index in range(len(spec.events)):
        prefix = f"__e{index}."
        for name in ("key_email", "key_user"):
            hashes.append(hash_event_keys(piece.get_column(prefix + name)))
        if legacy:
            hashes.append(hash_event_keys(piece.get_column(prefix + "legacy"), scheme="ls1"))
    return piece.with_columns(hashes).with_columns(
        pl.coalesce(f"__e{i}.key_email", f"__e{i}.key_user").alias(f"__e{i}.key")
        for i in range(len(spec.events))
    )


def _settle(spec: SyncConfig, piece: pl.DataFrame, held: _Held | None) -> _Slice:
    """Set aside the rows whose every request Loops already holds, and the bodies it holds.

    A nightly run over a big table should not hold a million bodies it won't send: a settled
    row keeps only what deduplication and the counts need. A request that failed before is
    never settled: it is retried. A contact's hash is looked up among every identity's, not
    only its own: the same thing, because a body holds the email or userId its identity is
    made of (the config reserves those names), so no two identities share a hash.
    """
    if held is None:
        return _Slice(piece, _settled_rows(spec, piece.head(0)), _LEARNED)
    skip_body: dict[str, pl.Expr] = {}  # body column: whether Loops holds it (no retry due)
    whole = pl.col("__problems").is_null()
    if spec.contact:
        skip_body["__c.body"] = held.contacts.holds(piece.get_column("__c.hash"))
        skip_body["__c.body"] &= ~pl.col("__c.identity").is_in(held.retried)
        whole &= skip_body["__c.body"]
    learned = [_LEARNED]
    for index in range(len(spec.events)):
        key = f"__e{index}.key"
        learned.append(_learned(piece, held, f"__e{index}."))
        skip_body[f"__e{index}.body"] = held.holds_event(piece, f"__e{index}.")
        skip_body[f"__e{index}.body"] &= ~pl.col(key).is_in(held.retried)
        whole &= ~pl.col(f"__e{index}.applies") | skip_body[f"__e{index}.body"]
    marked = piece.with_columns(
        whole.alias("__settled"),
        *(pl.when(~skip).then(pl.col(body)).alias(body) for body, skip in skip_body.items()),
    )
    pending = marked.filter(~pl.col("__settled")).drop("__settled")
    # Mostly pending (a first sync), its buffers are mostly in use: copying would gain little.
    if pending.height < piece.height // 2:
        pending = _compact(pending)
    settled = _settled_rows(spec, marked.filter(pl.col("__settled")))
    return _Slice(pending, _compact(settled), pl.concat(learned))


def _learned(piece: pl.DataFrame, held: _Held, prefix: str) -> pl.DataFrame:
    """Occurrences Loops holds by one of their keys only, though they carry both identifiers:
    a contact that gained a user id (or an email) since. The ledger learns the other key, or a
    later change of the first identifier (a new email) would make the occurrence look new."""
    by_email = held.events.holds(piece.get_column(prefix + "key_email"))
    by_user = held.events.holds(piece.get_column(prefix + "key_user"))
    both = pl.col(prefix + "key_email").is_not_null() & pl.col(prefix + "key_user").is_not_null()
    rows = piece.filter(
        pl.col(prefix + "applies") & pl.col("__problems").is_null() & both & (by_email ^ by_user)
    )
    if rows.is_empty():
        return _LEARNED
    found_by_email = rows.filter(held.events.holds(rows.get_column(prefix + "key_email")))
    return rows.select(
        pl.when(
            pl.col(prefix + "key_email").is_in(
                found_by_email.get_column(prefix + "key_email").implode()
            )
        )
        .then(pl.col(prefix + "key_email"))
        .otherwise(pl.col(prefix + "key_user"))
        .alias("by"),
        pl.col(prefix + "key_email").alias("key_email"),
        pl.col(prefix + "key_user").alias("key_user"),
        pl.col(prefix + "email").alias("email"),
        pl.col(prefix + "userId").alias("user_id"),
    )


def _settled_rows(spec: SyncConfig, rows: pl.DataFrame) -> pl.DataFrame:
    """What a settled row still counts for: its contact identity, so that it wins over earlier
    rows of that identity, and a fingerprint of each event key (for the count, in this run)."""
    identity = pl.col("__c.identity") if spec.contact else pl.lit(None, pl.String)
    email = pl.col("__c.email") if _by_both(spec) else pl.lit(None, pl.String)
    fingerprints = [
        pl.when(pl.col(f"__e{index}.applies"))
        .then(pl.col(f"__e{index}.key").hash())
        .alias(f"__e{index}.fp")
        for index in range(len(spec.events))
    ]
    return rows.select(ROW, identity.alias("identity"), email.alias("email"), *fingerprints)


def _rejected_last(spec: SyncConfig, checked: pl.DataFrame, settled: pl.DataFrame) -> pl.Series:
    """The contacts whose last row is rejected: they get no upsert this run, so none of their
    events either (an event would create or update the contact without its properties)."""
    if spec.contact is None:
        return pl.Series([], dtype=pl.String).implode()
    rows = pl.concat(
        [
            checked.select(
                ROW, pl.col("__c.identity").alias("identity"), pl.col("__problems").is_not_null()
            ),
            settled.select(ROW, "identity", pl.lit(False).alias("__problems")),
        ]
    ).filter(pl.col("identity").is_not_null())
    last = rows.filter(pl.col(ROW) == pl.col(ROW).max().over("identity"))
    return last.filter(pl.col("__problems")).get_column("identity").implode()


def _by_both(spec: SyncConfig) -> bool:
    """Whether contacts carry an email and a user id: then two rows can reach one contact."""
    return spec.contact is not None and None not in (spec.contact.email, spec.contact.user_id)


def _one_contact_twice(spec: SyncConfig, checked: pl.DataFrame, settled: pl.DataFrame) -> pl.Expr:
    """The problem of each row that Loops would make one contact with another row's.

    Loops matches a contact by email or userId: `ann@x.com` with user id 1 and `ann@x.com` with
    user id 2 (or none) are one contact there, and the second upsert would rewrite the first's
    user id; user id 7 on `a@x.com` and on `b@x.com` is one contact too, and an event sent with
    the email of the row that lost would create a second, empty one. Which row is right is not
    ours to guess: every such row is rejected, naming the others. Rows Loops already holds
    (settled) count as the others too.
    """
    if not _by_both(spec) or spec.contact is None:
        return pl.col("__problems")
    pending = checked.filter(pl.col("__problems").is_null()).select(
        ROW, pl.col("__c.identity").alias("identity"), pl.col("__c.email").alias("email")
    )
    everyone = pl.concat([pending, settled.select(ROW, "identity", "email")])
    last = everyone.filter(pl.col(ROW) == pl.col(ROW).max().over("identity"))
    by_user_id = everyone.filter(pl.col("identity").str.starts_with("u:"))
    conflicts = [
        _sharing(last, "email", "identity", "'{}' is on rows {} with different user ids"),
        _sharing(by_user_id, "identity", "email", "user id {} is on rows {} with different emails"),
    ]
    reasons = (
        pl.concat(conflicts)
        .group_by(ROW)
        .agg(pl.col("reason").str.join("; "))
        .select(ROW, pl.lit(f"{spec.contact.email}\x1f") + pl.col("reason"))
    )
    if reasons.is_empty():
        return pl.col("__problems")
    conflict = pl.col(ROW).replace_strict(
        reasons.get_column(ROW), reasons.get_column("literal"), default=None
    )
    return pl.coalesce(pl.col("__problems"), conflict)


def _sharing(rows: pl.DataFrame, shared: str, differing: str, wording: str) -> pl.DataFrame:
    """Row and reason for each of `rows` whose `shared` value comes with more than one value of
    `differing` (a missing one counts as a value)."""
    groups = (
        rows.filter(pl.col(shared).is_not_null())
        .group_by(shared)
        .agg(pl.col(ROW).sort(), pl.col(differing).n_unique().alias("values"))
        .filter(pl.col("values") > 1)
    )
    named = pl.col(shared).str.replace(r"^u:", "")
    reason = pl.format(
        wording + ": Loops would make them one contact; keep one row per person",
        named,
        pl.col(ROW).cast(pl.List(pl.String)).list.join(", "),
    )
    return groups.select(reason.alias("reason"), ROW).explode(ROW).select(ROW, "reason")


def _count_settled_events(spec: SyncConfig, settled: pl.DataFrame, events: pl.DataFrame) -> int:
    """Settled event keys, each once, less those a pending row also has (the plan counts them).

    By fingerprint alone: two keys sharing one (about 1 in 10^7 runs of a million keys) would
    make the "already delivered" count one short. Only the count: nothing sent depends on it.
    """
    if not spec.events:
        return 0
    fingerprints = pl.concat(settled.get_column(f"__e{i}.fp") for i in range(len(spec.events)))
    pending = events.get_column("key").hash().implode()
    each_once = fingerprints.drop_nulls().unique()
    return each_once.filter(~each_once.is_in(pending)).len()


@dataclass(frozen=True)
class _Lookup:
    """Values Loops confirmed, found by a 64-bit fingerprint first, then compared whole.

    Polars cannot keep a hash table between calls, and probing a million 68-character hashes
    once per slice cost 2 s a run; a million integers cost a tenth of that. The fingerprint is
    Polars' own hash, stable within the run, which is all it is used for; a collision only
    means one more comparison.
    """

    table: pl.DataFrame  # fp, value

    @classmethod
    def of(cls, values: pl.Series) -> _Lookup:
        return cls(pl.DataFrame({"fp": values.hash(), "value": values}))

    def holds(self, values: pl.Series) -> pl.Expr:
        """Whether each of `values` is held: a column lined up with `values` by position, to be
        used on the frame they came from before any filter or sort."""
        probe = pl.DataFrame({"fp": values.hash(), "value": values}).with_row_index("i")
        found = (
            probe.join(self.table, on="fp", how="inner", suffix="_held")
            .filter(pl.col("value") == pl.col("value_held"))
            .get_column("i")
        )
        return pl.lit(probe.get_column("i").is_in(found.implode()))


@dataclass(frozen=True)
class _Held:
    """The ledger's snapshot as `_settle` asks it: which hashes and keys Loops holds, and the
    requests that failed (never settled: they are retried)."""

    contacts: _Lookup
    events: _Lookup
    retried: pl.Series
    legacy: bool

    @classmethod
    def of(cls, confirmed: Snapshot) -> _Held:
        return cls(
            _Lookup.of(confirmed.contacts.get_column("hash")),
            _Lookup.of(confirmed.events.get_column("key")),
            confirmed.failures.get_column("ref").implode(),
            confirmed.legacy_events,
        )

    def holds_event(self, frame: pl.DataFrame, prefix: str = "") -> pl.Expr:
        """Whether Loops holds each occurrence of `frame`: delivered to the same contact, found
        by its email or by its userId, as Loops finds contacts (or by its `ls1` key)."""
        held = self.events.holds(frame.get_column(prefix + "key_email"))
        held |= self.events.holds(frame.get_column(prefix + "key_user"))
        if self.legacy:
            held |= self.events.holds(frame.get_column(prefix + "legacy"))
        return held


def delivered_events(events: pl.DataFrame, confirmed: Snapshot) -> pl.Expr:
    """For the plan: whether Loops holds each of `events` (a `Mapped.events` frame)."""
    return _Held.of(confirmed).holds_event(events)


def _compact(frame: pl.DataFrame) -> pl.DataFrame:
    """The same rows in fresh buffers, so that the rows filtered out are freed.

    A filtered Polars string column still holds every buffer of the column it came from. Written
    as Arrow IPC without string views (the oldest compat level) only the values kept are copied
    (about 30 ms per 100k rows), and read back they sit in buffers of their own.
    """
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compat_level=pl.CompatLevel.oldest())
    buffer.seek(0)
    return pl.read_ipc(buffer)


def _coerced(
    fields: list[_Field], prefix: str, applies: pl.Expr | None, into: list[pl.Expr]
) -> list[_Field]:
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
            _Field(field.key, field.column, pl.col(value_name), pl.col(error_name), field.kind)
        )
    return columns


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
    invalid = pl.when(bad).then(
        pl.format("'{}' is not a valid email address", _raw_text(column, schema))
    )
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


def _raw_text(column: str, schema: pl.Schema) -> pl.Expr:
    """The cell as text in its canonical form, whatever the source's type (for messages).

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


def _text(column: str, schema: pl.Schema) -> pl.Expr:
    """The cell as trimmed, canonical text (see `_raw_text`); an empty cell is null."""
    text = _raw_text(column, schema)
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
    error = pl.when(bad).then(pl.format("'{}' is not a number", _raw_text(column, schema)))
    return pl.when(~bad).then(value), error


def _boolean(column: str, schema: pl.Schema) -> tuple[pl.Expr, pl.Expr]:
    if schema[column] == pl.Boolean:
        return pl.col(column), pl.lit(None, dtype=pl.String)
    if schema[column].is_numeric():
        number = pl.col(column)
        value = pl.when(number == 1).then(pl.lit(True)).when(number == 0).then(pl.lit(False))
        bad = number.is_not_null() & value.is_null()
        reason = pl.format("'{}' is not a boolean (1 or 0)", _raw_text(column, schema))
        return value, pl.when(bad).then(reason)
    word = _text(column, schema).str.to_lowercase()
    value = (
        pl.when(word.is_in(TRUE_WORDS))
        .then(pl.lit(True))
        .when(word.is_in(FALSE_WORDS))
        .then(pl.lit(False))
    )
    bad = word.is_not_null() & value.is_null()
    error = pl.when(bad).then(
        pl.format("'{}' is not a boolean (true/false, yes/no, 1/0)", _raw_text(column, schema))
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
    # Numbers of any type come as their canonical text: 20240102.0 from a widened Parquet
    # column is the same date as 20240102 from an integer one or from CSV text.
    text = _text(column, schema)
    numeric = _numeric_date(text)
    # RFC 3339 (a date, a time and an offset or Z: what exports mostly hold) parses fast; the
    # other ISO shapes are normalised into it first, only on the rows it did not parse.
    rfc3339 = text.str.to_datetime("%+", time_zone="UTC", strict=False, time_unit="ms")
    rest = pl.when(rfc3339.is_null() & ~text.str.contains(NUMBER_PATTERN)).then(text)
    iso: pl.Expr = rest
    for pattern, replacement in ISO_REWRITES:
        iso = iso.str.replace(pattern, replacement)
    candidates = [
        numeric,
        rfc3339.dt.epoch("ms"),
        iso.str.to_datetime("%+", time_zone="UTC", strict=False, time_unit="ms").dt.epoch("ms"),
    ]
    value = pl.coalesce(candidates)
    bad = text.is_not_null() & value.is_null()
    error = pl.when(bad).then(
        pl.format(
            "'{}' is not a date (ISO 8601, YYYY-MM-DD, YYYYMMDD, or epoch seconds/ms)",
            _raw_text(column, schema),
        )
    )
    return pl.when(~bad).then(value), error


def _numeric_date(text: pl.Expr) -> pl.Expr:
    """A date written as a number, in Unix milliseconds; null for any other number.

    Eight digits that form a valid date are YYYYMMDD (20240102). Nine digits or more are Unix
    seconds, or milliseconds from EPOCH_MS_THRESHOLD on. Anything shorter is no date anyone
    means: `2024` would be 2024 seconds after 1970, so it is rejected, not guessed.
    """
    digits = pl.when(text.str.contains(NUMBER_PATTERN)).then(text)
    compact = pl.when(digits.str.len_chars() == 8).then(
        digits.str.to_date("%Y%m%d", strict=False).cast(pl.Datetime("ms")).dt.epoch("ms")
    )
    number = digits.cast(pl.Int64, strict=False)
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


# --- rows, rejects, payloads ----------------------------------------------------------------


def _applies(event: EventSection, fields: list[_Field]) -> pl.Expr:
    """Whether the row makes this event: its `when` holds (a null comparison does not), and
    every `once_per` cell is filled (an order id that is empty is no order)."""
    applies = pl.sql_expr(event.when).fill_null(False) if event.when else pl.lit(True)
    occurrences = [f.value.is_not_null() for f in fields if f.key.startswith("once_per.")]
    return pl.all_horizontal(applies, *occurrences)


def _check_filters(spec: SyncConfig, frame: pl.DataFrame) -> None:
    """Every `when` must run on every row, or the run stops before anything is mapped.

    A strict CAST of a cell that does not convert (the README's `CAST(seats AS INT) > 3` on a
    cell 'n/a') stops Polars for the whole frame. Rejecting the row instead would hold back its
    contact and its other events for a filter's sake, and treating it as no match would hide a
    filter that does not do what it says; so it is a source error that names the filter, the
    row and its values, and says how to choose no match on purpose (TRY_CAST).
    """
    for index, event in enumerate(spec.events):
        if event.when is None:
            continue
        condition = pl.sql_expr(event.when)
        reason = _fails(frame, condition)
        if reason is not None:
            where = _first_failure(frame, condition)
            raise SourceError(
                f"events[{index}].when: `{event.when}` fails{where}: {reason}. {_advice(event)}"
            )


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


def _advice(event: EventSection) -> str:
    if re.search(r"(?<![A-Za-z_])CAST\s*\(", event.when or "", re.IGNORECASE):
        return (
            "Fix the cells, or write TRY_CAST(...) for CAST(...): a value that does not convert "
            f"then matches nothing, and its row gets no '{event.name}' event."
        )
    return "Fix the cells, or the condition."


def _shown(value: object) -> str:
    if value is None:
        return "NULL"
    text = str(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"'{text}'" if isinstance(value, str) else text


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


def _identity(fields: list[_Field]) -> pl.Expr:
    """A contact's ledger identity: its userId where mapped (emails change), else its email."""
    values = {f.key: f.value for f in fields}
    email, user_id = values.get("email"), values.get("userId")
    by_email = pl.lit("e:") + email if email is not None else pl.lit(None, pl.String)
    if user_id is None:
        return by_email
    return pl.when(user_id.is_not_null()).then(pl.lit("u:") + user_id).otherwise(by_email)


def _identifiers(fields: list[_Field], prefix: str) -> list[pl.Expr]:
    """The email and userId sent, beside the body: the planner compares them without parsing."""
    values = {f.key: f.value for f in fields}
    return [
        values.get(key, pl.lit(None, pl.String)).cast(pl.String).alias(prefix + key)
        for key in ("email", "userId")
    ]


def _contact_columns(section: ContactSection, fields: list[_Field]) -> list[pl.Expr]:
    sent = [f for f in fields if f.key != "__identity"]
    return [
        _identity(sent).alias("__c.identity"),
        _body(sent, clear=section.empty == "clear").alias("__c.body"),
        *_identifiers(sent, "__c."),
    ]


def _ls1_forms(
    fields: list[_Field], schema: pl.Schema, prefix: str, into: list[pl.Expr]
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
    fields: list[_Field],
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
        as_before = [
            _Field(f.key, f.column, old.get(f.key, f.value), f.error, f.kind) for f in sent
        ]
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
        json_object({name: json_value(value) for name, value in once_per.items()}).alias(
            prefix + "once_per"
        ),
        _body(payload, clear=False, event_name=event.name).alias(prefix + "body"),
        *_identifiers(sent, prefix),
    ]


def _contacts(
    spec: SyncConfig, checked: pl.DataFrame, settled: pl.DataFrame
) -> tuple[pl.DataFrame, int, int]:
    """One body per identity, from its last row; the count of duplicates; and of the identities
    whose last row is settled (Loops holds it: unchanged). A rejected last row wins too: the
    identity is then sent nothing, rather than the older values of an earlier row.

    `foldable`: whether this upsert may ride on an event (see `plan`): it has an email, and
    its body holds neither a null (`empty: clear`) nor `subscribed`, whose meaning on an event
    Loops does not document.
    """
    if spec.contact is None:
        return _empty_contacts(), 0, 0
    section = spec.contact
    plain = section.empty == "skip" and "subscribed" not in section.properties
    ranked = checked.select(
        ROW,
        pl.col("__c.identity").alias("identity"),
        pl.col("__problems").is_null().alias("__valid"),
        pl.col("__c.body").alias("body"),
        pl.col("__c.email").alias("email"),
        pl.col("__c.userId").alias("userId"),
        (pl.col("__c.email").is_not_null() & pl.lit(plain)).alias("foldable"),
        pl.col("__c.hash").alias("hash"),
    ).filter(pl.col("identity").is_not_null())
    every_row = pl.concat([ranked.select(ROW, "identity"), settled.select(ROW, "identity")])
    last_rows = every_row.group_by("identity").agg(pl.col(ROW).max()).get_column(ROW).implode()
    is_last = pl.col(ROW).is_in(last_rows)
    last_settled = settled.filter(is_last).height
    duplicates = ranked.filter(pl.col("__valid") & ~is_last).height
    duplicates += settled.height - last_settled
    keep = ranked.filter(pl.col("__valid") & is_last).drop("__valid")
    return keep, duplicates, last_settled


def _empty_contacts() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            ROW: pl.UInt32,
            "identity": pl.String,
            "body": pl.String,
            "email": pl.String,
            "userId": pl.String,
            "foldable": pl.Boolean,
            "hash": pl.String,
        }
    )


def _events(spec: SyncConfig, valid: pl.DataFrame) -> pl.DataFrame:
    """One line per occurrence (the last row of each key), in row order.

    `identity` is the contact the event goes with: the identity of its row's contact upsert
    where the sync has one, so that the upsert is sent first even when the event names the
    contact by another column; else the event's own identity.
    """
    schema = {
        ROW: pl.UInt32,
        "identity": pl.String,
        "event": pl.String,
        "key": pl.String,
        "key_email": pl.String,
        "key_user": pl.String,
        "legacy": pl.String,
        "once_per": pl.String,
        "body": pl.String,
        "email": pl.String,
        "userId": pl.String,
    }
    frames = [pl.DataFrame(schema=schema)]
    for index, event in enumerate(spec.events):
        prefix = f"__e{index}."
        own = pl.col(prefix + "identity")
        identity = pl.coalesce("__c.identity", own) if spec.contact else own
        legacy = prefix + "legacy"
        rows = valid.filter(pl.col(prefix + "applies")).select(
            ROW,
            identity.alias("identity"),
            pl.lit(event.name).alias("event"),
            *[
                pl.col(prefix + name).alias(name)
                for name in ("key", "key_email", "key_user", "once_per", "body", "email", "userId")
            ],
            (pl.col(legacy) if legacy in valid.columns else pl.lit(None, pl.String)).alias(
                "legacy"
            ),
        )
        frames.append(rows.filter(pl.col("key").is_last_distinct()).select(list(schema)))
    return pl.concat(frames, rechunk=False).sort(ROW, maintain_order=True)


def _body(fields: list[_Field], *, clear: bool, event_name: str | None = None) -> pl.Expr:
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
        text = json_value(field.value, number=field.kind == "number")
        nullable = clear and not group and name not in ("email", "userId", "subscribed")
        member = text if nullable else pl.when(field.value.is_not_null()).then(text)
        (groups.setdefault(group, {}) if group else top)[name] = member
    for group, members in groups.items():
        inner = json_object(members)
        top[group] = pl.when(inner != "{}").then(inner)
    if event_name is not None:
        top["eventName"] = pl.lit(orjson.dumps(event_name).decode())
    return json_object(top)
