"""What Loops has confirmed for one sync, as the planner compares against it: the ledger's
snapshot, read once per run, and how an event's `once_per` columns are named in it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import polars as pl

__all__ = [
    "ONCE_PER_SCHEMA",
    "Snapshot",
    "empty_once_per",
    "once_per_columns",
    "once_per_signature",
]

ONCE_PER_SCHEMA = {
    "event": pl.String,
    "email": pl.String,
    "user_id": pl.String,
    "once_per": pl.String,
    "current": pl.Boolean,
}


def empty_once_per() -> pl.DataFrame:
    return pl.DataFrame(schema=ONCE_PER_SCHEMA)


@dataclass(frozen=True)
class Snapshot:
    """What Loops has confirmed for one sync, as the plan compares against it.

    `contacts`: identity, hash, props (the keys last delivered, as ',a,b,'). `events`: key,
    every key a delivered occurrence is known by (its email's, its userId's, an `ls1` key).
    `failures`: kind, ref, attempts, last_error. `legacy_events`: some of those keys are `ls1`
    keys. `other_once_per`: for an event whose
    `once_per` columns changed, every occurrence the ledger holds: event, email, user_id,
    once_per (a JSON object), current (whether it has today's columns).
    """

    contacts: pl.DataFrame
    events: pl.DataFrame
    failures: pl.DataFrame
    legacy_events: bool = False
    other_once_per: pl.DataFrame = field(default_factory=empty_once_per)

    @classmethod
    def empty(cls) -> Snapshot:
        return cls(
            pl.DataFrame(schema={"identity": pl.String, "hash": pl.String, "props": pl.String}),
            pl.DataFrame(schema={"key": pl.String}),
            pl.DataFrame(
                schema={
                    "kind": pl.String,
                    "ref": pl.String,
                    "attempts": pl.Int64,
                    "last_error": pl.String,
                }
            ),
        )

    def without_contacts(self) -> Snapshot:
        """For `--full`: every contact counts as unsent; events stay delivered, never repeated."""
        return Snapshot(
            Snapshot.empty().contacts,
            self.events,
            self.failures,
            self.legacy_events,
            self.other_once_per,
        )


def once_per_signature(columns: Iterable[str]) -> str:
    """An event's `once_per` column names as one text, the same however they are ordered."""
    return "\x1f".join(sorted(columns))


def once_per_columns() -> pl.Expr:
    """The column names of each `once_per` JSON object (column `once_per`), as
    `once_per_signature` writes them: a value never ends in a quote and a colon, a key does."""
    names = pl.col("once_per").str.extract_all(r'"((?:[^"\\]|\\.)*)":')
    return names.list.eval(pl.element().str.slice(1).str.strip_suffix('":')).list.join("\x1f")
