"""Gather the mapped slices into what a run may send, and the rows it cannot.

Planning, part one: each slice is settled against the ledger as it comes (`sync.settle`: what
Loops already holds is set aside, narrow), then the whole source is deduplicated
(`sync.dedupe`: the last row of a contact or an occurrence wins, rows Loops would merge are
rejected). `sync.plan` then diffs the candidates against the ledger and orders them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

from sync import dedupe, mapping
from sync.columns import COLUMN_SEPARATOR, PROBLEM_SEPARATOR, PROBLEMS, ROW
from sync.config import SyncConfig
from sync.held import Held
from sync.settle import NOTHING_LEARNED, count_settled_events, settle

__all__ = ["Mapped", "gather", "map_rows"]


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
    # Delivered occurrences whose other identifier the ledger lacks (see `sync.settle`).
    learned: pl.DataFrame = dataclasses.field(default_factory=NOTHING_LEARNED.clear)


def gather(spec: SyncConfig, slices: Iterable[pl.DataFrame], held: Held | None) -> Mapped:
    """Settle each mapped slice against what Loops holds (None: nothing), then deduplicate
    the whole: the candidates to send, the rejects, and what was counted."""
    pieces, rows_read = [], 0
    for piece in slices:
        rows_read += piece.height
        pieces.append(settle(spec, piece, held))
    checked = pl.concat([piece.pending for piece in pieces], rechunk=False)
    settled = pl.concat([piece.settled for piece in pieces], rechunk=False)
    checked = checked.with_columns(dedupe.one_contact_twice(spec, checked, settled).alias(PROBLEMS))
    rejects = _rejects(checked)
    contacts, duplicates, contacts_settled = dedupe.contacts(spec, checked, settled)
    valid = checked.filter(pl.col(PROBLEMS).is_null())
    events = dedupe.events(spec, valid).filter(
        ~pl.col("identity").is_in(dedupe.rejected_last(spec, checked, settled)).fill_null(False)
    )
    events_settled = count_settled_events(spec, settled, events)
    skipped = (
        tuple(spec.contact.properties) if spec.contact and spec.contact.empty == "skip" else ()
    )
    return Mapped(
        rows_read,
        contacts,
        events,
        rejects,
        duplicates,
        contacts_settled,
        events_settled,
        skipped,
        pl.concat([piece.learned for piece in pieces]),
    )


def map_rows(spec: SyncConfig, frame: pl.DataFrame, *, held: Held | None = None) -> Mapped:
    """Map a whole frame (which has ROW) and gather it: for tests and small sources."""
    ls1_keys = held is not None and held.legacy
    slices = frame.iter_slices(mapping.SLICE_ROWS)
    return gather(spec, mapping.map_slices(spec, slices, frame.schema, ls1_keys=ls1_keys), held)


def _rejects(checked: pl.DataFrame) -> pl.DataFrame:
    problems = (
        checked.filter(pl.col(PROBLEMS).is_not_null())
        .select(ROW, pl.col(PROBLEMS).str.split(PROBLEM_SEPARATOR).alias("p"))
        .explode("p")
        .select(
            ROW,
            pl.col("p")
            .str.split_exact(COLUMN_SEPARATOR, 1)
            .struct.rename_fields(["column", "reason"]),
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
