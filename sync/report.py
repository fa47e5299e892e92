"""What a run tells people and machines: the summary, the JSON report, the rejects file, progress.

Numbers are gathered in `RunReport` by the pipeline; this module only renders them. The API key
never reaches any of it: nothing here is given the key.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, TextIO

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from sync.mapping import ROW

__all__ = ["ExitCode", "ProgressReporter", "RunReport", "render_summary", "write_rejects"]

FORMULA_START = r"^[=+\-@\t\r]"


class ExitCode(IntEnum):
    """The process exit codes; the README's table is checked against this by a test."""

    OK = 0  # every row delivered (or already in Loops)
    PARTIAL = 1  # the run finished, but some rows were rejected or failed
    USAGE = 2  # usage, config or source error: nothing was sent
    FATAL_API = 3  # Loops refused the key, or cannot be reached
    LOCKED = 4  # another run of the same sync holds the lock
    OUT_OF_TIME = 5  # --max-duration ran out with work left: the next run continues
    INTERRUPTED = 130  # stopped by SIGINT or SIGTERM after finishing the requests in flight


@dataclass
class RunReport:
    """Every figure of one run; the JSON report is exactly this."""

    sync: str
    dry_run: bool = False
    rows_read: int = 0
    rows_rejected: int = 0
    duplicates: int = 0
    contacts_new: int = 0
    contacts_changed: int = 0
    contacts_unchanged: int = 0
    contacts_retry: int = 0
    events_new: int = 0
    events_retry: int = 0
    events_skipped_delivered: int = 0
    contacts_sent: int = 0
    events_sent: int = 0
    already_delivered: int = 0
    rejected_by_loops: int = 0
    failed: int = 0
    deferred: int = 0
    not_sent: int = 0
    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    wall_seconds: float = 0.0
    send_seconds: float = 0.0
    requests_per_second: float = 0.0  # while sending: reading and planning are not counted
    rate_limit: float = 0.0
    rejects_file: str | None = None
    dry_run_file: str | None = None
    stopped: str | None = None  # why sending stopped early: "time budget" or "signal"
    exit_code: int = 0
    warnings: list[str] = field(default_factory=list)
    # Per contact property: contacts whose value Loops keeps though the source's cell is empty.
    kept_in_loops: dict[str, int] = field(default_factory=dict)

    @property
    def skipped_unchanged(self) -> int:
        return self.contacts_unchanged

    @property
    def retried_from_earlier(self) -> int:
        return self.contacts_retry + self.events_retry

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["skipped_unchanged"] = self.skipped_unchanged
        data["retried_from_earlier"] = self.retried_from_earlier
        return data

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    def decide_exit_code(self) -> int:
        if self.stopped == "signal":
            return ExitCode.INTERRUPTED
        if self.stopped == "time budget" and self.not_sent:
            return ExitCode.OUT_OF_TIME
        if self.rows_rejected or self.rejected_by_loops or self.failed or self.deferred:
            return ExitCode.PARTIAL
        return ExitCode.OK


def render_summary(report: RunReport, out: TextIO | None = None) -> None:
    console = Console(file=out or sys.stdout, highlight=False, soft_wrap=True)
    title = f"loops-sync {'dry run' if report.dry_run else 'run'}: {report.sync}"
    table = Table(title=title, show_header=False, box=None, title_justify="left", pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("rows read", report.rows_read),
        ("rejected (bad rows)", report.rows_rejected),
        ("duplicates (last row won)", report.duplicates),
        (
            "contacts new / changed / retried",
            f"{report.contacts_new} / {report.contacts_changed} / {report.contacts_retry}",
        ),
        ("contacts unchanged (skipped)", report.contacts_unchanged),
        ("events already delivered (skipped)", report.events_skipped_delivered),
        ("contacts sent", report.contacts_sent),
        ("events sent", report.events_sent),
        ("events Loops already had (409)", report.already_delivered),
        ("rejected by Loops", report.rejected_by_loops),
        ("failed (retried next run)", report.failed + report.deferred),
        ("left for the next run", report.not_sent),
        (
            "requests / retries / 429s",
            f"{report.requests} / {report.retries} / {report.rate_limited}",
        ),
        ("wall time", f"{report.wall_seconds:.1f} s"),
        ("requests per second", f"{report.requests_per_second:.2f} (limit {report.rate_limit:g})"),
    ]
    for label, value in rows:
        table.add_row(label, str(value))
    console.print(table)
    for warning in report.warnings:
        console.print(f"warning: {warning}")
    if report.rejects_file:
        console.print(f"rejects: {report.rejects_file}")
    if report.dry_run_file:
        console.print(f"payloads (nothing sent): {report.dry_run_file}")
    if report.stopped:
        console.print(
            f"stopped early ({report.stopped}); the next run continues where this one left off"
        )
    console.print(f"exit code {report.exit_code}")


def write_rejects(path: Path, source: pl.DataFrame, rejects: pl.DataFrame) -> Path | None:
    """The rejected rows with their original columns plus row, column and reason.

    Cells a spreadsheet would run as a formula (starting with = + - @) get a leading quote.
    Returns None (and removes an old file) when nothing was rejected.
    """
    if rejects.is_empty():
        path.unlink(missing_ok=True)
        return None
    original = source.join(rejects.select(ROW), on=ROW, how="semi")
    # A source column may itself be called row, column or reason: it keeps its data, renamed.
    clashes = {name: f"{name} (source)" for name in ("row", "column", "reason") if name in source}
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
    safe.sort("row").write_csv(path)
    return path


class ProgressReporter:
    """A progress bar on a terminal; a plain line every `every` seconds otherwise (cron, CI)."""

    def __init__(
        self, total: int, *, out: TextIO | None = None, every: float = 10.0, quiet: bool = False
    ):
        self.total = total
        self.done = 0
        self.quiet = quiet
        self.out = out or sys.stderr
        self.every = every
        self._last = time.monotonic()
        self._started = self._last
        self._bar: Progress | None = None
        self._task: Any = None

    def __enter__(self) -> ProgressReporter:
        if not self.quiet and self.total and self.out.isatty():
            self._bar = Progress(
                TextColumn("sending"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.out),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("send", total=self.total)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def advance(self, count: int = 1) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
            return
        now = time.monotonic()
        if not self.quiet and now - self._last >= self.every:
            self._last = now
            rate = self.done / max(now - self._started, 1e-9)
            print(
                f"progress: {self.done}/{self.total} requests, {rate:.1f}/s",
                file=self.out,
                flush=True,
            )
