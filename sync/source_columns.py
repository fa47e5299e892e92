"""The source's columns against the mapping, once the source is open and before any row is
read: every mapped column present (a missing one named with the closest there is, invisible
characters shown), none of them a list or struct, and every `when` able to run on them.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import polars as pl

from sync.config import Config
from sync.config_file import hidden_characters, visible
from sync.config_model import ContactSection, EventSection, SyncConfig
from sync.errors import ConfigError, ConfigProblem
from sync.filters import filter_problem

__all__ = ["check_columns"]


def check_columns(
    config: Config,
    schema: Mapping[str, pl.DataType],
    *,
    extra: Sequence[ConfigProblem] = (),
) -> None:
    """Every mapped column must exist in the source, and every `when` must run on it.

    `extra`: problems found elsewhere once the source is known, reported in the same error.
    """
    available = list(schema)
    problems = [*extra]
    for path, column in _column_references(config.spec):
        if column not in schema:
            problems.append(ConfigProblem(path, _missing_column(column, available)))
        elif schema[column].is_nested():
            problems.append(ConfigProblem(path, _nested_column(column, schema[column])))
    csv = config.spec.source.kind == "csv"
    for path, when in config.spec.filters():
        problem = filter_problem(when, schema, csv=csv)
        if problem:
            problems.append(ConfigProblem(path, problem))
    if problems:
        raise ConfigError(str(config.file), problems)


def _column_references(spec: SyncConfig) -> list[tuple[str, str]]:
    refs: list[tuple[str, str | None]] = []
    sections: list[tuple[str, ContactSection | EventSection]] = []
    if spec.contact:
        sections.append(("contact", spec.contact))
    sections += [(f"events[{i}]", event) for i, event in enumerate(spec.events)]
    for prefix, section in sections:
        refs += [(f"{prefix}.{key}", getattr(section, key)) for key in ("email", "user_id")]
        refs += [
            (f"{prefix}.properties.{name}", mapping.column)
            for name, mapping in section.properties.items()
        ]
        if isinstance(section, ContactSection):
            refs += [(f"{prefix}.mailing_lists.{k}", v) for k, v in section.mailing_lists.items()]
        else:
            refs += [(f"{prefix}.once_per[{i}]", c) for i, c in enumerate(section.once_per)]
    return [(path, column) for path, column in refs if column is not None]


def _nested_column(column: str, dtype: pl.DataType) -> str:
    """Every mapping takes one value per row: a list or struct (a PostgreSQL array, a Parquet
    list) has no one text, number or key, so it is refused here, not in a Polars cast."""
    return (
        f"column '{column}' holds {dtype}, many values per row; map a column with one value "
        "per row (in SQL, select one element or join them)"
    )


def _missing_column(column: str, available: list[str]) -> str:
    """Names are shown with their invisible characters escaped: a header's non-breaking space
    would otherwise make the suggestion look like what the config already says."""
    message = f"column '{visible(column)}' is not in the source"
    close = difflib.get_close_matches(column, available, n=1, cutoff=0.6)
    if not close:
        lowered = {name.lower().strip(): name for name in available}
        close = [lowered[column.lower().strip()]] if column.lower().strip() in lowered else []
    if close:
        meant, hidden = visible(close[0]), hidden_characters(close[0])
        how = f' ({hidden}: fix the header, or write "{meant}" in double quotes)' if hidden else ""
        return f"{message}; did you mean '{meant}'?{how}"
    shown = ", ".join(visible(name) for name in available[:12])
    return f"{message} (columns: {shown}{', …' if len(available) > 12 else ''})"
