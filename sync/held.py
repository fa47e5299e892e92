"""What planning asks of the ledger: which payloads, identities and event keys Loops holds.

`Held` is built once per run from the ledger and is the planner's only view of it: settling a
slice (`sync.settle`), the status of a contact (new, changed, retry), whether an occurrence was
delivered, and the few per-contact facts a plan reports. How it is held in memory is its own
business; every question is asked with a column of values and answered with a mask.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import polars as pl

from sync.snapshot import Snapshot

__all__ = ["Held"]


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

    def mask(self, values: pl.Series) -> pl.Series:
        """Whether each of `values` is held, lined up with `values` by position. A column of
        nulls (a key the config cannot make) holds none, without a join."""
        if values.null_count() == values.len() or self.table.is_empty():
            return pl.repeat(False, values.len(), eager=True).alias(values.name)
        probe = pl.DataFrame({"fp": values.hash(), "value": values}).with_row_index("i")
        found = (
            probe.join(self.table, on="fp", how="inner", suffix="_held")
            .filter(pl.col("value") == pl.col("value_held"))
            .get_column("i")
        )
        return probe.get_column("i").is_in(found.implode()).alias(values.name)


@dataclass(frozen=True)
class Held:
    """The ledger's confirmed state for one sync, as planning asks it.

    `hashes`: the payload hash last delivered for each contact; `identities`: the contacts
    delivered; `events`: every key a delivered occurrence is known by; `retried`: the refs of
    requests that failed (never settled: they are retried); `legacy`: some event keys are `ls1`
    keys; `other_once_per`: see `Snapshot.other_once_per`; `props`: identity and the body keys
    last delivered (`Snapshot.contacts`), for what `empty: skip` leaves in Loops.
    """

    hashes: _Lookup
    identities: _Lookup
    events: _Lookup
    retried: pl.Series
    legacy: bool
    other_once_per: pl.DataFrame
    props: pl.DataFrame

    @classmethod
    def of(cls, confirmed: Snapshot) -> Held:
        return cls(
            _Lookup.of(confirmed.contacts.get_column("hash")),
            _Lookup.of(confirmed.contacts.get_column("identity")),
            _Lookup.of(confirmed.events.get_column("key")),
            confirmed.failures.get_column("ref"),
            confirmed.legacy_events,
            confirmed.other_once_per,
            confirmed.contacts.select("identity", "props"),
        )

    @classmethod
    def nothing(cls) -> Held:
        """A ledger that holds nothing: every request is new."""
        return cls.of(Snapshot.empty())

    def without_contacts(self) -> Held:
        """For `--full`: every contact counts as unsent; events stay delivered, never repeated."""
        none = Held.nothing()
        return replace(self, hashes=none.hashes, identities=none.identities, props=none.props)

    def holds_payloads(self, hashes: pl.Series) -> pl.Series:
        """Whether Loops holds each contact payload (by its hash) and no retry of it is due is
        the caller's to add: a body names the email or userId its identity is made of (the
        config reserves those names), so no two identities share a hash."""
        return self.hashes.mask(hashes)

    def knows_contacts(self, identities: pl.Series) -> pl.Series:
        """Whether each contact was delivered before, whatever its payload then."""
        return self.identities.mask(identities)

    def failed(self, refs: pl.Series) -> pl.Series:
        """Whether each ref (a contact identity, an event key) failed before: a retry is due."""
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
        """identity, props: the body keys last delivered to each of `identities` that has any."""
        wanted = pl.DataFrame({"identity": identities.unique()})
        return wanted.join(self.props, on="identity", how="inner").filter(
            pl.col("props").is_not_null()
        )
