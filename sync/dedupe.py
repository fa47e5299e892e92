"""Deduplicate the mapped rows of the whole source: the last row of a contact or an occurrence
wins, and rows that Loops would make one contact are rejected together.

Slices are mapped one by one; this is the step that needs every row at once, the settled ones
included (Loops holds them, yet a later row of theirs still wins over an earlier one).
"""

from __future__ import annotations

import polars as pl

from sync.columns import COLUMN_SEPARATOR, PROBLEMS, ROW, contact_column, event_column
from sync.config import SyncConfig

__all__ = ["by_both", "contacts", "events", "one_contact_twice", "rejected_last"]


def one_contact_twice(spec: SyncConfig, checked: pl.DataFrame, settled: pl.DataFrame) -> pl.Expr:
    """The problem of each row that Loops would make one contact with another row's.

    Loops matches a contact by email or userId: `ann@x.com` with user id 1 and `ann@x.com` with
    user id 2 (or none) are one contact there, and the second upsert would rewrite the first's
    user id; user id 7 on `a@x.com` and on `b@x.com` is one contact too, and an event sent with
    the email of the row that lost would create a second, empty one. Which row is right is not
    ours to guess: every such row is rejected, naming the others. Rows Loops already holds
    (settled) count as the others too.
    """
    if not by_both(spec) or spec.contact is None:
        return pl.col(PROBLEMS)
    pending = checked.filter(pl.col(PROBLEMS).is_null()).select(
        ROW,
        pl.col(contact_column("identity")).alias("identity"),
        pl.col(contact_column("email")).alias("email"),
    )
    everyone = pl.concat([pending, settled.select(ROW, "identity", "email")])
    last = everyone.filter(pl.col(ROW) == pl.col(ROW).max().over("identity"))
    by_user_id = everyone.filter(pl.col("identity").str.starts_with("u:"))
    conflicts = [
        _sharing(last, "email", "identity", "'{}' is on rows {} with different user ids"),
        _sharing(by_user_id, "identity", "email", "user id {} is on rows {} with different emails"),
    ]
    reasons = (
        pl.concat(conflicts)
        .group_by(ROW)
        .agg(pl.col("reason").str.join("; "))
        .select(ROW, pl.lit(f"{spec.contact.email}{COLUMN_SEPARATOR}") + pl.col("reason"))
    )
    if reasons.is_empty():
        return pl.col(PROBLEMS)
    conflict = pl.col(ROW).replace_strict(
        reasons.get_column(ROW), reasons.get_column("literal"), default=None
    )
    return pl.coalesce(pl.col(PROBLEMS), conflict)


def by_both(spec: SyncConfig) -> bool:
    """Whether contacts carry an email and a user id: then two rows can reach one contact."""
    return spec.contact is not None and None not in (spec.contact.email, spec.contact.user_id)


def _sharing(rows: pl.DataFrame, shared: str, differing: str, wording: str) -> pl.DataFrame:
    """Row and reason for each of `rows` whose `shared` value comes with more than one value of
    `differing` (a missing one counts as a value)."""
    groups = (
        rows.filter(pl.col(shared).is_not_null())
        .group_by(shared)
        .agg(pl.col(ROW).sort(), pl.col(differing).n_unique().alias("values"))
        .filter(pl.col("values") > 1)
    )
    named = pl.col(shared).str.replace(r"^u:", "")
    reason = pl.format(
        wording + ": Loops would make them one contact; keep one row per person",
        named,
        pl.col(ROW).cast(pl.List(pl.String)).list.join(", "),
    )
    return groups.select(reason.alias("reason"), ROW).explode(ROW).select(ROW, "reason")


def contacts(
    spec: SyncConfig, checked: pl.DataFrame, settled: pl.DataFrame
) -> tuple[pl.DataFrame, int, int]:
    """One body per identity, from its last row; the count of duplicates; and of the identities
    whose last row is settled (Loops holds it: unchanged). A rejected last row wins too: the
    identity is then sent nothing, rather than the older values of an earlier row.

    `foldable`: whether this upsert may ride on an event (see `plan`): it has an email, and
    its body holds neither a null (`empty: clear`) nor `subscribed`, whose meaning on an event
    Loops does not document.
    """
    if spec.contact is None:
        return _empty_contacts(), 0, 0
    section = spec.contact
    plain = section.empty == "skip" and "subscribed" not in section.properties
    ranked = checked.select(
        ROW,
        pl.col(contact_column("identity")).alias("identity"),
        pl.col(PROBLEMS).is_null().alias("__valid"),
        pl.col(contact_column("body")).alias("body"),
        pl.col(contact_column("email")).alias("email"),
        pl.col(contact_column("userId")).alias("userId"),
        (pl.col(contact_column("email")).is_not_null() & pl.lit(plain)).alias("foldable"),
        pl.col(contact_column("hash")).alias("hash"),
    ).filter(pl.col("identity").is_not_null())
    every_row = pl.concat([ranked.select(ROW, "identity"), settled.select(ROW, "identity")])
    last_rows = every_row.group_by("identity").agg(pl.col(ROW).max()).get_column(ROW).implode()
    is_last = pl.col(ROW).is_in(last_rows)
    last_settled = settled.filter(is_last).height
    duplicates = ranked.filter(pl.col("__valid") & ~is_last).height
    duplicates += settled.height - last_settled
    keep = ranked.filter(pl.col("__valid") & is_last).drop("__valid")
    return keep, duplicates, last_settled


def _empty_contacts() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            ROW: pl.UInt32,
            "identity": pl.String,
            "body": pl.String,
            "email": pl.String,
            "userId": pl.String,
            "foldable": pl.Boolean,
            "hash": pl.String,
        }
    )


def events(spec: SyncConfig, valid: pl.DataFrame) -> pl.DataFrame:
    """One line per occurrence (the last row of each key), in row order.

    `identity` is the contact the event goes with: the identity of its row's contact upsert
    where the sync has one, so that the upsert is sent first even when the event names the
    contact by another column; else the event's own identity.
    """
    schema = {
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
    frames = [pl.DataFrame(schema=schema)]
    for index, event in enumerate(spec.events):
        prefix = event_column(index)
        own = pl.col(prefix + "identity")
        identity = pl.coalesce(contact_column("identity"), own) if spec.contact else own
        legacy = prefix + "legacy"
        rows = valid.filter(pl.col(prefix + "applies")).select(
            ROW,
            identity.alias("identity"),
            pl.lit(event.name).alias("event"),
            *[
                pl.col(prefix + name).alias(name)
                for name in ("key", "key_email", "key_user", "once_per", "body", "email", "userId")
            ],
            (pl.col(legacy) if legacy in valid.columns else pl.lit(None, pl.String)).alias(
                "legacy"
            ),
        )
        frames.append(rows.filter(pl.col("key").is_last_distinct()).select(list(schema)))
    return pl.concat(frames, rechunk=False).sort(ROW, maintain_order=True)


def rejected_last(spec: SyncConfig, checked: pl.DataFrame, settled: pl.DataFrame) -> pl.Series:
    """The contacts whose last row is rejected: they get no upsert this run, so none of their
    events either (an event would create or update the contact without its properties)."""
    if spec.contact is None:
        return pl.Series([], dtype=pl.String).implode()
    rows = pl.concat(
        [
            checked.select(
                ROW,
                pl.col(contact_column("identity")).alias("identity"),
                pl.col(PROBLEMS).is_not_null(),
            ),
            settled.select(ROW, "identity", pl.lit(False).alias(PROBLEMS)),
        ]
    ).filter(pl.col("identity").is_not_null())
    last = rows.filter(pl.col(ROW) == pl.col(ROW).max().over("identity"))
    return last.filter(pl.col(PROBLEMS)).get_column("identity").implode()
