"""The `when` filters, SQL conditions on the source's columns: what keeps one from running on
the source's real columns, in the user's words.

Polars' own words name its types (`cannot compare string with numeric type (i32)`), and a
float compared with text is not even an error there: `Seats >= 3.5` compares the text '10'
with '3.5' and keeps 'n/a'. A comparison of a text column with a number is therefore refused
before any row is read, with the CAST that says what was meant.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import polars as pl

__all__ = ["filter_problem"]

_COLUMN = r'(?P<column>"[^"]+"|(?<![\w."])[A-Za-z_][A-Za-z0-9_]*)'
_NUMBER = r"(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_OPERATOR = r"(?:==|=|<>|!=|<=|>=|<|>)"
# A column compared with a number: `Seats > 3`, `3 < Seats`, `Seats BETWEEN 2 AND 9`,
# `Seats IN (1, 2)`.
_COMPARED = [
    re.compile(rf"{_COLUMN}\s*{_OPERATOR}\s*{_NUMBER}"),
    re.compile(rf"(?<![\w.\"]){_NUMBER}\s*{_OPERATOR}\s*{_COLUMN}"),
    re.compile(rf"{_COLUMN}\s+(?:NOT\s+)?BETWEEN\s+{_NUMBER}", re.IGNORECASE),
    re.compile(rf"{_COLUMN}\s+(?:NOT\s+)?IN\s*\(\s*{_NUMBER}", re.IGNORECASE),
]
_TEXT_LITERAL = re.compile(r"'(?:[^']|'')*'")


def filter_problem(when: str, schema: Mapping[str, pl.DataType], *, csv: bool) -> str | None:
    """What keeps `when` from running on rows of `schema`, or None when it runs.

    `csv`: the source is a CSV file, whose columns are all text (said so in the message)."""
    compared = _text_compared_with_number(when, schema)
    if compared:
        return _cast_advice(when, compared, schema, csv=csv)
    failure = _failure(when, schema)
    return f"cannot run: {failure}" if failure else None


def _failure(when: str, schema: Mapping[str, pl.DataType]) -> str | None:
    """The first line of Polars' error when `when` cannot run on an empty frame of `schema`."""
    try:
        pl.DataFrame(schema=dict(schema)).filter(pl.sql_expr(when))
    except Exception as error:  # noqa: BLE001  # Polars raises several types for bad SQL
        return str(error).strip().splitlines()[0] or type(error).__name__
    return None


def _text_compared_with_number(
    when: str, schema: Mapping[str, pl.DataType]
) -> list[tuple[int, int, str, str]]:
    """Each text column compared with a number: its span in `when`, its name and the number."""
    # Text literals are blanked (same length, so spans stay right): 'a > 3' compares nothing.
    masked = _TEXT_LITERAL.sub(lambda found: "'" + "\0" * (len(found[0]) - 2) + "'", when)
    spans: dict[int, tuple[int, int, str, str]] = {}
    for pattern in _COMPARED:
        for found in pattern.finditer(masked):
            name = found["column"].strip('"')
            if name in schema and schema[name] == pl.String:
                start, end = found.span("column")
                spans.setdefault(start, (start, end, found["column"], found["number"]))
    return sorted(spans.values())


def _cast_advice(
    when: str,
    compared: list[tuple[int, int, str, str]],
    schema: Mapping[str, pl.DataType],
    *,
    csv: bool,
) -> str:
    names = list(dict.fromkeys(column.strip('"') for _, _, column, _ in compared))
    quoted = ", ".join(f"'{name}'" for name in names)
    if csv:
        why = "CSV columns are text"
    else:
        why = f"{quoted} {'is' if len(names) == 1 else 'are'} text in the source"
    cast = when
    for start, end, column, number in reversed(compared):
        sql_type = "INT" if re.fullmatch(r"[-+]?\d+", number) else "DOUBLE"
        cast = f"{cast[:start]}CAST({column} AS {sql_type}){cast[end:]}"
    if _failure(cast, schema) is not None:
        cast = f"CAST({compared[0][2]} AS INT)"
    return (
        f"`{when}` compares {quoted} with a number, but {why}: write `{cast}` (or TRY_CAST for "
        "CAST, so that a cell that is not a number matches nothing instead of stopping the run)"
    )
