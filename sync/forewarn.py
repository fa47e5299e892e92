"""What a plan warns of before anything is sent: upserts Loops will refuse, rows it would merge.

Both are found while planning picks each part of the pending rows, so memory holds counts and a
few examples, never the rows. `plan`, the run (before it sends, and in its summary) and the JSON
report show the same lines.

- A contact with a user id and no email that this sync never delivered: Loops creates a
  contact only with an email (a userId alone must match a contact it has), so unless someone
  else created it in Loops its upsert is refused with a 400, run after run, and the row is
  rejected each time. The ledger knows which contacts were delivered before; those are fine.
- One email on rows with different user ids (or one user id with different emails): Loops
  would make them one contact. Deduplication rejects every such row (`sync.dedupe`), each
  with its own reason; the warning says how many emails (user ids) that is, with examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from sync.candidates import Candidates
from sync.columns import HOME, ROW, contact_column
from sync.held import Held

__all__ = ["EXAMPLES", "Forewarnings"]

EXAMPLES = 3  # contacts, emails or user ids named per warning
ROWS_SHOWN = 5  # row numbers named per example
# Per kind of conflict (`sync.dedupe`): what the rows share, what differs, and how to fix it.
_SHARED = {
    "email": ("emails are each on rows with different user ids", "keep one user id per email"),
    "user id": ("user ids each come with different emails", "keep one email per user id"),
}


@dataclass
class _Example:
    """A conflict shown as an example: the value its rows share, and each other value with the
    first row it is on."""

    shared: str
    rows: str
    differing: dict[str, int] = field(default_factory=dict)


@dataclass
class Forewarnings:
    """Counted as planning picks each part of the pending rows (`add`), then read as lines
    (`lines`). Parts come in no row order: the examples are the first in row order all the same.

    `conflicts`: deduplication's (row, kind, rows), for the counts of shared emails and user
    ids, and to choose the examples (the first conflicts of each kind); their values come from
    the parts, which hold them.
    """

    conflicts: pl.DataFrame
    uncreatable: int = 0
    _uncreatable_examples: list[tuple[int, str]] = field(default_factory=list)
    _examples: dict[str, dict[str, _Example]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        firsts = (
            self.conflicts.group_by("kind", "rows")
            .agg(pl.col(ROW).min())
            .sort(ROW)
            .group_by("kind", maintain_order=True)
            .head(EXAMPLES)
        )
        for kind, rows in firsts.select("kind", "rows").iter_rows():
            self._examples.setdefault(kind, {})[rows] = _Example("", rows)

    def add(self, piece: pl.DataFrame, candidates: Candidates, held: Held) -> None:
        """Count one part: its candidates' upserts, and its rows' conflicts."""
        self._count_uncreatable(candidates.contacts, held)
        if self._examples:
            self._note_conflicts(piece.filter(pl.col(HOME)) if HOME in piece.columns else piece)

    def _count_uncreatable(self, contacts: pl.DataFrame, held: Held) -> None:
        """Upserts by user id alone of contacts the ledger never saw delivered. The ledger is
        asked about these few only."""
        by_user = contacts.filter(pl.col("email").is_null(), pl.col("userId").is_not_null())
        if by_user.is_empty():
            return
        unknown = by_user.filter(~held.knows_contacts(by_user.get_column("identity")))
        self.uncreatable += unknown.height
        firsts = unknown.sort(ROW).head(EXAMPLES).select(ROW, "userId").iter_rows()
        examples = self._uncreatable_examples + [(row, user_id) for row, user_id in firsts]
        self._uncreatable_examples = sorted(examples)[:EXAMPLES]

    def _note_conflicts(self, piece: pl.DataFrame) -> None:
        """The values of the example conflicts' rows in `piece`."""
        email = pl.col(contact_column("email"))
        identity = pl.col(contact_column("identity"))
        user_id = pl.when(identity.str.starts_with("u:")).then(identity.str.slice(2))
        chosen = self.conflicts.filter(
            pl.col("rows").is_in([rows for kind in self._examples.values() for rows in kind])
        )
        mine = piece.select(ROW, email.alias("email"), user_id.alias("user_id")).join(
            chosen, on=ROW, how="inner"
        )
        for kind, shared, differing, missing in (
            ("email", "email", "user_id", "no user id"),
            ("user id", "user_id", "email", "no email"),
        ):
            examples = self._examples.get(kind, {})
            found = mine.filter(pl.col("kind") == kind).select("rows", ROW, shared, differing)
            for rows, row, value, other in found.iter_rows():
                example = examples[rows]
                example.shared = str(value)
                other_text = missing if other is None else str(other)
                example.differing[other_text] = min(row, example.differing.get(other_text, row))

    def lines(self) -> list[str]:
        """The warnings, each a count with a few examples and what to do."""
        found = []
        if self.uncreatable:
            found.append(
                f"{self.uncreatable} contacts have a user id but no email, and this sync never "
                f"delivered them (e.g. {self._uncreatable_text()}): Loops creates "
                "a contact only with an email, so unless they already exist in Loops their "
                "upserts are refused (400) and their rows rejected, on every run; give them "
                "an email, or create them in Loops first"
            )
        if self.conflicts.is_empty():
            return found
        counted = (
            self.conflicts.group_by("kind")
            .agg(pl.col("rows").n_unique().alias("groups"), pl.len().alias("rows"))
            .sort("kind")
        )
        for kind, groups, rows in counted.iter_rows():
            found.append(self._conflict_line(kind, groups, rows))
        return found

    def _uncreatable_text(self) -> str:
        return "; ".join(
            f"row {row}, user id {user_id}" for row, user_id in self._uncreatable_examples
        )

    def _conflict_line(self, kind: str, groups: int, rows: int) -> str:
        what, fix = _SHARED[kind]
        examples = "; ".join(
            f"{_shown(kind, example.shared)}: {'user ids ' if kind == 'email' else ''}"
            f"{', '.join(sorted(example.differing, key=example.differing.__getitem__))} "
            f"on rows {_first_rows(example.rows)}"
            for example in self._examples.get(kind, {}).values()
            if example.differing
        )
        return (
            f"{groups} {what}{f' (e.g. {examples})' if examples else ''}: Loops would make "
            f"each one contact, so these {rows} rows are rejected; {fix}"
        )


def _shown(kind: str, value: str) -> str:
    return f"'{value}'" if kind == "email" else f"user id {value}"


def _first_rows(rows: str) -> str:
    numbers = rows.split(", ")
    more = ", …" if len(numbers) > ROWS_SHOWN else ""
    return ", ".join(numbers[:ROWS_SHOWN]) + more
