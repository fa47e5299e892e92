"""Run a config's `tests:` cases: each case's rows through the mapping and the planner as a first
sync would take them, and what they produce against what the case expects.

No network, no ledger, no source: a case's rows are the source (`case_frame`), typed as the
configured kind of source types its cells (a CSV or Excel file is read as text, Parquet and SQL
keep their types), and `map_rows` and `make_plan` do the rest against a ledger that holds
nothing. The requests compared are the plan's, before an upsert rides on an event (folding
changes how a request travels, not what the mapping says); idempotency keys are not compared,
they hash the sync's name and rows rather than say anything a reader could check by eye.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import orjson
import polars as pl

from sync.account import config_lines
from sync.candidates import Mapped, map_rows
from sync.cases import ConfigTest, ExpectedReject, ExpectedRequest
from sync.coerce import constant_problems
from sync.columns import ROW
from sync.config import Config
from sync.config_file import KeyLines
from sync.errors import ConfigError, ConfigProblem, ExitCode, SourceError
from sync.held import Held
from sync.loops_api import CONTACT_PATH, EVENT_PATH
from sync.plan import make_plan
from sync.source_columns import check_columns

__all__ = [
    "CaseResult",
    "CasesReport",
    "Difference",
    "case_frame",
    "cases_report",
    "run_config_tests",
    "tests_for_check",
]

# What each kind of request is on the wire, for the diff.
ENDPOINTS: dict[str, str] = {"contact": f"PUT {CONTACT_PATH}", "event": f"POST {EVENT_PATH}"}
TEXT_SOURCES = ("csv", "excel")  # read as text: the mapping coerces every cell from its text


@dataclass(frozen=True)
class Difference:
    """One thing the case's rows did otherwise than expected: what (a request, a row) and how."""

    subject: str
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaseResult:
    """A case run: passed when nothing differs. `path` and `line` place it in the file."""

    name: str
    path: str
    line: int | None
    differences: list[Difference] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.differences


@dataclass(frozen=True)
class CasesReport:
    """Every case of a config, for `loops-sync test`."""

    sync: str
    file: str
    cases: list[CaseResult]

    @property
    def failed(self) -> list[CaseResult]:
        return [case for case in self.cases if not case.passed]

    @property
    def exit_code(self) -> ExitCode:
        """0 every case passes, 1 some case fails (a problem in the config raised: 2)."""
        return ExitCode.TEST_FAILED if self.failed else ExitCode.OK


def cases_report(config: Config) -> CasesReport:
    """Run the config's cases; a config without any is a problem (CI would pass on nothing)."""
    if not config.spec.tests:
        problem = ConfigProblem(
            "tests", "none given; add a 'tests:' list of cases (README: \"Config tests\")"
        )
        raise ConfigError(str(config.file), [problem])
    return CasesReport(config.name, str(config.file), run_config_tests(config))


def run_config_tests(config: Config) -> list[CaseResult]:
    """Each case of `config` (none: an empty list), passed or with its differences.

    A constant the mapping refuses is the config's problem, not a case's: `ConfigError`.
    """
    problems = constant_problems(config.spec)
    if problems:
        raise ConfigError(str(config.file), problems)
    lines = config_lines(config)
    return [_run_case(config, index, case, lines) for index, case in enumerate(config.spec.tests)]


def tests_for_check(config: Config) -> tuple[str, list[ConfigProblem]]:
    """For `loops-sync check`: how the cases went in a line, and each failing case as a problem
    of the config (the mapping does not do what its tests say), at the case's line."""
    if not config.spec.tests:
        return "", []
    try:
        cases = run_config_tests(config)
    except ConfigError:  # a constant the mapping refuses: the source check reports it
        return "not run: a constant the mapping sends is refused", []
    failed = [case for case in cases if not case.passed]
    noun = "case" if len(cases) == 1 else "cases"
    summary = f"{len(cases)} {noun}: {len(cases) - len(failed)} pass, {len(failed)} fail"
    return summary, [_failing(case) for case in failed]


def _failing(case: CaseResult) -> ConfigProblem:
    first = case.differences[0]
    said = f"{first.subject}: {first.details[0]}" if first.details else first.subject
    more = "every difference" if len(case.differences) > 1 or len(first.details) > 1 else "it"
    message = f"test '{case.name}' fails: {said} (`loops-sync test` shows {more})"
    return ConfigProblem(case.path, message, case.line)


def _run_case(config: Config, index: int, case: ConfigTest, lines: KeyLines) -> CaseResult:
    path = f"tests[{index}]"
    frame = case_frame(config, case)
    try:
        check_columns(config, frame.schema)
        mapped = map_rows(config.spec, frame)
    except (ConfigError, SourceError) as error:  # a `when` that fails on a row stops a run
        cause = Difference("the rows cannot be synced (a run would stop)", (str(error),))
        return CaseResult(case.name, path, lines.get(("tests", index)), [cause])
    plan = make_plan(mapped, Held.nothing())
    got = [
        _Sent(kind, row, orjson.loads(body))
        for kind, row, body in plan.requests.select("kind", ROW, "body").iter_rows()
    ]
    differences = [*_request_differences(case.requests, got), *_reject_differences(case, mapped)]
    return CaseResult(case.name, path, lines.get(("tests", index)), differences)


# --- the rows as a source -------------------------------------------------------------------


def case_frame(config: Config, case: ConfigTest) -> pl.DataFrame:
    """The case's rows as the configured source would give them, numbered from 1 (ROW).

    A column the rows never give, but the mapping or a `when` reads, is there and empty, so a
    case names only the columns it is about. A CSV or Excel source is text, so each value is
    too (`true`, `42` and a YAML date as they would be written in the file); other sources keep
    YAML's types, and a column whose values differ in type is text.
    """
    as_text = config.spec.source.kind in TEXT_SOURCES
    names = list(dict.fromkeys(name for row in case.rows for name in row))
    columns = [
        _column(name, [row.get(name) for row in case.rows], as_text=as_text) for name in names
    ]
    frame = pl.DataFrame(columns, height=len(case.rows))
    absent = [name for name in _read_columns(config) if name not in frame.columns]
    frame = frame.with_columns(pl.lit(None, pl.String).alias(name) for name in absent)
    return frame.with_row_index(ROW, offset=1)


def _column(name: str, values: list[Any], *, as_text: bool) -> pl.Series:
    if not as_text:
        try:
            return pl.Series(name, values, strict=True)
        except (TypeError, pl.exceptions.PolarsError):
            pass  # mixed types: as text
    return pl.Series(name, [_text(value) for value in values], dtype=pl.String)


def _text(value: object) -> str | None:
    """A YAML value as a CSV cell would hold it."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _read_columns(config: Config) -> list[str]:
    """Every column the mapping or a `when` filter reads."""
    filtered = [
        name
        for event in config.spec.events
        if event.when is not None
        for name in pl.sql_expr(event.when).meta.root_names()
    ]
    return list(dict.fromkeys([*config.source_columns(), *filtered]))


# --- requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sent:
    kind: str
    row: int
    body: dict[str, Any]


def _request_differences(expected: list[ExpectedRequest], got: list[_Sent]) -> Iterator[Difference]:
    """Each expected request is paired with the produced one for the same person and event,
    else with one of the same kind and event (a wrong email then shows as a field); order
    does not matter. What is left over on either side is missing or not expected."""
    left = list(got)
    pairs: list[tuple[ExpectedRequest, _Sent]] = []
    for match in (_same_request, _same_kind):
        unpaired = []
        for wanted in expected:
            found = next((sent for sent in left if match(wanted, sent)), None)
            if found is None:
                unpaired.append(wanted)
                continue
            left.remove(found)
            pairs.append((wanted, found))
        expected = unpaired
    for wanted, sent in pairs:
        details = tuple(_body_differences(_normal(wanted.body), sent.body))
        if details:
            yield Difference(_describe(sent.kind, sent.body, sent.row), details)
    for wanted in expected:
        body = _normal(wanted.body)
        yield Difference(_describe(wanted.kind, body), ("expected, but not produced", _json(body)))
    for sent in left:
        yield Difference(
            _describe(sent.kind, sent.body, sent.row), ("produced, not expected", _json(sent.body))
        )


def _identity(body: dict[str, Any]) -> tuple[object, ...]:
    return body.get("eventName"), body.get("email"), body.get("userId")


def _same_kind(wanted: ExpectedRequest, sent: _Sent) -> bool:
    return wanted.kind == sent.kind and wanted.body.get("eventName") == sent.body.get("eventName")


def _same_request(wanted: ExpectedRequest, sent: _Sent) -> bool:
    return _same_kind(wanted, sent) and _identity(_normal(wanted.body)) == _identity(sent.body)


def _describe(kind: str, body: dict[str, Any], row: int | None = None) -> str:
    who = body.get("email") or body.get("userId") or "?"
    what = f"event '{body.get('eventName', '?')}'" if kind == "event" else "contact"
    where = f", from row {row}" if row is not None else ""
    return f"{what} for {who} ({ENDPOINTS[kind]}{where})"


def _body_differences(expected: dict[str, Any], got: dict[str, Any]) -> Iterator[str]:
    wanted, sent = _flat(expected), _flat(got)
    for key in dict.fromkeys([*wanted, *sent]):
        if key not in sent:
            yield f"{key}: expected {_json(wanted[key])}, not sent"
        elif key not in wanted:
            yield f"{key}: not expected, sent {_json(sent[key])}"
        elif not _same(wanted[key], sent[key]):
            yield f"{key}: expected {_json(wanted[key])}, got {_json(sent[key])}"


def _flat(body: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A body's values by dotted path: `eventProperties.plan`, `mailingLists.<id>`."""
    flat: dict[str, Any] = {}
    for key, value in body.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _same(wanted: object, got: object) -> bool:
    """JSON equality: true is not 1, and 42 is 42.0."""
    if isinstance(wanted, bool) or isinstance(got, bool):
        return type(wanted) is type(got) and wanted == got
    return wanted == got


def _normal(value: Any) -> Any:
    """An expected value as JSON would carry it: a date as Loops takes it, Unix milliseconds
    (a date or time without an offset is UTC, as the mapping reads one)."""
    if isinstance(value, dict):
        return {key: _normal(item) for key, item in value.items()}
    if isinstance(value, datetime | date):
        moment = (
            value if isinstance(value, datetime) else datetime(value.year, value.month, value.day)
        )
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return round(moment.timestamp() * 1000)
    return value


def _json(value: object) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


# --- rejects --------------------------------------------------------------------------------


def _reject_differences(case: ConfigTest, mapped: Mapped) -> Iterator[Difference]:
    got = {row: (column, reason) for row, column, reason in mapped.rejects.iter_rows()}
    wanted = {reject.row: reject for reject in case.rejects}
    for row in sorted({*got, *wanted}):
        subject = f"row {row}"
        if row not in got:
            expected = _expected(wanted[row])
            yield Difference(subject, (f"expected to be rejected ({expected}), but was not",))
        elif row not in wanted:
            column, reason = got[row]
            yield Difference(subject, (f"rejected, not expected: {column}: {reason}",))
        else:
            details = tuple(_reject_details(wanted[row], *got[row]))
            if details:
                yield Difference(subject, details)


def _reject_details(wanted: ExpectedReject, column: str, reason: str) -> Iterator[str]:
    if wanted.column is not None and wanted.column not in column.split("; "):
        yield f"rejected for column '{column}', expected '{wanted.column}'"
    if wanted.reason is not None and wanted.reason.casefold() not in reason.casefold():
        yield f"rejected because {reason!r}, expected a reason containing {wanted.reason!r}"


def _expected(reject: ExpectedReject) -> str:
    parts = [
        f"for column '{reject.column}'" if reject.column else "",
        f"a reason containing {reject.reason!r}" if reject.reason else "",
    ]
    return ", ".join(part for part in parts if part) or "for any reason"
