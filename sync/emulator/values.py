"""Which values Loops takes: emails, dates, the four property types, the length of a value.

Where the docs are silent the stricter reading is taken, as everywhere in the emulator.
"""

from __future__ import annotations

import json
import re
from datetime import datetime

__all__ = [
    "MAX_VALUE_CHARS",
    "fits_type",
    "is_loops_date",
    "is_number",
    "is_scalar",
    "is_valid_email",
    "too_long",
]

MAX_VALUE_CHARS = 500
_MILLISECONDS = re.compile(r"\d+", re.ASCII)
# Loops' documented date formats: YYYY-MM-DD, or YYYY-MM-DDTHH:MM[:SS[.sss]] with an optional
# ±HH:MM offset. A trailing "Z" isn't among them, so it is refused (stricter reading).
_DATE = re.compile(
    r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{3})?)?([+-]\d{2}:\d{2})?)?", re.ASCII
)


def is_valid_email(email: str) -> bool:
    """A simple strict check (Loops doesn't document its own).

    One "@", a non-empty local part, a domain with a dot and no empty labels, no whitespace.
    """
    if email.count("@") != 1 or any(char.isspace() for char in email):
        return False
    local, domain = email.split("@")
    return bool(local) and "." in domain and all(domain.split("."))


def is_loops_date(value: object) -> bool:
    """A value Loops accepts for a date property: Unix milliseconds or an ISO-like string."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value >= 0
    if not isinstance(value, str):
        return False
    if _MILLISECONDS.fullmatch(value):
        return True
    try:
        # The regex says which forms are allowed, fromisoformat that the date exists.
        return bool(_DATE.fullmatch(value)) and bool(datetime.fromisoformat(value))
    except ValueError:  # well-formed but impossible, e.g. 2024-02-30
        return False


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_scalar(value: object) -> bool:
    return isinstance(value, str | bool) or is_number(value)


def fits_type(value: object, kind: str | None) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return is_number(value)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "date":
        return is_loops_date(value)
    # Unknown to the team: any scalar is accepted (and kept), as Loops has done since 2024.
    return is_scalar(value)


def too_long(text: str) -> bool:
    """Loops counts a value's JSON form, quotes included. Loops runs on Node, so this counts as
    `JSON.stringify(value).length` does: escapes lengthen it, non-ASCII stays one character,
    and a character outside the BMP counts twice (UTF-16). The docs name no unit; this is the
    one Loops' runtime uses.
    """
    if len(text) <= 83:  # even fully escaped (\u0000: 6 characters each), 83 fit in 500
        return False
    encoded = json.dumps(text, ensure_ascii=False)
    return len(encoded.encode("utf-16-le")) // 2 > MAX_VALUE_CHARS
