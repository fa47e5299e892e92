"""Gather the mapped slices into what a run may send, and the rows it cannot.

Planning, part one, in two passes so that memory does not grow with the source. The first
settles each slice against the ledger as it comes (`sync.settle`: what Loops already holds is
set aside) and keeps the rest, by the buckets of their identities (on disk in the run's spool, or
in memory), and a narrow census of every row. Deduplication then decides on the census alone
(`sync.dedupe`: the last row of a contact or an occurrence wins, rows Loops would make one
contact are rejected). The second pass picks the candidates of a part of the buckets at a time
by those decisions. `sync.plan` then diffs the candidates against the ledger and orders them.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from sync import mapping
from sync.ahead import one_ahead
from sync.columns import (
    BUCKET,
    COLUMN_SEPARATOR,
    HOME,
    PROBLEM_SEPARATOR,
    PROBLEMS,
    ROW,
    contact_column,
    event_column,
)
from sync.config_model import SyncConfig
from sync.dedupe import Decisions, conflict_problems, decide
from sync.held import Held
from sync.settle import NOTHING_LEARNED, settle
from sync.state import spool_write

__all__ = [
    "Candidates",
    "Mapped",
    "Settled",
    "cleared_when_empty",
    "gather",
    "map_rows",
    "settle_all",
    "skipped_when_empty",
]


# Pending rows go to BUCKETS buckets by their requests' identities, so that planning can take
# any run of buckets as a part of the plan holding whole identities (`Settled.parts`).
BUCKETS = 1024
BUCKET_SEED = 7
# Pending rows held before they are written as one run, sorted by bucket: about 640 bytes a
# row held (64 MB). Fewer, longer runs mean longer reads of each part from each run.
RUN_ROWS = 100_000
# Lines per part of the plan: ordering a part holds it twice, about 400 bytes a line.
LINES_PER_PART = 250_000
# A run's row groups, at least and at most (see `Settled.batch_rows`).
RUN_BATCH_ROWS = (512, 4_096)
# Census rows held before they are written as one file, about 36 bytes a row (3.6 MB; a
# nightly run over 10M rows has little room under 1 GiB): each of deduplication's passes reads
# every file, and a file per slice (400 at 10M rows) is more files than it needs.
CENSUS_FILE_ROWS = 100_000


@dataclass(frozen=True)
class _Run:
    """A Parquet file of pending rows sorted by bucket, in row groups of `batch_rows`;
    `starts[b]`: the row where bucket b begins."""

    path: Path
    starts: tuple[int, ...]
    batch_rows: int

    def rows(self, first: int, end: int) -> int:
        """How many rows buckets `first` to `end` (not included) hold."""
        return self.starts[end] - self.starts[first]


@dataclass
class Settled:
    """The first pass over the source: the rows still pending and the census of every row,
    and what the ledger learns. In a spool, the pending rows are written in runs sorted by the
    buckets of their identities (`parts` reads a range of buckets from each run), and the census
    a slice a file, not held while the source is read; without one, both stay in memory."""

    spool: Path | None
    rows_read: int = 0
    pending_rows: int = 0
    learned: list[pl.DataFrame] = field(default_factory=list)
    _pending: list[pl.DataFrame] = field(default_factory=list)
    _held_rows: int = 0
    _runs: list[_Run] = field(default_factory=list)
    _census: list[pl.DataFrame | Path] = field(default_factory=list)
    _census_held: list[pl.DataFrame] = field(default_factory=list)

    def keep(self, spec: SyncConfig, pending: pl.DataFrame, counted: pl.DataFrame) -> None:
        self._census_held.append(counted)
        if sum(piece.height for piece in self._census_held) >= CENSUS_FILE_ROWS:
            self.keep_census()
        if self.spool is not None:
            pending = to_spool(spec, in_buckets(spec, pending))
        self.pending_rows += pending.height
        self._pending.append(pending)
        self._held_rows += pending.height
        if self.spool is not None and self._held_rows >= RUN_ROWS:
            self.write_run(spec)

    def write_run(self, spec: SyncConfig) -> None:
        """The pending rows held, sorted by bucket, to a run in the spool."""
        if self.spool is None or not self._pending:
            return
        rows = pl.concat(self._pending).sort(BUCKET, maintain_order=True)
        self._pending, self._held_rows = [], 0
        path = self.spool / f"pending-{len(self._runs):06d}.parquet"
        batch_rows = self.batch_rows(spec)
        spool_write(rows, path, batch_rows=batch_rows)
        sizes = dict(rows.group_by(BUCKET).len().iter_rows())
        starts = itertools.accumulate((sizes.get(b, 0) for b in range(BUCKETS)), initial=0)
        self._runs.append(_Run(path, tuple(starts), batch_rows))

    def batch_rows(self, spec: SyncConfig) -> int:
        """Rows per row group of the next run: about half of what each part of the plan will
        read of it, as far as the rows pending so far tell. Reading a part decodes every group it
        touches: at 10M rows a part reads 1,250 rows of each run, and groups of 4,096 rows held
        1.3 GB; groups of 512 at 1M rows took 7% more time (both measured as Arrow IPC)."""
        least, most = RUN_BATCH_ROWS
        return max(least, min(most, RUN_ROWS // self.part_count(spec) // 2))

    def part_count(self, spec: SyncConfig) -> int:
        """How many parts the plan of the rows pending so far is made in: about LINES_PER_PART
        lines each, a line per request a row may make."""
        lines = self.pending_rows * (1 + len(spec.events))
        return max(1, min(BUCKETS, -(-lines // LINES_PER_PART)))

    def keep_census(self) -> None:
        """The census held, as one piece (a file in the spool)."""
        if not self._census_held:
            return
        counted = pl.concat(self._census_held)
        self._census_held = []
        if self.spool is None:
            self._census.append(counted)
            return
        path = self.spool / f"census-{len(self._census):06d}.arrow"
        spool_write(counted, path)
        self._census.append(path)

    def parts(self, spec: SyncConfig) -> Iterator[pl.DataFrame]:
        """The pending rows in `part_count` parts, each the rows of a range of buckets, so that
        every identity's requests are in one part. In memory: one part, every row in row order."""
        if self.spool is None:
            yield pl.concat(self._pending)
            return
        self.write_run(spec)
        count = self.part_count(spec)
        bounds = [BUCKETS * number // count for number in range(count + 1)]
        ranges = [
            (first, end, runs)
            for first, end in itertools.pairwise(bounds)
            if (runs := [run for run in self._runs if run.rows(first, end)])
        ]
        if not ranges:  # no row pending: one empty part, with the columns
            ranges = [(0, 0, self._runs[:1])]

        def read(buckets: tuple[int, int, list[_Run]]) -> pl.DataFrame:
            # Runs are Parquet, read by the in-memory engine: at 10M rows a part reads 100
            # small slices, and a slice of an Arrow IPC file cost 4 ms (a part 400 ms, against
            # 135 ms), most of it system time.
            first, end, runs = buckets
            pieces = [
                pl.scan_parquet(run.path).slice(run.starts[first], run.rows(first, end))
                for run in runs
            ]
            rows = pl.concat(pieces).collect(engine="in-memory")
            # A slice of a row group is a view that keeps the whole group decoded: where a part
            # reads a few groups' rows of each run, it is copied (10M rows: 1.3 GB held).
            short = any(run.rows(first, end) < 2 * run.batch_rows for run in runs)
            return from_spool(spec, rows.rechunk() if short else rows)

        yield from one_ahead(read, iter(ranges))  # reading the next part while this is planned

    def decide(self, spec: SyncConfig) -> Decisions:
        """Deduplicate on the census (mapping yields a slice even for an empty source)."""
        pieces = self._census
        if isinstance(pieces[0], Path):  # read a partition at a time, never whole
            return decide(spec, pl.scan_ipc([p for p in pieces if isinstance(p, Path)]))
        return decide(spec, pl.concat([_read(piece) for piece in pieces]).lazy())

    def present_contacts(self) -> pl.DataFrame:
        """The fingerprints of every contact identity the rows name (`sync.departures`)."""
        ids = ["id.1", "id.2"]
        return pl.concat([_read(piece).select(ids) for piece in self._census]).drop_nulls().unique()

    def learned_all(self) -> pl.DataFrame:
        return pl.concat([NOTHING_LEARNED, *self.learned])


def to_spool(spec: SyncConfig, rows: pl.DataFrame) -> pl.DataFrame:
    """Pending rows as the spool keeps them: without the event keys, which are the keys by
    email, else by user id. Random hex is most of a row's bytes once compressed, and the
    slowest part of writing and reading them. `from_spool` puts them back."""
    return rows.drop(event_column(index, "key") for index in range(len(spec.events)))


def from_spool(spec: SyncConfig, rows: pl.DataFrame) -> pl.DataFrame:
    """Pending rows read back from the spool, as mapping wrote them (see `to_spool`)."""
    return rows.with_columns(mapping.idempotency_keys(spec))


def in_buckets(spec: SyncConfig, rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` with the bucket of each: a copy of a row in each bucket its requests' identities
    go to, HOME on the copy in its first request's bucket (bucket 0 when it makes no request).
    `pick` keeps of each copy the requests of its bucket. A row has one copy unless its events
    go with different identities and it has no contact to go with (rare): those are copied."""
    buckets = line_buckets(spec)
    home = pl.coalesce(*buckets, pl.lit(0, pl.UInt16))
    placed = rows.with_columns(home.alias(BUCKET), pl.lit(True).alias(HOME))
    elsewhere = pl.any_horizontal(b.is_not_null() & (b != pl.col(BUCKET)) for b in buckets)
    copied = placed.filter(elsewhere) if len(buckets) > 1 else placed.clear()
    if copied.is_empty():
        return placed
    every = pl.concat_list(buckets).list.drop_nulls().list.unique(maintain_order=True)
    copies = (
        copied.with_columns(every.alias(BUCKET), pl.lit(False).alias(HOME))
        .explode(BUCKET)
        .filter(pl.col(BUCKET) != home)
    )
    return pl.concat([placed, copies])


def line_buckets(spec: SyncConfig) -> list[pl.Expr]:
    """The bucket of each request of a row: its contact's, then each event's (`event_identity`;
    null where it has no identity). The bucket of an event that goes with the row's contact is
    the contact's, not hashed again."""
    own = [bucket_of(pl.col(event_column(index, "identity"))) for index in range(len(spec.events))]
    if spec.contact is None:
        return own
    contact = bucket_of(pl.col(contact_column("identity")))
    return [contact, *(pl.coalesce(contact, event) for event in own)]


def bucket_of(identity: pl.Expr) -> pl.Expr:
    """The bucket of an identity (null where it is null): the same in both passes of a run."""
    return pl.when(identity.is_not_null()).then(
        (identity.hash(seed=BUCKET_SEED) % BUCKETS).cast(pl.UInt16)
    )


def event_identity(spec: SyncConfig, index: int) -> pl.Expr:
    """The contact an event goes with: the identity of its row's contact upsert where the sync
    has one, so that the upsert is sent first even when the event names the contact by another
    column; else the event's own identity."""
    own = pl.col(event_column(index, "identity"))
    return pl.coalesce(contact_column("identity"), own) if spec.contact else own


def settle_all(
    spec: SyncConfig, slices: Iterable[pl.DataFrame], held: Held | None, spool: Path | None
) -> Settled:
    """The first pass: settle each mapped slice against what Loops holds (None: nothing)."""
    settled = Settled(spool)
    for piece in slices:
        settled.rows_read += piece.height
        found = settle(spec, piece, held)
        settled.keep(spec, found.pending, found.census)
        if not found.learned.is_empty():
            settled.learned.append(found.learned)
    settled.write_run(spec)
    settled.keep_census()
    return settled


def _read(piece: pl.DataFrame | Path) -> pl.DataFrame:
    return pl.read_ipc(piece) if isinstance(piece, Path) else piece


@dataclass(frozen=True)
class Candidates:
    """One pending slice, picked: `contacts` (row, identity, body, email, userId, foldable,
    hash: the upserts to consider), `events` (row, identity, event, key, key_email, key_user,
    legacy, once_per, body, email, userId), and `rejects` (row, column, reason)."""

    contacts: pl.DataFrame
    events: pl.DataFrame
    rejects: pl.DataFrame


def pick(spec: SyncConfig, piece: pl.DataFrame, decisions: Decisions) -> Candidates:
    """The second pass, for one pending slice: its rejects (conflicts added), the upserts of
    the contacts whose last row it has, and the occurrences whose last row it has."""
    checked = piece.with_columns(
        conflict_problems(spec, piece, decisions.conflicts).alias(PROBLEMS)
    )
    contacts = checked.filter(Decisions.picked(decisions.contacts))
    bucketed = BUCKET in piece.columns
    if bucketed and spec.contact:
        contacts = contacts.filter(_in_own_bucket(pl.col(contact_column("identity"))))
    return Candidates(
        _contacts(spec, contacts),
        _events(spec, checked, decisions),
        _rejects(checked.filter(pl.col(HOME)) if bucketed else checked),
    )


def _in_own_bucket(identity: pl.Expr) -> pl.Expr:
    """Whether a request goes with this copy of its row (see `in_buckets`)."""
    return bucket_of(identity) == pl.col(BUCKET)


@dataclass(frozen=True)
class Mapped:
    """What the source becomes, in memory: valid request bodies, and the rows that cannot be
    sent. For tests and small sources; a run streams the same through `Settled` and `pick`.

    `contacts`: one per identity (its last row). `events`: one per key. `rejects`: row, column,
    reason. Given what Loops holds, a row it holds whole is only counted (`contacts_settled`,
    `events_settled`), and a body it holds is null: `contacts` and `events` are the candidates
    to send, not a census of the source.
    """

    rows_read: int
    contacts: pl.DataFrame
    events: pl.DataFrame
    rejects: pl.DataFrame
    duplicates: int
    contacts_settled: int = 0
    events_settled: int = 0
    skipped_when_empty: tuple[str, ...] = ()  # contact properties `empty: skip` leaves out
    cleared_when_empty: tuple[str, ...] = ()  # and those `empty: clear` sends a null for
    # Delivered occurrences whose other identifier the ledger lacks (see `sync.settle`).
    learned: pl.DataFrame = dataclasses.field(default_factory=NOTHING_LEARNED.clear)


def skipped_when_empty(spec: SyncConfig) -> tuple[str, ...]:
    """The contact properties that `empty: skip` leaves out of a body when the cell is empty."""
    return tuple(spec.contact.properties) if spec.contact and spec.contact.empty == "skip" else ()


def cleared_when_empty(spec: SyncConfig) -> tuple[str, ...]:
    """The contact properties that `empty: clear` sends a null for when the cell is empty."""
    return tuple(spec.contact.properties) if spec.contact and spec.contact.empty == "clear" else ()


def gather(spec: SyncConfig, slices: Iterable[pl.DataFrame], held: Held | None) -> Mapped:
    """Both passes in memory: the candidates to send, the rejects, and what was counted."""
    settled = settle_all(spec, slices, held, spool=None)
    decisions = settled.decide(spec)
    picked = [pick(spec, part, decisions) for part in settled.parts(spec)]
    return Mapped(
        settled.rows_read,
        pl.concat([_no_contacts(), *(p.contacts for p in picked)]),
        pl.concat([_no_events(), *(p.events for p in picked)]),
        pl.concat([_no_rejects(), *(p.rejects for p in picked)]),
        decisions.duplicates,
        decisions.contacts_settled,
        decisions.events_settled,
        skipped_when_empty(spec),
        cleared_when_empty(spec),
        settled.learned_all(),
    )


def map_rows(spec: SyncConfig, frame: pl.DataFrame, *, held: Held | None = None) -> Mapped:
    """Map a whole frame (which has ROW) and gather it: for tests and small sources."""
    ls1_keys = held is not None and held.legacy
    slices = frame.iter_slices(mapping.SLICE_ROWS)
    return gather(spec, mapping.map_slices(spec, slices, frame.schema, ls1_keys=ls1_keys), held)


def _contacts(spec: SyncConfig, rows: pl.DataFrame) -> pl.DataFrame:
    """The upserts of `rows` (each its contact's last row).

    `foldable`: whether this upsert may ride on an event (see `plan`): it has an email, and
    its body holds neither a null (`empty: clear`) nor `subscribed`, whose meaning on an event
    Loops does not document.
    """
    if spec.contact is None:
        return _no_contacts()
    section = spec.contact
    plain = section.empty == "skip" and "subscribed" not in section.properties
    return rows.select(
        ROW,
        pl.col(contact_column("identity")).alias("identity"),
        pl.col(contact_column("body")).alias("body"),
        pl.col(contact_column("email")).alias("email"),
        pl.col(contact_column("userId")).alias("userId"),
        (pl.col(contact_column("email")).is_not_null() & pl.lit(plain)).alias("foldable"),
        pl.col(contact_column("hash")).alias("hash"),
    )


def _no_contacts() -> pl.DataFrame:
    return pl.DataFrame(schema=CONTACT_SCHEMA)


CONTACT_SCHEMA = {
    ROW: pl.UInt32,
    "identity": pl.String,
    "body": pl.String,
    "email": pl.String,
    "userId": pl.String,
    "foldable": pl.Boolean,
    "hash": pl.String,
}
EVENT_SCHEMA = {
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


def _events(spec: SyncConfig, checked: pl.DataFrame, decisions: Decisions) -> pl.DataFrame:
    """One line per occurrence whose last row is in `checked`, in row order; `identity` is
    the contact the event goes with (`event_identity`)."""
    frames = [_no_events()]
    for index, event in enumerate(spec.events):
        prefix = event_column(index)
        identity = event_identity(spec, index)
        legacy = prefix + "legacy"
        sent = checked.filter(Decisions.picked(decisions.events[index]))
        if BUCKET in checked.columns:
            sent = sent.filter(_in_own_bucket(identity))
        frames.append(
            sent.select(
                ROW,
                identity.alias("identity"),
                pl.lit(event.name).alias("event"),
                *[
                    pl.col(prefix + name).alias(name)
                    for name in ("key", "key_email", "key_user", "once_per", "body")
                ],
                (pl.col(legacy) if legacy in sent.columns else pl.lit(None, pl.String)).alias(
                    "legacy"
                ),
                *[pl.col(prefix + name).alias(name) for name in ("email", "userId")],
            ).select(list(EVENT_SCHEMA))
        )
    return pl.concat(frames, rechunk=False).sort(ROW, maintain_order=True)


def _no_events() -> pl.DataFrame:
    return pl.DataFrame(schema=EVENT_SCHEMA)


def _no_rejects() -> pl.DataFrame:
    return pl.DataFrame(schema={ROW: pl.UInt32, "column": pl.String, "reason": pl.String})


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
