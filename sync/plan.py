"""The plan: only new, changed or previously failed work is sent, in an order that holds.

The plan is built a part at a time: planning keeps the pending rows by the buckets of their
identities (`sync.candidates`), and a part is a range of buckets, so it holds every request of
its identities. Each part's candidates are diffed (`sync.diff`) and its lines (one per request)
put in send order alone and written to the run's spool, so that ordering never holds more than
a part; the sender merges the parts back into one order, a job at a time. A job holds one
identity's requests, its upsert first, so that an email triggered by an event sees the new
properties; jobs go in source order of their identity's first line.

Loops counts requests, so the one way past N / rate is to send fewer: `events/send` also takes a
contact's properties and mailing lists and updates (or creates) the contact with them. When an
identity needs both an upsert and a new event and has an email, the upsert is folded into its
first event: one request instead of two. Not folded: contacts with only a userId (Loops wants an
event's userId to exist already), bodies with a null (`empty: clear`) or `subscribed`, whose
meaning on an event Loops does not document.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import polars as pl

from sync.candidates import (
    Candidates,
    Mapped,
    Settled,
    cleared_when_empty,
    pick,
    settle_all,
    skipped_when_empty,
)
from sync.columns import ROW
from sync.config_model import SyncConfig
from sync.departures import Departures, find_departures
from sync.diff import OCCURRENCE_COLUMNS, diff
from sync.forewarn import Forewarnings
from sync.held import Held
from sync.keys import merged_json
from sync.model import Job, Occurrence, Request
from sync.side_effects import SideEffects
from sync.state import spool_write

__all__ = ["Gathered", "Plan", "PlanBuilder", "make_plan", "plan_slices"]

# Lines the merge of the parts holds at once, a batch of each part: a plan of 10M rows has 80
# parts, and a batch of 20,000 lines each held 1.6M lines (peak 1.04 GB, measured). Each batch
# is a read: at 5M rows (40 parts) 160,000 lines took 75 s to walk, 640,000 lines 65 s, and the
# peak stayed planning's (812 MB).
MERGE_LINES = 640_000
BATCH_LINES = (1_000, 20_000)  # a part's batch, at least and at most
# The row of the first line of each line's identity: the order of jobs.
FIRST = "__first"
LINE_COLUMNS = ("kind", ROW, "identity", "ref", "body", "event", "fold", *OCCURRENCE_COLUMNS)


@dataclass(frozen=True)
class Plan:
    """What a run will send, and why the rest is skipped.

    `parts`: lines (kind, row, identity, ref, body, event, status, fold and an event's
    occurrence), each part in send order and holding whole identities, on disk or in memory.
    `size`: those lines, planned requests before folding (what progress and counts speak of);
    `job_count`: the identities they belong to, a job each.
    """

    parts: tuple[pl.LazyFrame, ...]
    size: int
    job_count: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    # Occurrences that an event delivered under earlier `once_per` columns stands for.
    adopted: pl.DataFrame = field(default_factory=pl.DataFrame)
    kept_in_loops: dict[str, int] = field(default_factory=dict)
    side_effects: SideEffects = field(default_factory=SideEffects)
    # Contacts that left the source, and their removals, sent after every other job.
    departures: Departures | None = None

    @property
    def requests(self) -> pl.DataFrame:
        """Every line at once, in send order: for a preview, a test or a benchmark."""
        lines = pl.concat(self.parts).collect() if self.parts else pl.DataFrame()
        if lines.is_empty():
            return lines.drop(FIRST, strict=False)
        return lines.sort(FIRST, "identity", pl.col("kind") != "contact", ROW).drop(FIRST)

    @property
    def request_count(self) -> int:
        """Requests a run will make, after folding upserts into events, removals included."""
        return self.size - self.counts.get("folded", 0) + len(self._removals())

    def _removals(self) -> tuple[Request, ...]:
        return self.departures.removals if self.departures else ()

    def jobs(self, limit: int | None = None) -> Iterator[Job]:
        """The plan as jobs, in send order, a slice of each part at a time; `limit` caps the
        number of jobs."""
        if limit is not None:
            yield from islice(self.jobs(), limit)
            return
        batch = batch_lines(len(self.parts))
        merged = heapq.merge(*(_jobs_of(part, batch) for part in self.parts))
        for _, _, job in merged:
            yield job
        if self.departures:
            yield from self.departures.jobs()


def batch_lines(parts: int) -> int:
    """The lines of a part read at a time, so that the merge holds about MERGE_LINES."""
    least, most = BATCH_LINES
    return max(least, min(most, MERGE_LINES // max(1, parts)))


def _jobs_of(part: pl.LazyFrame, batch: int) -> Iterator[tuple[int, str, Job]]:
    """The jobs of one part, each with its place in the order (first row, identity)."""
    current: list[Request] = []
    folds, first = False, 0
    for piece in _batches(part.select(FIRST, *LINE_COLUMNS), batch):
        for order, kind, row, identity, ref, body, event, fold, *found_by in piece.iter_rows():
            if current and current[0].identity != identity:
                yield first, current[0].identity, _job(current, folds)
                current = []
            if not current:
                first, folds = order, False
            if kind == "contact":
                folds = bool(fold)
            occurrence = Occurrence(*found_by) if kind == "event" else None
            request = Request(kind, row, identity, ref, body.encode(), event, None, occurrence)
            current.append(request)
    if current:
        yield first, current[0].identity, _job(current, folds)


def _batches(lines: pl.LazyFrame, size: int) -> Iterator[pl.DataFrame]:
    """`lines` `size` at a time, each read when asked for. (`collect_batches` reads on in
    the background while the sender waits on the rate limit: the whole plan ends up in memory.)"""
    offset = 0
    while True:
        # A part is Parquet in row groups of `size`: the in-memory engine reads one in 1.8 ms,
        # where a slice of an Arrow IPC file took 3.7 (at 10M rows the merge reads 10,000).
        piece = lines.slice(offset, size).collect(engine="in-memory")
        if piece.is_empty():
            return
        offset += piece.height
        yield piece


def _job(requests: list[Request], folds: bool) -> Job:
    if folds:
        return Job(requests[0].identity, carry(requests[0], requests[1:]))
    return Job(requests[0].identity, tuple(requests))


def carry(contact: Request, events: list[Request]) -> tuple[Request, ...]:
    """The first event carries the contact's properties; the other events follow it."""
    first = events[0]
    carrier = Request(
        "event",
        first.row,
        first.identity,
        first.ref,
        merged_json(contact.body, first.body),
        first.event,
        folded=contact,
        occurrence=first.occurrence,
    )
    return (carrier, *events[1:])


class PlanBuilder:
    """Build a plan a part at a time: `add` the candidates of a part (all of them: a part holds
    whole identities), `close_part`, and at the end `finish`.

    `directory`: where the ordered parts go (a run's spool), else memory; `parts`: how many
    will come (the sender reads a batch of each at a time, sized by it). `full` sends every
    contact again.
    """

    def __init__(
        self,
        held: Held,
        *,
        full: bool = False,
        skipped_when_empty: tuple[str, ...] = (),
        cleared_when_empty: tuple[str, ...] = (),
        directory: Path | None = None,
        parts: int = 1,
    ) -> None:
        self._held, self._full, self._skipped = held, full, skipped_when_empty
        self._cleared = cleared_when_empty
        self.side_effects = SideEffects()
        self._directory, self._batch = directory, batch_lines(parts)
        # A part is written while the next is planned (Polars lets go of the GIL).
        self._writer = ThreadPoolExecutor(max_workers=1)
        self._writing: Future[None] | None = None
        self._lines: list[pl.DataFrame] = []
        self._parts: list[pl.LazyFrame] = []
        self._size = self._jobs = self._folded = 0
        self.counts: Counter[str] = Counter()
        self.kept_in_loops: Counter[str] = Counter()
        self._adopted: list[pl.DataFrame] = []

    def add(self, candidates: Candidates) -> None:
        found = diff(
            candidates,
            self._held,
            full=self._full,
            skipped_when_empty=self._skipped,
            cleared_when_empty=self._cleared,
        )
        self.counts.update(found.counts)
        self.kept_in_loops.update(found.kept_in_loops)
        self.side_effects += found.side_effects
        self._adopted.append(found.adopted)
        self._lines.append(found.lines)

    def close_part(self) -> None:
        """Put the lines added since the last part in send order, as the next part."""
        if not self._lines:
            return
        ordered = _ordered(pl.concat(self._lines))
        self._lines = []
        if ordered.is_empty() and self._parts:
            return  # an empty plan still has one part, for its columns
        self._size += ordered.height
        identity = ordered.get_column("identity")
        self._jobs += int((identity != identity.shift()).fill_null(True).sum())  # in runs
        self._folded += int(ordered.get_column("fold").sum())
        if self._directory is None:
            self._parts.append(ordered.lazy())
            return
        path = self._directory / f"plan-{len(self._parts):04d}.parquet"
        self._written()
        # In batches as the sender reads them: the merge then holds a batch of each part.
        self._writing = self._writer.submit(
            spool_write, ordered.with_columns(_EVENT_REF_LEFT_OUT), path, batch_rows=self._batch
        )
        self._parts.append(pl.scan_parquet(path).with_columns(_EVENT_REF_PUT_BACK))

    def _written(self) -> None:
        """Wait for the part being written (raising what writing it raised)."""
        if self._writing is not None:
            writing, self._writing = self._writing, None
            writing.result()

    def finish(self, *, contacts_settled: int = 0, events_settled: int = 0) -> Plan:
        """The plan of the parts; the counts of rows Loops holds whole come from deduplication."""
        self.close_part()
        self._written()
        self._writer.shutdown()
        counts = dict(self.counts)
        counts["contacts_unchanged"] = counts.get("contacts_unchanged", 0) + contacts_settled
        counts["events_already_delivered"] = (
            counts.get("events_already_delivered", 0) + events_settled
        )
        counts["folded"] = self._folded
        adopted = pl.concat(self._adopted) if self._adopted else pl.DataFrame()
        return Plan(
            tuple(self._parts),
            self._size,
            self._jobs,
            counts,
            adopted,
            dict(self.kept_in_loops),
            self.side_effects,
        )


@dataclass(frozen=True)
class Gathered:
    """What planning found besides the plan: for the report, the rejects file and the ledger."""

    rows_read: int
    rejects: pl.DataFrame
    duplicates: int
    learned: pl.DataFrame
    warnings: tuple[str, ...] = ()  # what will fail or surprise (`sync.forewarn`)


def plan_slices(
    spec: SyncConfig,
    mapped: Iterable[pl.DataFrame],
    held: Held,
    *,
    full: bool = False,
    spool: Path | None = None,
    allow_removals: int | None = None,
) -> tuple[Gathered, Plan]:
    """Plan the mapped slices in two passes, memory bounded by a slice, a part and the census:
    settle each slice against the ledger (keeping what is pending in `spool` by the buckets of
    its identities, else in memory) and deduplicate on the census; then, a part of the buckets
    at a time, pick the candidates, diff them and write the part's lines in send order. `full`:
    every contact counts as unsent; events stay delivered, never repeated. Contacts that left
    the source are found last (`sync.departures`; `allow_removals`: `run --allow-removals`)."""
    settled = settle_all(spec, mapped, held.without_contacts() if full else held, spool)
    decisions = settled.decide(spec)
    parts = settled.part_count(spec)
    builder = PlanBuilder(
        held,
        full=full,
        skipped_when_empty=skipped_when_empty(spec),
        cleared_when_empty=cleared_when_empty(spec),
        directory=spool,
        parts=parts,
    )
    rejects = []
    warnings = Forewarnings(decisions.conflicts)
    for part in settled.parts(spec):
        candidates = pick(spec, part, decisions)
        rejects.append(candidates.rejects)
        builder.add(candidates)
        builder.close_part()
        warnings.add(part, candidates, held)
    plan = builder.finish(
        contacts_settled=decisions.contacts_settled, events_settled=decisions.events_settled
    )
    found = Gathered(
        settled.rows_read,
        pl.concat(rejects).sort(ROW),
        decisions.duplicates,
        settled.learned_all(),
        tuple(warnings.lines()),
    )
    return found, _with_departures(plan, spec, held, settled, allow_removals)


def _with_departures(
    plan: Plan, spec: SyncConfig, held: Held, settled: Settled, allow: int | None
) -> Plan:
    if spec.contact is None or spec.contact.removed == "keep":
        return plan
    departures = find_departures(
        spec.contact,
        held,
        settled.present_contacts(),
        rows_read=settled.rows_read,
        allow=allow,
    )
    if departures is None:
        return plan
    jobs = plan.job_count + len(departures.removals)
    return dataclasses.replace(plan, departures=departures, job_count=jobs)


# An event's ref is its key by email, else by user id, both on its line: the plan on disk leaves
# it out (random hex is the slowest part of writing and reading a line) and puts it back.
_EVENT_REF_LEFT_OUT = pl.when(pl.col("kind") != "event").then(pl.col("ref")).alias("ref")
_EVENT_REF_PUT_BACK = pl.coalesce("ref", "key_email", "key_user").alias("ref")


def make_plan(mapped: Mapped, held: Held, *, full: bool = False) -> Plan:
    """The plan of candidates gathered in memory (`candidates.gather`): for tests and previews."""
    builder = PlanBuilder(
        held,
        full=full,
        skipped_when_empty=mapped.skipped_when_empty,
        cleared_when_empty=mapped.cleared_when_empty,
    )
    builder.add(Candidates(mapped.contacts, mapped.events, mapped.rejects))
    return builder.finish(
        contacts_settled=mapped.contacts_settled, events_settled=mapped.events_settled
    )


def _ordered(lines: pl.DataFrame) -> pl.DataFrame:
    """Each identity's requests together, upsert first, in source order of the identity's
    first line; an upsert that rides on its first event marked `fold`."""
    return (
        lines.with_columns(pl.col(ROW).min().over("identity").alias(FIRST))
        .sort([FIRST, "identity", pl.col("kind") != "contact", ROW])
        .with_columns(_folds().alias("fold"))
        .drop("email", "userId", "foldable")
    )


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
