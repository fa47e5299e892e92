"""What a plan warns of before anything is sent: upserts Loops will refuse, rows it would merge.

Both are found while planning picks each pending slice, so memory holds counts and a few
examples, never the rows. `plan`, the run (before it sends, and in its summary) and the JSON
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
from sync.columns import ROW, contact_column
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
    shared: str
    differing: list[str]
    rows: str


@dataclass
class Forewarnings:
    """Counted as planning picks each pending slice (`add`), then read as lines (`lines`).

    `conflicts`: deduplication's (row, kind, rows), for the counts of shared emails and user
    ids; the examples come from the slices, which hold the values.
    """

    conflicts: pl.DataFrame
    uncreatable: int = 0
    _uncreatable_examples: list[str] = field(default_factory=list)
    _examples: dict[str, dict[str, _Example]] = field(default_factory=dict)

    def add(self, piece: pl.DataFrame, candidates: Candidates, held: Held) -> None:
        """Count one pending slice: its candidates' upserts, and its rows' conflicts."""
        self._count_uncreatable(candidates.contacts, held)
        if not self.conflicts.is_empty():
            self._note_conflicts(piece)

    def _count_uncreatable(self, contacts: pl.DataFrame, held: Held) -> None:
        """Upserts by user id alone of contacts the ledger never saw delivered. The ledger is
        asked about these few only."""
        by_user = contacts.filter(pl.col("email").is_null(), pl.col("userId").is_not_null())
        if by_user.is_empty():
            return
        unknown = by_user.filter(~held.knows_contacts(by_user.get_column("identity")))
        self.uncreatable += unknown.height
        room = EXAMPLES - len(self._uncreatable_examples)
        for row, user_id in unknown.sort(ROW).head(room).select(ROW, "userId").iter_rows():
            self._uncreatable_examples.append(f"row {row}, user id {user_id}")

    def _note_conflicts(self, piece: pl.DataFrame) -> None:
        """Examples of the first few conflicts: the shared value and the differing ones. A
        conflict's rows may span slices: an example already begun gathers the rest."""
        email = pl.col(contact_column("email"))
        identity = pl.col(contact_column("identity"))
        user_id = pl.when(identity.str.starts_with("u:")).then(identity.str.slice(2))
        mine = piece.select(ROW, email.alias("email"), user_id.alias("user_id")).join(
            self.conflicts, on=ROW, how="inner"
        )
        for kind, shared, differing, missing in (
            ("email", "email", "user_id", "no user id"),
            ("user id", "user_id", "email", "no email"),
        ):
            examples = self._examples.setdefault(kind, {})
            picked = _first_conflicts(mine.filter(pl.col("kind") == kind), examples)
            for rows, value, other in picked.select("rows", shared, differing).iter_rows():
                example = examples.setdefault(rows, _Example(str(value), [], rows))
                other_text = missing if other is None else str(other)
                if other_text not in example.differing:
                    example.differing.append(other_text)

    def lines(self) -> list[str]:
        """The warnings, each a count with a few examples and what to do."""
        found = []
        if self.uncreatable:
            found.append(
                f"{self.uncreatable} contacts have a user id but no email, and this sync never "
                f"delivered them (e.g. {'; '.join(self._uncreatable_examples)}): Loops creates "
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

    def _conflict_line(self, kind: str, groups: int, rows: int) -> str:
        what, fix = _SHARED[kind]
        examples = "; ".join(
            f"{_shown(kind, example.shared)}: {'user ids ' if kind == 'email' else ''}"
            f"{', '.join(example.differing)} "
            f"on rows {_first_rows(example.rows)}"
            for example in self._examples.get(kind, {}).values()
        )
        return (
            f"{groups} {what}{f' (e.g. {examples})' if examples else ''}: Loops would make "
            f"each one contact, so these {rows} rows are rejected; {fix}"
        )


def _first_conflicts(found: pl.DataFrame, examples: dict[str, _Example]) -> pl.DataFrame:
    """The rows of `found` (row, kind, rows and values) that go into the examples: those of a
    conflict already begun, and those of the first few new ones, in row order."""
    begun = pl.col("rows").is_in(list(examples))
    new = found.filter(~begun).sort(ROW).get_column("rows").unique(maintain_order=True)
    firsts = new.head(EXAMPLES - len(examples)).implode()
    return found.filter(begun | pl.col("rows").is_in(firsts)).sort(ROW)


def _shown(kind: str, value: str) -> str:
    return f"'{value}'" if kind == "email" else f"user id {value}"


def _first_rows(rows: str) -> str:
    numbers = rows.split(", ")
    more = ", …" if len(numbers) > ROWS_SHOWN else ""
    return ", ".join(numbers[:ROWS_SHOWN]) + more
