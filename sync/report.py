"""What a run leaves for people and machines: the run report, the rejects file, the crash log.

Numbers are gathered in `RunReport` by the pipeline; the terminal's view of them (the summary,
the progress bar) is the CLI's, in `sync.render`. The API key never reaches any of it: nothing
here is given the key.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import traceback
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from sync import __version__
from sync.columns import ROW
from sync.errors import ExitCode, InternalError, StopRun
from sync.side_effects import SideEffects

__all__ = [
    "REJECT_GROUPS",
    "Baseline",
    "RejectGroups",
    "RejectLimit",
    "RunReport",
    "reject_groups",
    "reject_kind",
    "write_crash_log",
    "write_rejects",
]

FORMULA_START = r"^[=+\-@\t\r]"


@dataclass(frozen=True)
class Baseline:
    """What `run --baseline` recorded in the ledger as delivered, sending nothing."""

    contacts: int
    events: int

    def __str__(self) -> str:
        return (
            f"baseline: recorded {self.contacts:,} contacts and {self.events:,} events as "
            "delivered; nothing sent"
        )


@dataclass
class RunReport:
    """Every figure of one run; the JSON report is exactly this (see `to_json`).

    One vocabulary everywhere (summary, JSON, `history`, progress): *rows* of the source,
    *contacts* and *events* planned and sent, and *requests*, the HTTP calls Loops counts
    against the rate limit (a contact's upsert riding on its first event is one request).
    """

    sync: str
    dry_run: bool = False
    version: str = __version__
    config_path: str | None = None
    started_at: str | None = None  # ISO 8601, UTC
    ended_at: str | None = None
    rows_read: int = 0
    rows_rejected: int = 0  # by the mapping: bad data, never sent
    duplicates: int = 0  # rows another row of the same contact or occurrence replaced
    contacts_new: int = 0
    contacts_changed: int = 0
    contacts_unchanged: int = 0
    contacts_retry: int = 0
    events_new: int = 0
    events_retry: int = 0
    events_already_delivered: int = 0  # the ledger holds them: not sent
    contacts_sent: int = 0  # upserts Loops took (riding on an event or alone)
    contacts_removed: int = 0  # departed contacts removed (`contact.removed`)
    removals_held_back: str | None = None  # why the brake removed none
    events_sent: int = 0
    events_duplicate: int = 0  # sent, and Loops already had the Idempotency-Key (409)
    rejected_by_loops: int = 0  # requests Loops refused (400): their rows join the rejects
    failed: int = 0  # requests that failed or waited on a failed upsert: retried next run
    deferred: int = 0  # requests that waited on their contact's upsert (failed or refused)
    not_sent: int = 0
    requests_left_by_limit: int = 0  # planned requests past --limit: the next run sends them
    contacts_left_by_limit: int = 0  # and the contacts (identities) they belong to
    requests_planned: int = 0
    requests: int = 0  # HTTP requests made, retries included
    retries: int = 0
    rate_limited: int = 0  # 429 answers
    wall_seconds: float = 0.0
    send_seconds: float = 0.0
    requests_per_second: float = 0.0  # while sending: reading and planning are not counted
    rate_limit: float = 0.0
    rejects_file: str | None = None
    # Rejected rows by column and kind of reason: count and the first row numbers, the biggest
    # REJECT_GROUPS groups (`reject_groups`); `rejects_more`: how many groups are left out.
    rejects: list[dict[str, Any]] = field(default_factory=list)
    rejects_more: int = 0
    rejects_allowed: int | None = None  # --max-rejects, as a number of rows for this run
    dry_run_file: str | None = None
    stopped: str | None = None  # why sending stopped early: "time budget" or "signal"
    exit_code: int = 0
    error: str | None = None  # the message of the error that ended the run early
    log_file: str | None = None  # where the traceback of an internal error (exit 70) went
    warnings: list[str] = field(default_factory=list)
    # Per contact property: contacts whose value Loops keeps though the source's cell is empty.
    kept_in_loops: dict[str, int] = field(default_factory=dict)
    # What the plan's upserts do besides storing values (contacts created, subscribed, cleared).
    side_effects: SideEffects = field(default_factory=SideEffects)
    baseline: Baseline | None = None  # a `run --baseline`: what it recorded

    @property
    def skipped_unchanged(self) -> int:
        return self.contacts_unchanged

    @property
    def retried_from_earlier(self) -> int:
        return self.contacts_retry + self.events_retry

    @property
    def rows_rejected_in_all(self) -> int:
        """Rows rejected by the mapping or by Loops: what --max-rejects allows."""
        return self.rows_rejected + self.rejected_by_loops

    @property
    def work_left(self) -> int:
        """Planned requests this run did not deliver, for the next run: failed, stopped early,
        or past --limit."""
        return self.failed + self.not_sent + self.requests_left_by_limit

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped_unchanged"] = self.skipped_unchanged
        data["retried_from_earlier"] = self.retried_from_earlier
        data["work_left"] = self.work_left
        data["exit_reason"] = self.outcome()
        data["side_effects"] = self.side_effects.to_json()
        return data

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    def started(self) -> None:
        self.started_at = _now_iso()

    def ended(self) -> None:
        self.ended_at = _now_iso()

    def decide_exit_code(self) -> int:
        """Run again (5) comes before fix the data (1): a scheduled job retries on its own."""
        if self.stopped == "signal":
            return ExitCode.INTERRUPTED
        if self.work_left:
            return ExitCode.WORK_LEFT
        allowed = self.rejects_allowed or 0
        if self.rows_rejected_in_all > allowed or self.removals_held_back:
            return ExitCode.REJECTED
        return ExitCode.OK

    def record_error(self, error: StopRun) -> None:
        """The run ended early with `error`: its exit code and message become the report's."""
        self.exit_code = error.exit_code
        self.error = str(error)
        if isinstance(error, InternalError) and error.log_file is not None:
            self.log_file = str(error.log_file)

    def outcome(self) -> str:
        """How the run ended, in a line or two: what `history` shows beside the exit code."""
        if self.error:
            return self.error
        rejected = self.rows_rejected_in_all
        if self.baseline is not None:
            rows = f"; {rejected} rows rejected for their data (see the rejects file)"
            return f"{self.baseline}{rows if rejected else ''}"
        match self.exit_code:
            case ExitCode.INTERRUPTED:
                return f"interrupted by a signal; {self.work_left} requests left for the next run"
            case ExitCode.WORK_LEFT:
                return "work left for the next run: " + "; ".join(self._work_left_causes())
            case ExitCode.REJECTED:
                held_back = self.removals_held_back
                return (
                    f"no contact removed: {held_back}"
                    if held_back
                    else f"{rejected} rows rejected for their data (see the rejects file)"
                )
        return self._finished_well(rejected)

    def _work_left_causes(self) -> list[str]:
        causes = []
        if self.failed:
            causes.append(f"{self.failed} requests failed and are retried")
        if self.not_sent:
            causes.append(f"stopped early ({self.stopped}): {self.not_sent} requests")
        if self.requests_left_by_limit:
            causes.append(
                f"--limit: {self.requests_left_by_limit} requests "
                f"({self.contacts_left_by_limit} contacts)"
            )
        return causes

    def _finished_well(self, rejected: int) -> str:
        if self.dry_run:
            return "dry run: nothing sent"
        if rejected:
            return f"every other row delivered; {rejected} rejected, within --max-rejects"
        return "every row delivered"


@dataclass(frozen=True)
class RejectLimit:
    """`--max-rejects`: how many rejected rows still let a run exit 0, as a number or a share
    of the rows read (`50`, `2%`)."""

    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, text: str) -> RejectLimit:
        """ValueError, with what is wrong, for anything but `N` or `N%` (N at least 0)."""
        number = text.strip().removesuffix("%").strip()
        try:
            value = float(number) if text.strip().endswith("%") else int(number)
        except ValueError:
            raise ValueError(f"{text!r} is not a number of rows (50) or a share (2%)") from None
        if value < 0 or (isinstance(value, float) and not 0 <= value <= 100):
            raise ValueError(f"{text!r} is out of range: a count from 0, a share 0% to 100%")
        return cls(percent=value) if isinstance(value, float) else cls(count=value)

    def rows(self, rows_read: int) -> int:
        """The rejects allowed in a run that read `rows_read` rows."""
        if self.percent is not None:
            return int(rows_read * self.percent / 100)
        return self.count or 0


# The parts of a reason that name one row's value, masked to group rows rejected for the same
# kind of reason (a million bad emails are one group, not a million): a cell's text, the
# identifier and rows of a conflict, a value's length.
REASON_VALUES = (
    (r"(^|; )'.*?'( is (?:not|on) )", "$1'…'$2"),
    (r"(^|; )(user id ).+?( is on rows )", "$1$2…$3"),
    (r"( is on rows )[0-9, ]+( with )", "$1…$2"),
    (r"(value of )[0-9]+( characters)", "$1…$2"),
)
REJECT_GROUPS = 20  # groups in the report and on screen; the rejects file holds every row


def reject_kind(reason: pl.Expr) -> pl.Expr:
    """`reason` with the values of its row masked (REASON_VALUES)."""
    for pattern, replacement in REASON_VALUES:
        reason = reason.str.replace_all(pattern, replacement)
    return reason


def reject_groups(rejects: pl.DataFrame, first_rows: int = 5) -> RejectGroups:
    """Rejected rows by column and kind of reason, biggest first, at most REJECT_GROUPS: how
    many, the first row's reason, how many other values were rejected so, and the first row
    numbers; so that 54 bad company sizes read as one line naming the column."""
    if rejects.is_empty():
        return RejectGroups([], 0)
    grouped = (
        rejects.sort(ROW)
        .group_by("column", reject_kind(pl.col("reason")).alias("kind"))
        .agg(
            pl.len().alias("count"),
            pl.col("reason").first(),
            (pl.col("reason").n_unique() - 1).alias("other_values"),
            pl.col(ROW).head(first_rows).alias("first_rows"),
        )
        .sort(["count", "column", "reason"], descending=[True, False, False])
        .select("column", "reason", "count", "first_rows", "other_values")
    )
    shown = [
        {**group, "column": group["column"] or None}
        for group in grouped.head(REJECT_GROUPS).iter_rows(named=True)
    ]
    return RejectGroups(shown, max(0, grouped.height - REJECT_GROUPS))


@dataclass(frozen=True)
class RejectGroups:
    """`reject_groups`: the groups shown, and how many more there are."""

    shown: list[dict[str, Any]]
    more: int


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_rejects(
    path: Path, source: pl.DataFrame | pl.LazyFrame, rejects: pl.DataFrame
) -> Path | None:
    """The rejected rows with their original columns plus row, column and reason.

    UTF-8 with a byte-order mark, which Excel on Windows needs to read it as UTF-8; `row` is
    the data row's number, the header not counted. Cells a spreadsheet would run as a formula
    (starting with = + - @) get a leading quote.
    Source columns CSV cannot hold (a SQL array or JSON column, a Parquet list or struct, bytes)
    are written as text. Returns None (and removes an old file) when nothing was rejected.
    """
    if rejects.is_empty():
        path.unlink(missing_ok=True)
        return None
    rows = source.lazy().join(rejects.select(ROW).lazy(), on=ROW, how="semi").collect()
    original = _as_csv_cells(rows)
    # A source column may itself be called row, column or reason: it keeps its data, renamed.
    clashes = {name: f"{name} (source)" for name in ("row", "column", "reason") if name in rows}
    original = original.rename(clashes)
    rows = rejects.join(original, on=ROW, how="left").rename({ROW: "row"})
    text_columns = [name for name, dtype in rows.schema.items() if dtype == pl.String]
    safe = rows.with_columns(
        pl.when(pl.col(name).str.contains(FORMULA_START))
        .then(pl.lit("'") + pl.col(name))
        .otherwise(pl.col(name))
        .alias(name)
        for name in text_columns
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    safe.sort("row").write_csv(path, include_bom=True)  # Excel on Windows reads UTF-8 by it
    return path


def _as_csv_cells(frame: pl.DataFrame) -> pl.DataFrame:
    """Nested cells as JSON text, bytes as hex: a rejects file holds few rows, so one Python
    call per cell costs nothing, and the person fixing the row sees the value whole."""
    return frame.with_columns(
        pl.Series(name, [_cell_text(value) for value in frame.get_column(name).to_list()])
        for name, dtype in frame.schema.items()
        if dtype.is_nested() or dtype in (pl.Binary, pl.Object)
    )


def _cell_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def write_crash_log(path: Path, error: BaseException, secrets: Iterable[str] = ()) -> Path | None:
    """Append the traceback of a bug to `path`, or to the temp directory when `path` cannot be
    written; every secret (the API key) is blanked out. Returns where it went, None if nowhere."""
    text = "".join(traceback.format_exception(error))
    for secret in sorted(secrets, key=len, reverse=True):
        for form in (secret, secret.strip()):
            if form:
                text = text.replace(form, "***")
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
    entry = f"--- {started}, loops-sync {__version__}, pid {os.getpid()}\n{text}\n"
    for target in (path, Path(tempfile.gettempdir()) / path.name):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("a", encoding="utf-8") as log:
                log.write(entry)
        except OSError:
            continue
        return target
    return None
