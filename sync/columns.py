"""The columns a mapped slice carries from mapping to planning, named in one place.

Mapping writes them, planning (settle, dedupe, gather) reads them; neither spells a name out.
A contact's columns share one prefix and each event's another, so that one flat frame holds
every request a row makes.
"""

from __future__ import annotations

__all__ = [
    "BUCKET",
    "COLUMN_SEPARATOR",
    "CONTACT",
    "HOME",
    "PROBLEMS",
    "PROBLEM_SEPARATOR",
    "ROW",
    "contact_column",
    "event_column",
]

# Each source row's number, from 1, carried through every stage to the rejects file.
ROW = "__row"

# Every problem of a row, each as 'column<COLUMN_SEPARATOR>reason', joined by PROBLEM_SEPARATOR;
# null when the row has none. Control characters: no column name or reason holds them.
PROBLEMS = "__problems"
PROBLEM_SEPARATOR = "\x1e"
COLUMN_SEPARATOR = "\x1f"

CONTACT = "__c."

# Planning keeps pending rows by the buckets of their requests' identities (`sync.candidates`):
# a row's copy in each bucket its requests go to, and whether the copy is the row's own (its
# first request's bucket: where the row's rejects are counted).
BUCKET = "__bucket"
HOME = "__home"


def contact_column(name: str) -> str:
    """A column of the row's contact upsert: identity, body, hash, email, userId."""
    return CONTACT + name


def event_column(index: int, name: str = "") -> str:
    """A column of the row's occurrence of the config's event `index` (its prefix when no
    `name`): applies, identity, key, key_email, key_user, legacy, once_per, body, email, userId."""
    return f"__e{index}.{name}"
