"""Diff the mapped rows against the ledger: only new, changed or previously failed work is sent.

The plan stays a Polars frame (one line per request) until the sender asks for jobs, which come
out a bounded slice at a time. A job holds one identity's requests, its upsert first, so that an
email triggered by an event sees the new properties.

Loops counts requests, so the one way past N / rate is to send fewer: `events/send` also takes a
contact's properties and mailing lists and updates (or creates) the contact with them. When an
identity needs both an upsert and a new event and has an email, the upsert is folded into its
first event: one request instead of two. Not folded: contacts with only a userId (Loops wants an
event's userId to exist already), bodies with a null (`empty: clear`) or `subscribed`, whose
meaning on an event Loops does not document.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path

import orjson
import polars as pl

from sync.candidates import Mapped
from sync.columns import ROW
from sync.held import Held
from sync.keys import canonical_json, json_object, json_value
from sync.model import Job, Occurrence, Request
from sync.snapshot import once_per_columns

__all__ = ["Plan", "make_plan"]

SLICE_ROWS = 20_000
# An event's `Occurrence`, column by column, in the plan frame (null on contact lines).
OCCURRENCE_COLUMNS = ("key_email", "key_user", "occurrence_email", "occurrence_user_id", "once_per")


@dataclass(frozen=True)
class Plan:
    """What a run will send, and why the rest is skipped.

    `lines`: kind, row, identity, ref, body, event, status (new, changed, retry), fold and an
    event's occurrence, in send order (each identity's upsert before its events): in memory,
    or scanned from a spool file once `spooled`, so that sending holds a slice at a time.
    `size`: those lines, planned requests before folding (what progress and counts speak of).
    """

    lines: pl.LazyFrame
    size: int
    counts: dict[str, int] = field(default_factory=dict)
    # Occurrences that an event delivered under earlier `once_per` columns stands for.
    adopted: pl.DataFrame = field(default_factory=pl.DataFrame)
    kept_in_loops: dict[str, int] = field(default_factory=dict)

    @property
    def requests(self) -> pl.DataFrame:
        """Every line at once: for a preview, a test or a benchmark, not for sending."""
        return self.lines.collect()

    def spooled(self, path: Path) -> Plan:
        """The same plan written to `path` (Arrow IPC) and read back from there as it is sent."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.lines.sink_ipc(path)
        return replace(self, lines=pl.scan_ipc(path))

    def identities_from(self, line: int) -> int:
        """How many identities the lines from `line` on belong to (what --limit left)."""
        return int(self.lines.slice(line).select(pl.col("identity").n_unique()).collect().item())

    @property
    def request_count(self) -> int:
        """Requests a run will make, after folding upserts into events."""
        return self.size - self.counts.get("folded", 0)

    def jobs(self, limit: int | None = None) -> Iterator[Job]:
        """The plan as jobs, a slice at a time; `limit` caps the number of jobs."""
        if limit is not None:
            yield from islice(self.jobs(), limit)
            return
        current: list[Request] = []
        folds = False
        columns = ("kind", ROW, "identity", "ref", "body", "event", "fold", *OCCURRENCE_COLUMNS)
        for piece in self.lines.collect_batches(chunk_size=SLICE_ROWS):
            for kind, row, identity, ref, body, event, fold, *found_by in piece.select(
                columns
            ).iter_rows():
                if current and current[0].identity != identity:
                    yield self._job(current, folds)
                    current = []
                if kind == "contact":
                    folds = bool(fold)
                occurrence = Occurrence(*found_by) if kind == "event" else None
                current.append(
                    Request(kind, row, identity, ref, body.encode(), event, None, occurrence)
                )
        if current:
            yield self._job(current, folds)

    def _job(self, requests: list[Request], folds: bool) -> Job:
        if folds:
            return Job(requests[0].identity, carry(requests[0], requests[1:]))
        return Job(requests[0].identity, tuple(requests))


def carry(contact: Request, events: list[Request]) -> tuple[Request, ...]:
    """The first event carries the contact's properties; the other events follow it."""
    first = events[0]
    merged = orjson.loads(contact.body) | orjson.loads(first.body)
    carrier = Request(
        "event",
        first.row,
        first.identity,
        first.ref,
        canonical_json(merged),
        first.event,
        folded=contact,
        occurrence=first.occurrence,
    )
    return (carrier, *events[1:])


def make_plan(mapped: Mapped, held: Held, *, full: bool = False) -> Plan:
    """Compare with what Loops holds; `full` sends every contact again."""
    candidates = mapped.contacts
    hashes, identities = candidates.get_column("hash"), candidates.get_column("identity")
    contacts = candidates.with_columns(
        pl.when(pl.lit(held.failed(identities)))
        .then(pl.lit("retry"))
        .when(~pl.lit(held.knows_contacts(identities)))
        .then(pl.lit("new"))
        .when(pl.lit(full) | ~pl.lit(held.holds_payloads(hashes)))
        .then(pl.lit("changed"))
        .otherwise(pl.lit("unchanged"))
        .alias("status")
    )
    not_held = mapped.events.filter(~held.holds_event(mapped.events))
    stands_for = _held_under_other_once_per(not_held, held.other_once_per)
    adopted = not_held.filter(stands_for)
    fresh = not_held.filter(~stands_for)
    events = fresh.with_columns(
        pl.when(pl.lit(held.failed(fresh.get_column("key"))))
        .then(pl.lit("retry"))
        .otherwise(pl.lit("new"))
        .alias("status")
    )
    to_send = pl.concat(
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
    # Each identity's requests together, upsert first, in source order of the identity's first row.
    ordered = (
        to_send.with_columns(pl.col(ROW).min().over("identity").alias("__first"))
        .sort(["__first", "identity", pl.col("kind") != "contact", ROW])
        .with_columns(_folds().alias("fold"))
        .drop("__first", "email", "userId", "foldable")
    )
    counts = {
        "contacts_new": _count(contacts, "new"),
        "contacts_changed": _count(contacts, "changed"),
        "contacts_unchanged": _count(contacts, "unchanged") + mapped.contacts_settled,
        "contacts_retry": _count(contacts, "retry"),
        "events_new": _count(events, "new"),
        "events_retry": _count(events, "retry"),
        "events_already_delivered": mapped.events.height - events.height + mapped.events_settled,
        "folded": int(ordered.get_column("fold").sum()),
    }
    kept = _kept_in_loops(contacts, held, mapped.skipped_when_empty)
    return Plan(ordered.lazy(), ordered.height, counts, adopted, kept)


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


def _held_under_other_once_per(events: pl.DataFrame, held: pl.DataFrame) -> pl.Series:
    """Whether an event delivered under earlier `once_per` columns stands for each occurrence.

    When an event's `once_per` columns change, its delivered occurrences are compared with
    today's on the columns both have: with columns removed, a contact that had the event has
    it; with columns added, the occurrences in the source at the first run after the change
    stand for the one delivered before (they are recorded as delivered, `Plan.adopted`), and
    occurrences that appear later are new. Not for a contact that already has an occurrence
    under today's columns: the change was adopted for it before. `held`: `Snapshot.other_once_per`.
    """
    covered = pl.repeat(False, events.height, eager=True).alias("covered")
    if held.is_empty() or events.is_empty():
        return covered
    indexed = events.with_row_index("__i")
    found: list[pl.Series] = []
    for event in held.get_column("event").unique().to_list():
        records = held.filter(pl.col("event") == event)
        today = indexed.filter(pl.col("event") == event)
        if today.is_empty():
            continue
        columns = set(today.head(1).select(once_per_columns()).item().split("\x1f"))
        adopted_before = records.filter(pl.col("current"))
        known_emails = adopted_before.get_column("email").drop_nulls().implode()
        known_ids = adopted_before.get_column("user_id").drop_nulls().implode()
        today = today.filter(
            ~pl.col("email").is_in(known_emails).fill_null(False)
            & ~pl.col("userId").is_in(known_ids).fill_null(False)
        )
        earlier = records.filter(~pl.col("current"))
        for signature in earlier.select(once_per_columns().unique()).to_series().to_list():
            same = earlier.filter(once_per_columns() == signature)
            shared = sorted(set(signature.split("\x1f")) & columns - {""})
            mine = today.with_columns(_projected(shared))
            theirs = same.with_columns(_projected(shared))
            for left, right in (("email", "email"), ("userId", "user_id")):
                matched = mine.join(
                    theirs.filter(pl.col(right).is_not_null()),
                    left_on=[left, "__projected"],
                    right_on=[right, "__projected"],
                    how="semi",
                )
                found.append(matched.get_column("__i"))
    if not found:
        return covered
    matched_rows = pl.concat(found).implode()
    return indexed.select(pl.col("__i").is_in(matched_rows)).to_series().alias("covered")


def _projected(columns: list[str]) -> pl.Expr:
    """The `once_per` object cut down to `columns`, as canonical JSON."""
    if not columns:
        return pl.lit("{}").alias("__projected")
    decoded = pl.col("once_per").str.json_decode(
        pl.Struct([pl.Field(name, pl.String) for name in columns])
    )
    return json_object({name: json_value(decoded.struct.field(name)) for name in columns}).alias(
        "__projected"
    )


def _count(frame: pl.DataFrame, status: str) -> int:
    return frame.filter(pl.col("status") == status).height


def _folds() -> pl.Expr:
    """On an upsert row: whether it rides on the next row, its identity's first event.

    Only with the same email and userId on both, so the merged body names one person.
    """
    following = {name: pl.col(name).shift(-1) for name in ("identity", "kind", "email", "userId")}
    return (
        (pl.col("kind") == "contact")
        & pl.col("foldable")
        & (following["identity"] == pl.col("identity"))
        & (following["kind"] == "event")
        & (following["email"] == pl.col("email"))
        & following["userId"].eq_missing(pl.col("userId"))
    ).fill_null(False)
