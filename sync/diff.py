"""Diff a slice of candidates against the ledger: what Loops lacks becomes lines to send.

A contact's upsert is new (the ledger never delivered it), changed (another payload, or `--full`),
a retry (it failed before) or unchanged (not sent). An occurrence is new, a retry, or held (not
sent; one held under earlier `once_per` columns is adopted). Besides the lines, the diff counts
each status, the values Loops keeps that the source left empty, and the side effects of the
upserts (`sync.side_effects`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import orjson
import polars as pl

from sync.candidates import Candidates
from sync.columns import ROW
from sync.held import Held
from sync.once_per import held_under_other_once_per
from sync.side_effects import SideEffects, side_effects_of

__all__ = ["OCCURRENCE_COLUMNS", "Diff", "diff"]

# An event's `Occurrence`, column by column, in the plan frame (null on contact lines).
OCCURRENCE_COLUMNS = ("key_email", "key_user", "occurrence_email", "occurrence_user_id", "once_per")


@dataclass(frozen=True)
class Diff:
    """One slice's lines to send (kind, row, identity, ref, body, event, status, email, userId,
    foldable and an event's occurrence), with what was counted on the way."""

    lines: pl.DataFrame
    counts: Counter[str]
    kept_in_loops: dict[str, int]
    side_effects: SideEffects
    adopted: pl.DataFrame  # occurrences an event delivered under other `once_per` stands for


def diff(
    candidates: Candidates,
    held: Held,
    *,
    full: bool = False,
    skipped_when_empty: tuple[str, ...] = (),
    cleared_when_empty: tuple[str, ...] = (),
) -> Diff:
    """`full`: every contact counts as changed; `skipped_when_empty`, `cleared_when_empty`: the
    contact properties `empty: skip` leaves out and those `empty: clear` sends a null for."""
    contacts = _contact_status(candidates.contacts, held, full=full)
    events, adopted = _event_status(candidates.events, held)
    counts: Counter[str] = Counter()
    for status in ("new", "changed", "unchanged", "retry"):
        counts[f"contacts_{status}"] += _count(contacts, status)
    for status in ("new", "retry"):
        counts[f"events_{status}"] += _count(events, status)
    counts["events_already_delivered"] += candidates.events.height - events.height
    return Diff(
        _lines(contacts, events),
        counts,
        _kept_in_loops(contacts, held, skipped_when_empty),
        _side_effects(contacts, held, cleared_when_empty),
        adopted,
    )


def _contact_status(candidates: pl.DataFrame, held: Held, *, full: bool) -> pl.DataFrame:
    """Each candidate upsert with its status: retry (it failed before), new (Loops never had
    the contact from us), changed (another payload, or `full`), unchanged."""
    hashes, identities = candidates.get_column("hash"), candidates.get_column("identity")
    return candidates.with_columns(
        pl.when(pl.lit(held.failed(identities)))
        .then(pl.lit("retry"))
        .when(~pl.lit(held.knows_contacts(identities)))
        .then(pl.lit("new"))
        .when(pl.lit(full) | ~pl.lit(held.holds_payloads(hashes)))
        .then(pl.lit("changed"))
        .otherwise(pl.lit("unchanged"))
        .alias("status")
    )


def _event_status(candidates: pl.DataFrame, held: Held) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The occurrences Loops lacks, each with its status (new, or retry after a failure), and
    those an event delivered under earlier `once_per` columns stands for (to adopt)."""
    not_held = candidates.filter(~held.holds_event(candidates))
    stands_for = held_under_other_once_per(not_held, held.other_once_per)
    fresh = not_held.filter(~stands_for)
    events = fresh.with_columns(
        pl.when(pl.lit(held.failed(fresh.get_column("key"))))
        .then(pl.lit("retry"))
        .otherwise(pl.lit("new"))
        .alias("status")
    )
    return events, not_held.filter(stands_for)


def _lines(contacts: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """One line per request to send, contacts and events alike."""
    return pl.concat(
        [
            contacts.filter(pl.col("status") != "unchanged").select(
                pl.lit("contact").alias("kind"),
                ROW,
                "identity",
                pl.col("hash").alias("ref"),
                "body",
                pl.lit(None, dtype=pl.String).alias("event"),
                "status",
                "email",
                "userId",
                "foldable",
                *(pl.lit(None, pl.String).alias(name) for name in OCCURRENCE_COLUMNS),
            ),
            events.select(
                pl.lit("event").alias("kind"),
                ROW,
                "identity",
                pl.col("key").alias("ref"),
                "body",
                "event",
                "status",
                "email",
                "userId",
                pl.lit(False).alias("foldable"),
                pl.col("key_email"),
                pl.col("key_user"),
                pl.col("email").alias("occurrence_email"),
                pl.col("userId").alias("occurrence_user_id"),
                pl.col("once_per"),
            ),
        ],
        rechunk=False,
    )


def _kept_in_loops(contacts: pl.DataFrame, held: Held, skipped: tuple[str, ...]) -> dict[str, int]:
    """Per property, the contacts to send whose value Loops holds from an earlier run and the
    source now leaves empty: under `empty: skip` Loops keeps that value."""
    sent = contacts.filter(pl.col("status") != "unchanged")
    if not skipped or sent.is_empty():
        return {}
    changed = sent.join(held.props_of(sent.get_column("identity")), on="identity", how="inner")
    if changed.is_empty():
        return {}
    counts = changed.select(
        (
            pl.col("props").str.contains(f",{name},", literal=True)
            & ~pl.col("body").str.contains(orjson.dumps(name).decode() + ":", literal=True)
        )
        .sum()
        .alias(name)
        for name in skipped
    ).row(0, named=True)
    return {name: int(count) for name, count in counts.items() if count}


def _side_effects(contacts: pl.DataFrame, held: Held, clearable: tuple[str, ...]) -> SideEffects:
    """What the upserts to send do besides storing values: a contact is created when the
    ledger never had it (new, or a retry of one whose every upsert failed)."""
    sent = contacts.filter(pl.col("status") != "unchanged")
    status = sent.get_column("status")
    created = (status == "new") | ((status == "retry") & ~held.knows_contacts(sent["identity"]))
    return side_effects_of(sent, created, clearable)


def _count(frame: pl.DataFrame, status: str) -> int:
    return frame.filter(pl.col("status") == status).height
