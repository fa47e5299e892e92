"""Settle mapped rows against the ledger: what Loops already holds is set aside as it is mapped.

Planning's first step, slice by slice, asking the ledger through `sync.held.Held`. A row whose
every request Loops confirmed keeps only what deduplication and the counts need, a body Loops
holds is dropped, and an occurrence found by one of its identifiers only is learned by the other.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import polars as pl

from sync.columns import PROBLEMS, contact_column, event_column
from sync.config_model import SyncConfig
from sync.dedupe import census
from sync.held import Held

__all__ = [
    "NOTHING_LEARNED",
    "SettledSlice",
    "settle",
]

# A delivered occurrence found by one identifier that now carries another: `by`, the key it
# was found by; the other key and identifier, for the ledger to find it by those too.
NOTHING_LEARNED = pl.DataFrame(
    schema=dict.fromkeys(("by", "key_email", "key_user", "email", "user_id"), pl.String)
)


@dataclass(frozen=True)
class SettledSlice:
    """A mapped slice: `pending`, rows with something to send or to reject, all columns;
    `census`, what deduplication needs of every row, the settled ones (whose every request
    Loops holds) included (`sync.dedupe.census`); and the identifiers the ledger learns."""

    pending: pl.DataFrame
    census: pl.DataFrame
    learned: pl.DataFrame


def settle(spec: SyncConfig, piece: pl.DataFrame, held: Held | None) -> SettledSlice:
    """Set aside the rows whose every request Loops already holds, and the bodies it holds.

    A nightly run over a big table should not hold a million bodies it won't send: a settled
    row keeps only its census. A request that failed before is never settled: it is retried.
    """
    if held is None or held.holds_nothing:
        return SettledSlice(piece, census(spec, piece, settled=False), NOTHING_LEARNED)
    skip_body: dict[str, pl.Expr] = {}  # body column: whether Loops holds it (no retry due)
    whole = pl.col(PROBLEMS).is_null()
    if spec.contact:
        hashes = held.holds_payloads(piece.get_column(contact_column("hash")))
        retried = held.failed(piece.get_column(contact_column("identity")))
        skip_body[contact_column("body")] = pl.lit(hashes & ~retried)
        whole &= skip_body[contact_column("body")]
    learned = [NOTHING_LEARNED]
    for index in range(len(spec.events)):
        key = event_column(index, "key")
        by_email, by_user = held.event_matches(piece, event_column(index))
        learned.append(_learned(piece, by_email, by_user, event_column(index)))
        retried = held.failed(piece.get_column(key))
        skip_body[event_column(index, "body")] = pl.lit((by_email | by_user) & ~retried)
        whole &= ~pl.col(event_column(index, "applies")) | skip_body[event_column(index, "body")]
    marked = piece.with_columns(
        whole.alias("__settled"),
        *(pl.when(~skip).then(pl.col(body)).alias(body) for body, skip in skip_body.items()),
    )
    pending = marked.filter(~pl.col("__settled")).drop("__settled")
    # Mostly pending (a first sync), its buffers are mostly in use: copying would gain little.
    if pending.height < piece.height // 2:
        pending = _compact(pending)
    counted = pl.concat(
        [
            census(spec, pending, settled=False),
            census(spec, marked.filter(pl.col("__settled")), settled=True),
        ]
    )
    return SettledSlice(pending, counted, pl.concat(learned))


def _learned(
    piece: pl.DataFrame, by_email: pl.Series, by_user: pl.Series, prefix: str
) -> pl.DataFrame:
    """Occurrences Loops holds by one of their keys only, though they carry both identifiers:
    a contact that gained a user id (or an email) since. The ledger learns the other key, or a
    later change of the first identifier (a new email) would make the occurrence look new."""
    if not (by_email ^ by_user).any():
        return NOTHING_LEARNED
    both = pl.col(prefix + "key_email").is_not_null() & pl.col(prefix + "key_user").is_not_null()
    rows = piece.with_columns(by_email.alias("__by_email")).filter(
        pl.col(prefix + "applies") & pl.col(PROBLEMS).is_null() & both & pl.lit(by_email ^ by_user)
    )
    if rows.is_empty():
        return NOTHING_LEARNED
    return rows.select(
        pl.when(pl.col("__by_email"))
        .then(pl.col(prefix + "key_email"))
        .otherwise(pl.col(prefix + "key_user"))
        .alias("by"),
        pl.col(prefix + "key_email").alias("key_email"),
        pl.col(prefix + "key_user").alias("key_user"),
        pl.col(prefix + "email").alias("email"),
        pl.col(prefix + "userId").alias("user_id"),
    )


def _compact(frame: pl.DataFrame) -> pl.DataFrame:
    """The same rows in fresh buffers, so that the rows filtered out are freed.

    A filtered Polars string column still holds every buffer of the column it came from. Written
    as Arrow IPC without string views (the oldest compat level) only the values kept are copied
    (about 30 ms per 100k rows), and read back they sit in buffers of their own.
    """
    buffer = io.BytesIO()
    frame.write_ipc(buffer, compat_level=pl.CompatLevel.oldest())
    buffer.seek(0)
    return pl.read_ipc(buffer)
