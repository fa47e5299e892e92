"""Deduplicate the whole source: the last row of a contact or an occurrence wins, and rows that
Loops would make one contact are rejected together.

This is the one step that needs every row at once, the settled ones included (Loops holds them,
yet a later row of theirs still wins over an earlier one). So it looks at a census, not at the
rows: each row's number, whether it is settled or valid, and 128-bit fingerprints of its
contact identity, email and event keys, about 40 bytes a row whatever the bodies hold. The
decisions come back as masks over row numbers, which planning applies to each slice in turn.

A fingerprint is two 64-bit Polars hashes with different seeds: two different identities share
one with odds of about n² / 2^129, under 10^-24 for ten million rows. The hashes are stable
within a run, which is all they are used for. Each grouping runs a partition of the
fingerprints at a time, so that its hash table stays small.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import polars as pl

from sync.columns import COLUMN_SEPARATOR, PROBLEMS, ROW, contact_column, event_column
from sync.config_model import SyncConfig

__all__ = ["Decisions", "by_both", "census", "conflict_problems", "decide"]

# Rows per partition of a grouping: a hash table of a million fingerprints is about 90 MB.
PARTITION_ROWS = 1_000_000
SETTLED, VALID, USER = "settled", "valid", "user"
Frame = pl.DataFrame | pl.LazyFrame


def fingerprint(value: pl.Expr, name: str) -> list[pl.Expr]:
    """`value` as two UInt64 columns `name.1` and `name.2`, null where `value` is null."""
    present = value.is_not_null()
    return [pl.when(present).then(value.hash(seed=seed)).alias(f"{name}.{seed}") for seed in (1, 2)]


def _fp(name: str) -> list[str]:
    return [f"{name}.1", f"{name}.2"]


def census(spec: SyncConfig, rows: pl.DataFrame, *, settled: bool) -> pl.DataFrame:
    """What deduplication needs of each of `rows` (a mapped slice), and nothing else.

    An event key is counted where the event applies to a valid row: the rows a settled key
    comes from are valid by definition.
    """
    valid = pl.lit(True) if settled else pl.col(PROBLEMS).is_null()
    columns = [pl.col(ROW), pl.lit(settled).alias(SETTLED), valid.alias(VALID)]
    if spec.contact:
        identity = pl.col(contact_column("identity"))
        columns += fingerprint(identity, "id")
    if by_both(spec):
        columns += fingerprint(pl.col(contact_column("email")), "email")
        columns.append(identity.str.starts_with("u:").fill_null(False).alias(USER))
    for index in range(len(spec.events)):
        applies = pl.col(event_column(index, "applies")) & valid
        key = pl.when(applies).then(pl.col(event_column(index, "key")))
        columns += fingerprint(key, f"key{index}")
    return rows.select(columns)


def by_both(spec: SyncConfig) -> bool:
    """Whether contacts carry an email and a user id: then two rows can reach one contact."""
    return spec.contact is not None and None not in (spec.contact.email, spec.contact.user_id)


@dataclass(frozen=True)
class Decisions:
    """What deduplication decided, for planning to apply slice by slice.

    `conflicts`: row, kind ("email" or "user id"), rows: the rows Loops would make one contact
    with others. `contacts`: per row number, whether the row's upsert is its contact's to send
    (valid, pending, its contact's last row). `events`: per event, per row number, whether the
    row's occurrence is sent (its key's last valid row, its contact's last row not rejected).
    """

    conflicts: pl.DataFrame
    contacts: pl.Series
    events: tuple[pl.Series, ...]
    duplicates: int = 0
    contacts_settled: int = 0  # contacts whose last row Loops holds: unchanged
    events_settled: int = 0  # occurrences only settled rows have: already delivered

    @staticmethod
    def picked(mask: pl.Series) -> pl.Expr:
        """`mask` (by row number) for each row of a frame with ROW."""
        return pl.lit(mask).gather(pl.col(ROW).cast(pl.Int64)).fill_null(False)


def decide(spec: SyncConfig, everyone: pl.LazyFrame) -> Decisions:
    """Deduplicate the census of the whole source (`census` of every slice, in row order).

    The census is the one thing here as large as the source, so it is never held whole (it is
    read from the run's spool): each step reads the columns it needs of the rows it needs, a
    partition at a time (`_parts`)."""
    size = int(everyone.select(pl.col(ROW).max().fill_null(0)).collect().item()) + 1
    pending = ~pl.col(SETTLED)
    conflicts = _conflicts(everyone) if by_both(spec) else _no_conflicts()
    if not conflicts.is_empty():
        conflicting = pl.col(ROW).is_in(conflicts.get_column(ROW).implode())
        everyone = everyone.with_columns((pl.col(VALID) & ~conflicting).alias(VALID))
    if spec.contact is None:
        is_last = pl.repeat(False, size, eager=True)
        contacts = is_last
        rejected_last = pl.DataFrame()
        duplicates = contacts_settled = 0
    else:
        has_contact = pl.col("id.1").is_not_null()
        is_last = _mask(size, _last_rows(everyone, _fp("id"), has_contact))
        last = Decisions.picked(is_last)
        # A row of no contact (`contact.when` drops it) duplicates none.
        earlier = ~last & has_contact
        counted = (
            everyone.select(
                (pending & pl.col(VALID) & earlier).sum().alias("pending"),
                (pl.col(SETTLED) & earlier).sum().alias("settled"),
                (pl.col(SETTLED) & last).sum().alias("last_settled"),
            )
            .collect(engine="streaming")
            .row(0, named=True)
        )
        duplicates = int(counted["pending"]) + int(counted["settled"])
        contacts_settled = int(counted["last_settled"])
        contacts = _mask(size, _where(everyone, pending & pl.col(VALID) & last, [ROW])[ROW])
        rejected_last = _where(everyone, pending & ~pl.col(VALID) & last, _fp("id"))
    events, events_settled = [], 0
    for index in range(len(spec.events)):
        sent = _sent_events(everyone, index, rejected_last, size)
        events.append(sent)
        events_settled += _settled_only(everyone, index, sent)
    return Decisions(
        conflicts, contacts, tuple(events), duplicates, contacts_settled, events_settled
    )


def _where(frame: Frame, condition: pl.Expr, columns: list[str]) -> pl.DataFrame:
    """`columns` of the rows of `frame` where `condition` holds, the others never read."""
    return frame.lazy().filter(condition).select(columns).collect(engine="streaming")


def _sent_events(
    everyone: pl.LazyFrame, index: int, rejected_last: pl.DataFrame, size: int
) -> pl.Series:
    """The rows whose occurrence of event `index` is sent: the last valid pending row of each
    key, unless its contact's last row is rejected (the contact gets no upsert this run, so
    none of its events either: an event would update it without its properties)."""
    key = _fp(f"key{index}")
    candidate = ~pl.col(SETTLED) & pl.col(VALID) & pl.col(key[0]).is_not_null()
    last = _last_rows(everyone, key, candidate)
    if not rejected_last.is_empty():
        rows = _where(everyone, pl.col(ROW).is_in(last.implode()), [ROW, *_fp("id")])
        last = rows.join(rejected_last, on=_fp("id"), how="anti", nulls_equal=False)[ROW]
    return _mask(size, last)


def _settled_only(everyone: pl.LazyFrame, index: int, sent: pl.Series) -> int:
    """Occurrences of event `index` on settled rows only, each once (the plan counts those a
    pending row also has)."""
    key = _fp(f"key{index}")
    settled = pl.col(SETTLED) & pl.col(key[0]).is_not_null()

    def pending() -> pl.DataFrame:
        return _where(everyone, Decisions.picked(sent), key)

    found = 0
    for part, others in _parts(everyone, key[0], settled, key, pending):
        found += part.unique().join(others, on=key, how="anti").height
    return found


def _conflicts(everyone: pl.LazyFrame) -> pl.DataFrame:
    """Rows Loops would make one contact with another (see `conflict_problems`): among each
    contact's last row, an email on more than one contact; among every row, a user id with more
    than one email (a missing one counts). Rows Loops holds (settled) count as the others too."""
    counted = pl.col(VALID) & pl.col("id.1").is_not_null()
    columns = [ROW, *_fp("id"), *_fp("email"), USER]
    last = _where(
        everyone, pl.col(ROW).is_in(_last_rows(everyone, _fp("id"), counted).implode()), columns
    )
    shared_email = _sharing(last, pl.col("email.1").is_not_null(), "email", "id")
    shared_id = _sharing(everyone, counted & pl.col(USER), "id", "email")
    return pl.concat(
        [
            shared_email.with_columns(pl.lit("email").alias("kind")),
            shared_id.with_columns(pl.lit("user id").alias("kind")),
            _no_conflicts(),
        ],
        how="diagonal",
    ).select(ROW, "kind", "rows")


def _no_conflicts() -> pl.DataFrame:
    return pl.DataFrame(schema={ROW: pl.UInt32, "kind": pl.String, "rows": pl.String})


def _sharing(rows: Frame, where: pl.Expr, shared: str, differing: str) -> pl.DataFrame:
    """Row and the list of rows for each of `rows` (those `where` holds) whose `shared` value
    comes with more than one `differing` value (a missing one counts as a value)."""
    found = []
    values = pl.struct(pl.col(_fp(differing)).fill_null(0))
    columns = [ROW, *_fp(shared), *_fp(differing)]
    for part, _ in _parts(rows, f"{shared}.1", where, columns):
        groups = (
            part.group_by(_fp(shared))
            .agg(pl.col(ROW).sort(), values.n_unique().alias("values"))
            .filter(pl.col("values") > 1)
        )
        listed = pl.col(ROW).cast(pl.List(pl.String)).list.join(", ").alias("rows")
        found.append(groups.select(ROW, listed).explode(ROW))
    return pl.concat(found) if found else pl.DataFrame(schema={ROW: pl.UInt32, "rows": pl.String})


def conflict_problems(spec: SyncConfig, piece: pl.DataFrame, conflicts: pl.DataFrame) -> pl.Expr:
    """PROBLEMS, with the conflict of each row of `piece` that has one.

    Loops matches a contact by email or userId: `ann@x.com` with user id 1 and `ann@x.com` with
    user id 2 (or none) are one contact there, and the second upsert would rewrite the first's
    user id; user id 7 on `a@x.com` and on `b@x.com` is one contact too, and an event sent with
    the email of the row that lost would create a second, empty one. Which row is right is not
    ours to guess: every such row is rejected, naming the others.
    """
    if conflicts.is_empty() or spec.contact is None:
        return pl.col(PROBLEMS)
    mine = piece.select(ROW, contact_column("email"), contact_column("identity")).join(
        conflicts, on=ROW, how="inner"
    )
    if mine.is_empty():
        return pl.col(PROBLEMS)
    shared = (
        pl.when(pl.col("kind") == "email")
        .then(pl.format("'{}'", pl.col(contact_column("email"))))
        .otherwise(pl.format("user id {}", pl.col(contact_column("identity")).str.slice(2)))
    )
    differing = (
        pl.when(pl.col("kind") == "email").then(pl.lit("user ids")).otherwise(pl.lit("emails"))
    )
    reasons = (
        mine.with_columns(
            pl.format(
                "{} is on rows {} with different {}: Loops would make them one contact; "
                "keep one row per person",
                shared,
                pl.col("rows"),
                differing,
            ).alias("reason")
        )
        .with_columns((pl.col("kind") != "email").alias("__order"))
        .sort(ROW, "__order")
        .group_by(ROW, maintain_order=True)
        .agg(pl.col("reason").str.join("; "))
        .select(ROW, pl.lit(f"{spec.contact.email}{COLUMN_SEPARATOR}") + pl.col("reason"))
    )
    conflict = pl.col(ROW).replace_strict(
        reasons.get_column(ROW), reasons.get_column("literal"), default=None
    )
    return pl.coalesce(pl.col(PROBLEMS), conflict)


def _last_rows(rows: Frame, key: list[str], where: pl.Expr) -> pl.Series:
    """The number of the last of `rows` (those `where` holds) with each value of `key`."""
    found = [
        part.group_by(key).agg(pl.col(ROW).max()).get_column(ROW)
        for part, _ in _parts(rows, key[0], where, [ROW, *key])
    ]
    return pl.concat(found) if found else pl.Series(ROW, [], dtype=pl.UInt32)


def _parts(
    rows: Frame,
    by: str,
    where: pl.Expr,
    columns: list[str],
    other: Callable[[], pl.DataFrame] | None = None,
) -> Iterator[tuple[pl.DataFrame, pl.DataFrame]]:
    """`columns` of the rows where `where` holds (and what `other` makes, cut the same way and
    made only when some row is to be grouped), a partition of `by`'s values at a time: each
    grouping's hash table stays small, and no more than a partition of the census is copied at
    once. Partitions are counted by the rows `where` holds for, so that a grouping of a few rows
    (the settled rows of a first sync, the pending rows of a nightly run) reads the census
    once, not once per million rows of it."""
    height = rows.lazy().select(where.sum()).collect(engine="streaming").item()
    if not height:
        return
    count = max(1, height // PARTITION_ROWS)
    others = other() if other is not None else pl.DataFrame()
    for part in range(count):
        picked = pl.col(by) % count == part if count > 1 else pl.lit(True)
        chosen = _where(rows, where & picked, columns)
        yield chosen, others.filter(picked) if other is not None else others


def _mask(size: int, rows: pl.Series) -> pl.Series:
    """A boolean per row number below `size`, true for `rows`."""
    mask = pl.repeat(False, size, eager=True)
    if rows.len():
        mask = mask.scatter(rows.cast(pl.Int64), True)
    return mask
