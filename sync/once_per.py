"""Events delivered under earlier `once_per` columns: which of today's occurrences they stand for.

When an event's `once_per` columns change, its delivered occurrences are compared with today's
on the columns both have (see `held_under_other_once_per`). Rare: no event of a usual ledger
has other columns, and then nothing here runs.
"""

from __future__ import annotations

import polars as pl

from sync.keys import json_object, json_value
from sync.snapshot import once_per_columns

__all__ = ["held_under_other_once_per"]


def held_under_other_once_per(events: pl.DataFrame, held: pl.DataFrame) -> pl.Series:
    """Whether an event delivered under earlier `once_per` columns stands for each occurrence.

    When an event's `once_per` columns change, its delivered occurrences are compared with
    today's on the columns both have: with columns removed, a contact that had the event has
    it; with columns added, the occurrences in the source at the first run after the change
    stand for the one delivered before (they are recorded as delivered, `Plan.adopted`), and
    occurrences that appear later are new. Not for a contact that already has an occurrence
    under today's columns: the change was adopted for it before. `held`: `Held.other_once_per`.
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
