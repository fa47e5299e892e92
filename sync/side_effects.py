"""What Loops does besides storing values, counted from the plan before it happens.

An upsert does more than write properties: a contact Loops did not have is created, which starts
the team's "Contact added" workflows (a CSV import in the Loops UI does not); `subscribed: true`
re-subscribes a person who opted out; a null (`empty: clear`) erases a value. `plan`, the run
summary and the JSON report show these as counts with a few contacts each, so a person sees them
before a run makes them.

"Created" is what this sync's ledger can tell: a contact it never delivered. Loops creates such a
contact unless someone else put it there first (then it is updated, and no workflow starts).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import polars as pl

from sync.columns import ROW

__all__ = ["CLEARED", "EXAMPLES", "SideEffects", "side_effects_of"]

EXAMPLES = 3  # contacts named per effect
CLEARED = "cleared:"  # an example's effect: a property cleared, by name


@dataclass(frozen=True)
class SideEffects:
    """Contacts each effect touches (`cleared`: per property), and the first few of them, by
    email or userId (`examples`: effect → contacts)."""

    contacts_created: int = 0
    subscribed_true: int = 0
    subscribed_false: int = 0
    properties_cleared: dict[str, int] = field(default_factory=dict)
    # Contacts that left the source and are removed as `contact.removed` says (`removal`).
    contacts_removed: int = 0
    removal: str | None = None
    examples: dict[str, tuple[str, ...]] = field(default_factory=dict)  # "cleared:<name>" too
    # The source row of each example: a plan is counted a part at a time, in no row order.
    example_rows: dict[str, tuple[float, ...]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __add__(self, other: SideEffects) -> SideEffects:
        """Both counted; the examples are the first few contacts of both in source order."""
        firsts = {
            effect: sorted(self._examples_of(effect) + other._examples_of(effect), key=_row)[
                :EXAMPLES
            ]
            for effect in self.examples.keys() | other.examples.keys()
        }
        return SideEffects(
            contacts_created=self.contacts_created + other.contacts_created,
            subscribed_true=self.subscribed_true + other.subscribed_true,
            subscribed_false=self.subscribed_false + other.subscribed_false,
            properties_cleared=dict(
                Counter(self.properties_cleared) + Counter(other.properties_cleared)
            ),
            contacts_removed=self.contacts_removed + other.contacts_removed,
            removal=self.removal or other.removal,
            examples={effect: tuple(name for _, name in pairs) for effect, pairs in firsts.items()},
            example_rows={
                effect: tuple(row for row, _ in pairs) for effect, pairs in firsts.items()
            },
        )

    def _examples_of(self, effect: str) -> list[tuple[float, str]]:
        """An effect's examples with their rows (those given without one come after)."""
        names = self.examples.get(effect, ())
        rows = self.example_rows.get(effect, (math.inf,) * len(names))
        return list(zip(rows, names, strict=True))

    def to_json(self) -> dict[str, Any]:
        """The counts, and the examples by the same names (`properties_cleared`: by property)."""
        examples: dict[str, Any] = {}
        for effect, names in sorted(self.examples.items()):
            if effect.startswith(CLEARED):
                examples.setdefault("properties_cleared", {})[effect[len(CLEARED) :]] = list(names)
            else:
                examples[effect] = list(names)
        return {
            "contacts_created": self.contacts_created,
            "subscribed_true": self.subscribed_true,
            "subscribed_false": self.subscribed_false,
            "properties_cleared": dict(sorted(self.properties_cleared.items())),
            "contacts_removed": self.contacts_removed,
            "removal": self.removal,
            "examples": examples,
        }


def side_effects_of(
    upserts: pl.DataFrame, created: pl.Series, clearable: tuple[str, ...]
) -> SideEffects:
    """The effects of sending `upserts` (row, identity, body: the contact requests of a plan,
    folded or not), `created` marking those Loops lacks; `clearable`: the properties a null
    may be sent for (`empty: clear`)."""
    if upserts.is_empty():
        return SideEffects()
    body = pl.col("body")
    masks = {
        "contacts_created": pl.lit(created),
        "subscribed_true": body.str.contains('"subscribed":true', literal=True),
        "subscribed_false": body.str.contains('"subscribed":false', literal=True),
        **{CLEARED + name: body.str.contains(_null(name), literal=True) for name in clearable},
    }
    marked = upserts.with_columns(mask.alias(effect) for effect, mask in masks.items()).sort(ROW)
    counts = marked.select(pl.col(effect).sum() for effect in masks).row(0, named=True)
    firsts = {
        effect: marked.filter(pl.col(effect)).head(EXAMPLES)
        for effect, count in counts.items()
        if count
    }
    return SideEffects(
        contacts_created=counts["contacts_created"],
        subscribed_true=counts["subscribed_true"],
        subscribed_false=counts["subscribed_false"],
        properties_cleared={
            effect.removeprefix(CLEARED): count
            for effect, count in counts.items()
            if effect.startswith(CLEARED) and count
        },
        examples={
            effect: tuple(first.get_column("identity").str.slice(2))
            for effect, first in firsts.items()
        },
        example_rows={effect: tuple(first.get_column(ROW)) for effect, first in firsts.items()},
    )


def _row(example: tuple[float, str]) -> float:
    return example[0]


def _null(name: str) -> str:
    """How a body sends a null for `name`, as canonical JSON writes it."""
    return orjson.dumps(name).decode() + ":null"
