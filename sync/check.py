"""`loops-sync check`: everything that can be known about a config before a run, in one report.

Without a key: the config, its `tests:` cases (`sync.config_tests`), the source's columns and
their types against the mapping (the first `SAMPLE_ROWS` rows coerced as a run would), and the
`when` filters. With one: the key, then the
account's properties and mailing lists against the mapping (`sync.account`). Every problem is
gathered, not only the first: a source that cannot be read does not keep the account from being
checked. The CLI renders the report and exits with `CheckReport.exit_code`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import httpx
import polars as pl

from sync.account import (
    Account,
    Created,
    account_problems,
    config_lines,
    create_properties,
    missing_properties,
    read_account,
)
from sync.coerce import Cells, Field, check_filters, coerce_contact, coerce_event, constant_problems
from sync.columns import ROW
from sync.config import Config
from sync.config_file import KeyLines
from sync.config_model import SyncConfig
from sync.config_tests import tests_for_check
from sync.errors import ConfigError, ConfigProblem, ExitCode, FatalApiError, SourceError
from sync.loops_api import CHECK_PAUSE, check_api_key, key_problem
from sync.source_columns import check_columns
from sync.sources import open_source

__all__ = ["SAMPLE_ROWS", "CheckReport", "ColumnCheck", "check_config"]

SAMPLE_ROWS = 1000
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class ColumnCheck:
    """One mapped column against the first rows: how many cells hold a value, how many of
    those the mapping refuses (the row would be rejected), and the first refusal."""

    path: str  # the config key that maps it
    column: str
    source_type: str
    sent_as: str  # string, number, boolean, date, or email
    filled: int
    refused: int
    example: str | None = None


@dataclass(frozen=True)
class CheckReport:
    """What `check` found: a summary line per part, the columns sampled, the properties it
    created, and every problem (exit 2) and warning (rows a run would reject, exit 0)."""

    sync: str
    file: str
    config: str
    source: str
    account: str
    tests: str = ""  # how the config's `tests:` cases went; empty when it has none
    columns: list[ColumnCheck] = field(default_factory=list)
    filters: list[str] = field(default_factory=list)  # how many rows each `when` keeps
    created: list[Created] = field(default_factory=list)
    problems: list[ConfigProblem] = field(default_factory=list)
    warnings: list[ConfigProblem] = field(default_factory=list)
    fatal: str | None = None  # the key refused, or Loops out of reach: the account unchecked

    @property
    def exit_code(self) -> ExitCode:
        """2 for any problem, else 3 when Loops refused the key or could not be reached."""
        if self.problems:
            return ExitCode.USAGE
        return ExitCode.FATAL_API if self.fatal else ExitCode.OK


def check_config(
    config: Config,
    *,
    create: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    sample_rows: int = SAMPLE_ROWS,
    pause: float = CHECK_PAUSE,
) -> CheckReport:
    """Check `config`, its source and (when the key is set) its Loops account; `create`: ask
    Loops to create the custom properties the mapping sends and the account lacks."""
    lines = config_lines(config)
    source = _SourceCheck(config, lines, sample_rows)
    account = _AccountCheck(config, lines, create=create, transport=transport, pause=pause)
    tests, failing = tests_for_check(config)
    return CheckReport(
        sync=config.name,
        file=str(config.file),
        config=_config_summary(config),
        source=source.summary,
        account=account.summary,
        tests=tests,
        columns=source.columns,
        filters=source.filters,
        created=account.created,
        problems=[*source.problems, *failing, *account.problems],
        warnings=source.warnings,
        fatal=account.fatal,
    )


def _config_summary(config: Config) -> str:
    spec, parts = config.spec, []
    if spec.contact:
        count, lists = len(spec.contact.properties), len(spec.contact.mailing_lists)
        parts.append(f"contacts with {_count(count, 'property')}, {_count(lists, 'mailing list')}")
    if spec.events:
        parts.append(_count(len(spec.events), "event"))
    return "valid: " + "; ".join(parts)


def _count(number: int, noun: str) -> str:
    plural = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{number} {noun if number == 1 else plural}"


# --- the source -----------------------------------------------------------------------------


class _SourceCheck:
    """The source's schema against the mapping, then its first rows through the mapping's
    coercions and filters; only the first slice is read."""

    def __init__(self, config: Config, lines: KeyLines, sample_rows: int) -> None:
        self.config, self.lines = config, lines
        self.problems: list[ConfigProblem] = []
        self.warnings: list[ConfigProblem] = []
        self.columns: list[ColumnCheck] = []
        self.filters: list[str] = []
        self.summary = "not read"
        try:
            self._check(sample_rows)
        except SourceError as error:
            self.problems.append(ConfigProblem("", str(error)))

    def _check(self, sample_rows: int) -> None:
        spec = self.config.spec
        stream = open_source(self.config, slice_rows=sample_rows)
        where = f"{_source_name(self.config)}: {_count(len(stream.schema), 'column')}"
        self.summary = where
        try:
            check_columns(self.config, stream.schema, extra=constant_problems(spec))
        except ConfigError as error:
            self.problems += [_placed(problem, self.lines) for problem in error.problems]
            return  # the rows cannot be mapped: a mapped column is missing
        slices = stream.slices
        try:
            first = next(slices, None)
        finally:
            getattr(slices, "close", lambda: None)()
        sample = pl.DataFrame(schema=stream.schema) if first is None else first
        sample = sample.with_row_index(ROW, offset=1)
        self.summary = f"{where}; the first {_count(sample.height, 'row')} read"
        self._filters(sample)
        self._coercions(sample)

    def _filters(self, sample: pl.DataFrame) -> None:
        """Each `when` on the rows read, each failure reported (check_filters stops at one)."""
        spec = self.config.spec
        for path, when in spec.filters():
            loc = _filter_loc(path)
            try:
                check_filters(_only_filter(spec, path), sample)
            except SourceError as error:
                message = str(error).removeprefix(f"{path}: ")
                self.problems.append(_at(loc, self.lines, message))
            else:
                kept = _applying(sample, when).height
                self.filters.append(f"{path} keeps {kept} of the first {sample.height}")

    def _coercions(self, sample: pl.DataFrame) -> None:
        spec, cells = self.config.spec, Cells(sample.schema)
        contact = coerce_contact(spec.contact, cells) if spec.contact else []
        events = [coerce_event(event, cells) for event in spec.events]
        prepared = cells.computed(sample.lazy()).collect()  # the parts the fields read
        contacts = _applying(prepared, spec.contact.when if spec.contact else None)
        for mapped in contact:
            self._coerced(mapped, contacts, _contact_loc(mapped))
        for index, (event, fields) in enumerate(zip(spec.events, events, strict=True)):
            rows = _applying(prepared, event.when)
            for mapped in fields:
                self._coerced(mapped, rows, _event_loc(index, event.once_per, mapped))

    def _coerced(self, field: Field, rows: pl.DataFrame, loc: Loc | None) -> None:
        if loc is None or field.column is None:  # a constant: checked with the config
            return
        refused = rows.filter(field.error.is_not_null()).select(ROW, field.error.alias("why"))
        if field.key == "__identity":  # rows whose identity columns are all empty
            if refused.height:
                row, why = refused.row(0)
                message = (
                    f"{refused.height} of the first {_count(rows.height, 'row')} refused (a run "
                    f"rejects them), e.g. row {row}: {why}"
                )
                self.warnings.append(_at(loc, self.lines, message))
            return
        filled = rows.select(_filled(field.column).sum()).item()
        example = (
            f"row {refused.item(0, ROW)}: {refused.item(0, 'why')}" if refused.height else None
        )
        check = ColumnCheck(
            path=_dotted(loc),
            column=field.column,
            source_type=str(rows.schema[field.column]),
            sent_as="email" if field.key == "email" else field.kind,
            filled=filled,
            refused=refused.height,
            example=example,
        )
        self.columns.append(check)
        if check.refused:
            self._refusals(check, loc)

    def _refusals(self, check: ColumnCheck, loc: Loc) -> None:
        if check.refused == check.filled:
            message = (
                f"all {check.filled} values of '{check.column}' ({check.source_type}) in the "
                f"first rows are refused as {check.sent_as}, e.g. {check.example}; is the "
                "column or the type right?"
            )
            self.problems.append(_at(loc, self.lines, message))
        else:
            message = (
                f"{check.refused} of {check.filled} values of '{check.column}' refused (a run "
                f"rejects their rows), e.g. {check.example}"
            )
            self.warnings.append(_at(loc, self.lines, message))


def _source_name(config: Config) -> str:
    source = config.spec.source
    if source.sql is not None:
        return "sql query"
    named = source.excel.path if source.excel else source.csv or source.parquet
    return f"{source.kind} {named}"


def _filter_loc(path: str) -> Loc:
    if path == "contact.when":
        return ("contact", "when")
    return ("events", int(path.removeprefix("events[").split("]", 1)[0]), "when")


def _only_filter(spec: SyncConfig, path: str) -> SyncConfig:
    """`spec` with only the `when` at `path`, to check that filter alone."""
    contact = spec.contact
    if contact is not None and path != "contact.when":
        contact = contact.model_copy(update={"when": None})
    events = [
        event if path == f"events[{index}].when" else event.model_copy(update={"when": None})
        for index, event in enumerate(spec.events)
    ]
    return spec.model_copy(update={"contact": contact, "events": events})


def _applying(sample: pl.DataFrame, when: str | None) -> pl.DataFrame:
    """The rows an event's filter keeps (all of them if it has none or cannot run: that is
    reported as a problem of its own)."""
    if when is None:
        return sample
    try:
        return sample.filter(pl.sql_expr(when))
    except pl.exceptions.PolarsError:
        return sample


def _filled(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.String).str.strip_chars().fill_null("") != ""


def _contact_loc(field: Field) -> Loc | None:
    if field.key in ("email", "userId"):
        return ("contact", "email" if field.key == "email" else "user_id")
    if field.key.startswith("mailingLists."):
        return ("contact", "mailing_lists", field.key.removeprefix("mailingLists."))
    if field.key == "__identity":
        return ("contact",)
    return ("contact", "properties", field.key)


def _event_loc(index: int, once_per: list[str], field: Field) -> Loc | None:
    if field.key in ("email", "userId"):
        return ("events", index, "email" if field.key == "email" else "user_id")
    if field.key.startswith("eventProperties."):
        return ("events", index, "properties", field.key.removeprefix("eventProperties."))
    if field.key.startswith("once_per.") and field.column in once_per:
        return ("events", index, "once_per", once_per.index(field.column))
    if field.key == "__identity":
        return ("events", index)
    return None


# --- the account ----------------------------------------------------------------------------


class _AccountCheck:
    """The key, then the account's properties and lists against the mapping; with `create`,
    the missing properties are created first and the account read again."""

    def __init__(
        self,
        config: Config,
        lines: KeyLines,
        *,
        create: bool,
        transport: httpx.AsyncBaseTransport | None,
        pause: float,
    ) -> None:
        self.config, self.lines, self.transport, self.pause = config, lines, transport, pause
        self.problems: list[ConfigProblem] = []
        self.created: list[Created] = []
        self.fatal: str | None = None
        variable = config.spec.loops.api_key_env
        self.summary = f"not checked: {variable} is not set (it holds the Loops API key)"
        if config.api_key is None:
            return
        key = config.api_key.get_secret_value()
        found = key_problem(key)
        if found is not None:
            self.summary = "not checked: the API key cannot be sent"
            message = (
                f"the environment variable {variable} holds {found}, which cannot be sent in "
                "an HTTP header: copy the key again from Loops (Settings → API)"
            )
            self.problems.append(_at(("loops", "api_key_env"), lines, message))
            return
        try:
            self._check(key, create=create)
        except FatalApiError as error:
            self.summary = f"not checked: {error}"
            self.fatal = str(error)

    def _check(self, key: str, *, create: bool) -> None:
        config = self.config
        timeout = config.spec.loops.timeout
        team = check_api_key(
            config.base_url, key, timeout=timeout, transport=self.transport, pause=self.pause
        )
        account = self._read(key, team)
        refused: dict[str, str] = {}
        missing = missing_properties(config, account)
        if create and missing:
            asked = create_properties(
                config, key, missing, transport=self.transport, pause=self.pause
            )
            account = self._read(key, team)
            self.created = [c for c in asked if account.properties.get(c.name) == c.type]
            refused = {c.name: c.refused or "" for c in asked if c not in self.created}
        self.problems += account_problems(config, account, self.lines, refused)
        properties = len(account.properties)
        self.summary = (
            f"team '{account.team}' at {config.base_url}: "
            f"{_count(properties, 'contact property')}, "
            f"{_count(len(account.lists), 'mailing list')}"
        )

    def _read(self, key: str, team: str) -> Account:
        return read_account(self.config, key, team=team, transport=self.transport, pause=self.pause)


# --- where in the file ----------------------------------------------------------------------


def _at(loc: Loc, lines: KeyLines, message: str) -> ConfigProblem:
    return ConfigProblem(_dotted(loc), message, _line_of(loc, lines))


def _placed(problem: ConfigProblem, lines: KeyLines) -> ConfigProblem:
    """A problem found by path alone (`check_columns`), with its line in the file."""
    if problem.line is not None or not problem.path:
        return problem
    loc: Loc = tuple(
        int(index) if index else name
        for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", problem.path)
    )
    return ConfigProblem(problem.path, problem.message, _line_of(loc, lines))


def _line_of(loc: Loc, lines: KeyLines) -> int | None:
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return None


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
