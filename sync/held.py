"""What planning asks of the ledger: which payloads, identities and event keys Loops holds.

`Held` is built once per run and is the planner's only view of the ledger: settling a slice
(`sync.settle`), the status of a contact (new, changed, retry), whether an occurrence was
delivered, and the few per-contact facts a plan reports. Every question is asked with a column of
values and answered with a mask.

It is built from batches of texts (`Held.build`), so that a ledger of any size is read in bounded
memory and any store can feed it (`sync.snapshot` reads SQLite). Payload hashes and event keys,
the two sets every row of a nightly run is looked up in, are kept as 128-bit fingerprints
(`Fingerprints`: 16 bytes a value instead of a 68-character string); the rest is small or is
asked of the store when needed (`ContactLookup`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

import polars as pl

__all__ = [
    "ONCE_PER_SCHEMA",
    "ContactLookup",
    "ContactRows",
    "Fingerprints",
    "Held",
    "empty_once_per",
    "fingerprints",
    "key_set",
]

ONCE_PER_SCHEMA = {
    "event": pl.String,
    "email": pl.String,
    "user_id": pl.String,
    "once_per": pl.String,
    "current": pl.Boolean,
}

# Seeds of the 64-bit Polars hashes a fingerprint is made of (any fixed values would do).
TEXT_SEED = 0x6C6F6F7073
FALLBACK_SEED = 0x73796E63
# Values a bucket of a fingerprint table holds on average: fewer means a larger index.
BUCKET_LOAD = 4
_SORTING = threading.Lock()


def empty_once_per() -> pl.DataFrame:
    return pl.DataFrame(schema=ONCE_PER_SCHEMA)


def fingerprints(values: pl.Series) -> pl.DataFrame:
    """Each text's 128-bit fingerprint as two UInt64 columns, `hi` and `lo`, null for a null.

    `hi` is taken straight from the text: payload hashes (`c1:`) and event keys (`ls2-`,
    `ls1-`) end in the 64 hex digits of a sha256 digest, and `hi` is its first 64 bits (a text
    without hex digits there has a second Polars hash instead). `lo` is Polars' 64-bit hash of
    the whole text, so texts differing anywhere differ in `lo`, whatever their digits.

    The odds of a false "held" (a change never sent): two different texts share a fingerprint
    only if both halves agree, 64 bits of two sha256 digests and the 64-bit hashes of two
    different texts: about 1 in 2^128 (3 * 10^38) per pair compared. A nightly run over 10M
    contacts and their events compares about 2 * 10^14 pairs (each payload hash and event key
    asked against the 10M held): one false "held" in more than 10^24 such runs. A `hi` shared
    by two texts (1 in 2^64 per pair) only costs one more comparison. Polars' hash is stable
    within one version, and a `Held` is built and asked in one process.
    """
    text = pl.col("text")
    digest = text.str.slice(-64, 16).str.to_integer(base=16, dtype=pl.UInt64, strict=False)
    prints = (
        values.cast(pl.String)
        .to_frame("text")
        .with_columns(
            digest.alias("hi"), pl.when(text.is_not_null()).then(text.hash(TEXT_SEED)).alias("lo")
        )
    )
    if prints.get_column("hi").null_count() > values.null_count():  # texts without a digest
        other = pl.when(text.is_not_null()).then(text.hash(FALLBACK_SEED))
        prints = prints.with_columns(pl.col("hi").fill_null(other))
    return prints.select("hi", "lo")


@dataclass(frozen=True)
class Fingerprints:
    """A set of texts as their fingerprints (`fingerprints`), for asking a column at a time.

    Polars cannot keep a hash table between calls, so the table is sorted by `hi` with an index
    of buckets (`starts`: where each run of values sharing the top bits of `hi` begins), a static
    hash table: a value is looked for in its bucket only, a few entries on average. A million
    lookups cost a few gathers of a million integers, whatever the size of the set; a join or
    `is_in` would hash the whole set again on every call.
    """

    hi: pl.Series  # sorted
    lo: pl.Series  # lined up with hi
    starts: pl.Series  # per bucket, where its values begin in hi; one more for the end
    divisor: int  # hi // divisor is a value's bucket

    @classmethod
    def empty(cls) -> Fingerprints:
        none = pl.Series(dtype=pl.UInt64)
        return cls(none, none, pl.Series([0, 0], dtype=pl.get_index_type()), 1 << 63)

    @classmethod
    def of(cls, batches: Iterable[pl.Series]) -> Fingerprints:
        """The set of every non-null text of `batches`, each batch let go once fingerprinted."""
        his, los = [pl.Series(dtype=pl.UInt64)], [pl.Series(dtype=pl.UInt64)]
        for batch in batches:
            part = fingerprints(batch).drop_nulls()
            his.append(part.get_column("hi"))
            los.append(part.get_column("lo"))
        return cls._sorted(his, los)

    @classmethod
    def _sorted(cls, his: list[pl.Series], los: list[pl.Series]) -> Fingerprints:
        """Sorted a column at a time, each column's parts let go once copied whole (sorting and
        gathering across a hundred parts took three times as long): the set is held about
        1.75 times over at the peak, and one set is sorted at a time in the process (two sets
        read side by side are not sorted side by side)."""
        with _SORTING:
            hi = pl.concat(his, rechunk=True)
            his.clear()
            if hi.is_empty():
                return cls.empty()
            order = hi.arg_sort()
            hi = hi.gather(order)
            lo = pl.concat(los, rechunk=True)
            los.clear()
            lo = lo.gather(order)
            del order
        buckets = max(1, (hi.len() // BUCKET_LOAD).bit_length())
        divisor = 1 << (64 - buckets)
        bucket = _buckets(hi, divisor)
        bounds = pl.int_range(0, (1 << buckets) + 1, dtype=pl.UInt32, eager=True)
        return cls(hi, lo, bucket.search_sorted(bounds, side="left"), divisor)

    def __len__(self) -> int:
        return self.hi.len()

    def mask(self, values: pl.Series) -> pl.Series:
        """Whether each of `values` is in the set, lined up with `values`; a null is not."""
        found = pl.repeat(False, values.len(), eager=True).alias(values.name)
        if not len(self) or values.null_count() == values.len():
            return found
        probe = fingerprints(values).with_row_index("row").drop_nulls()
        row, hi, lo = (probe.get_column(name) for name in ("row", "hi", "lo"))
        bucket = _buckets(hi, self.divisor)
        start = self.starts.gather(bucket).cast(pl.Int64)
        stop = self.starts.gather(bucket + 1).cast(pl.Int64)
        # A bucket's values are sorted and evenly spread: where a value would be is a step or
        # two from where it is. From there each pass steps toward it, until past it.
        share = (hi % pl.Series([self.divisor], dtype=pl.UInt64)).cast(pl.Float64) / self.divisor
        at = start + (share * (stop - start)).cast(pl.Int64)
        at = at.zip_with(at < stop, stop - 1)  # a share rounded up to 1.0
        step = pl.repeat(0, hi.len(), dtype=pl.Int64, eager=True)  # chosen after the first pass
        hits = [row.head(0)]
        searched, first = start < stop, True
        while searched.any():
            row, hi, lo, at, step, start, stop = (
                c.filter(searched) for c in (row, hi, lo, at, step, start, stop)
            )
            seen = self.hi.gather(at)
            hit = (seen == hi) & (self.lo.gather(at) == lo)
            hits.append(row.filter(hit))
            if first:  # choose the way; a `hi` shared with another value: from the start
                step = (seen <= hi).cast(pl.Int64) * 2 - 1
                at, first = at.zip_with(seen != hi, start - 1), False
            at = at + step
            ahead = (step > 0) & (seen <= hi) & (at < stop)
            behind = (step < 0) & (seen >= hi) & (at >= start)
            searched = ~hit & (ahead | behind)
        return found.scatter(pl.concat(hits), True)


def key_set(batches: Iterable[pl.Series]) -> tuple[Fingerprints, bool]:
    """Event keys as a set, and whether any of them is an `ls1` key (`Held.legacy`)."""
    legacy = False

    def noting_legacy() -> Iterator[pl.Series]:
        nonlocal legacy
        for batch in batches:
            legacy = legacy or bool(batch.str.starts_with("ls1-").any())
            yield batch

    keys = Fingerprints.of(noting_legacy())
    return keys, legacy


def _buckets(hi: pl.Series, divisor: int) -> pl.Series:
    """The bucket of each fingerprint: the top bits of its `hi`."""
    return (hi // pl.Series([divisor], dtype=pl.UInt64)).cast(pl.UInt32)


class ContactLookup(Protocol):
    """What planning asks about a few contacts, of the store itself rather than of memory: a
    nightly run asks it only for the contacts it will send."""

    def known(self, identities: pl.Series) -> pl.Series:
        """Whether each identity was delivered, lined up with `identities`."""
        ...

    def props(self, identities: pl.Series) -> pl.DataFrame:
        """identity, props: the body keys last delivered to each of `identities` that has any
        (as ',a,b,')."""
        ...

    def present(self) -> Iterator[pl.Series]:
        """Every contact delivered and not removed since (`contact.removed`), a page at a time."""
        ...


@dataclass(frozen=True)
class ContactRows:
    """A `ContactLookup` over rows in memory (identity, props): for `Held.of_rows` and tests."""

    rows: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(schema={"identity": pl.String, "props": pl.String})
    )

    def known(self, identities: pl.Series) -> pl.Series:
        held = self.rows.get_column("identity").implode()
        return identities.is_in(held).fill_null(False).alias(identities.name)

    def props(self, identities: pl.Series) -> pl.DataFrame:
        wanted = pl.DataFrame({"identity": identities.unique()})
        return wanted.join(self.rows, on="identity", how="inner").filter(
            pl.col("props").is_not_null()
        )

    def present(self) -> Iterator[pl.Series]:
        yield self.rows.get_column("identity")


@dataclass(frozen=True)
class Held:
    """The ledger's confirmed state for one sync, as planning asks it.

    `hashes`: the payload hash last delivered for each contact; `events`: every key a delivered
    occurrence is known by; `contacts`: the store, for the few contacts a plan asks about;
    `retried`: the refs of requests that failed (never settled: they are retried); `legacy`: some
    event keys are `ls1` keys; `other_once_per`: for an event whose `once_per` columns changed,
    every occurrence the ledger holds: event, email, user_id, once_per (a JSON object), current
    (whether it has today's columns).
    """

    hashes: Fingerprints
    events: Fingerprints
    contacts: ContactLookup
    retried: pl.Series
    legacy: bool = False
    other_once_per: pl.DataFrame = field(default_factory=empty_once_per)

    @classmethod
    def build(
        cls,
        hashes: Iterable[pl.Series],
        event_keys: Iterable[pl.Series],
        contacts: ContactLookup,
        failed_refs: pl.Series,
        other_once_per: pl.DataFrame | None = None,
    ) -> Held:
        """From batches of texts as a store reads them: every contact's payload hash, every
        key a delivered occurrence is known by (its own, its email's, its userId's)."""
        events, legacy = key_set(event_keys)
        return cls(
            Fingerprints.of(hashes),
            events,
            contacts,
            failed_refs.cast(pl.String),
            legacy,
            empty_once_per() if other_once_per is None else other_once_per,
        )

    @classmethod
    def of_rows(
        cls,
        contacts: Iterable[tuple[str, str, str | None]] = (),
        event_keys: Iterable[str] = (),
        failed_refs: Iterable[str] = (),
        other_once_per: pl.DataFrame | None = None,
    ) -> Held:
        """From rows in memory: contacts as (identity, hash, props)."""
        rows = pl.DataFrame(
            list(contacts),
            schema={"identity": pl.String, "hash": pl.String, "props": pl.String},
            orient="row",
        )
        return cls.build(
            [rows.get_column("hash")],
            [pl.Series(list(event_keys), dtype=pl.String)],
            ContactRows(rows.select("identity", "props")),
            pl.Series(list(failed_refs), dtype=pl.String),
            other_once_per,
        )

    @classmethod
    def nothing(cls) -> Held:
        """A ledger that holds nothing: every request is new."""
        return cls.of_rows()

    def without_contacts(self) -> Held:
        """For `--full`: every contact counts as unsent; events stay delivered, never repeated."""
        return replace(self, hashes=Fingerprints.empty(), contacts=ContactRows())

    def holds_payloads(self, hashes: pl.Series) -> pl.Series:
        """Whether Loops holds each contact payload (by its hash) and no retry of it is due is
        the caller's to add: a body names the email or userId its identity is made of (the
        config reserves those names), so no two identities share a hash."""
        return self.hashes.mask(hashes)

    def knows_contacts(self, identities: pl.Series) -> pl.Series:
        """Whether each contact was delivered before, whatever its payload then. Asked of the
        store (a nightly run asks only about the contacts it sends); none when none were."""
        if not len(self.hashes):
            return pl.repeat(False, identities.len(), eager=True).alias(identities.name)
        return self.contacts.known(identities)

    @property
    def holds_nothing(self) -> bool:
        """Nothing delivered, nothing failed: a first sync, where every request is new."""
        return not (len(self.hashes) or len(self.events) or self.retried.len())

    def failed(self, refs: pl.Series) -> pl.Series:
        """Whether each ref (a contact identity, an event key) failed before: a retry is due."""
        if self.retried.is_empty():  # is_in hashes every ref even against no failures
            return pl.repeat(False, refs.len(), eager=True).alias(refs.name)
        return refs.is_in(self.retried.implode()).fill_null(False).alias(refs.name)

    def holds_event(self, frame: pl.DataFrame, prefix: str = "") -> pl.Series:
        """Whether Loops holds each occurrence of `frame`: delivered to the same contact, found
        by its email or by its userId, as Loops finds contacts (or by its `ls1` key)."""
        by_email, by_user = self.event_matches(frame, prefix)
        return by_email | by_user

    def event_matches(self, frame: pl.DataFrame, prefix: str = "") -> tuple[pl.Series, pl.Series]:
        """Per occurrence: found by its email's key; found by its userId's (or its `ls1`) key."""
        by_email = self.events.mask(frame.get_column(prefix + "key_email"))
        by_user = self.events.mask(frame.get_column(prefix + "key_user"))
        if self.legacy:
            by_user |= self.events.mask(frame.get_column(prefix + "legacy"))
        return by_email, by_user

    def props_of(self, identities: pl.Series) -> pl.DataFrame:
        """identity, props: the body keys last delivered to each of `identities` that has any.
        Asked of the store, so the result is as large as the contacts asked about."""
        if not len(self.hashes):
            return ContactRows().rows
        return self.contacts.props(identities)
