"""What the CLI shows a person: the run's summary and sending's progress (rich).

The library gathers figures and reports progress through a callback; only the CLI imports this.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from sync.departures import VERBS as REMOVAL_VERBS
from sync.model import ReadProgress, SendProgress
from sync.report import RunReport
from sync.side_effects import CLEARED, SideEffects

# What the rejects file's `row` counts, said wherever the file is named.
ROW_NOTE = "row: the data row's number, the header not counted"

__all__ = [
    "ROW_NOTE",
    "ProgressDisplay",
    "duration",
    "render_summary",
    "side_effect_lines",
    "time_left",
]


def duration(seconds: float) -> str:
    """As a person says it: `< 1 s`, `4.2 s`, `2 min 29 s`, `27 h 47 min`."""
    if seconds < 1:
        return "< 1 s"
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60} min"


# Fewer requests, or a shorter send, and a rate says more about timing noise than pacing.
RATE_MIN_REQUESTS = 20
RATE_MIN_SECONDS = 5.0


def _rate(report: RunReport) -> str:
    limit = f"limit {report.rate_limit:g}"
    if report.requests < RATE_MIN_REQUESTS or report.send_seconds < RATE_MIN_SECONDS:
        return f"- (too few requests to measure; {limit})"
    return f"{report.requests_per_second:.1f} ({limit})"


def _rejected(report: RunReport) -> str:
    if report.rejects_allowed is None or not report.rows_rejected_in_all:
        return str(report.rows_rejected)
    return f"{report.rows_rejected} (--max-rejects allows {report.rejects_allowed})"


def side_effect_lines(effects: SideEffects) -> list[str]:
    """What the plan's upserts do in Loops besides storing values, a line each, with a few of
    the contacts; none when they only store values."""
    lines = []
    if effects.contacts_created:
        lines.append(
            f"{effects.contacts_created} contacts created"
            f"{_examples(effects, 'contacts_created')}: Loops starts "
            'the team\'s "Contact added" workflows for each (those it already has are updated)'
        )
    if effects.subscribed_true:
        lines.append(
            f"{effects.subscribed_true} contacts sent subscribed: true"
            f"{_examples(effects, 'subscribed_true')}: re-subscribes any who unsubscribed"
        )
    if effects.subscribed_false:
        lines.append(
            f"{effects.subscribed_false} contacts sent subscribed: false"
            f"{_examples(effects, 'subscribed_false')}: they get no campaign or loop emails"
        )
    if effects.contacts_removed:
        verb = REMOVAL_VERBS.get(effects.removal or "", "removed")
        lines.append(
            f"{effects.contacts_removed} contacts {verb}{_examples(effects, 'contacts_removed')}"
            ": they left the source (contact.removed), after every other request"
        )
    for name, count in sorted(effects.properties_cleared.items()):
        lines.append(
            f"{count} contacts have {name} cleared (empty: clear sends null)"
            f"{_examples(effects, CLEARED + name)}"
        )
    return lines


def _examples(effects: SideEffects, effect: str) -> str:
    names = effects.examples.get(effect, ())
    return f" (e.g. {', '.join(names)})" if names else ""


def render_summary(report: RunReport, out: TextIO | None = None) -> None:
    console = Console(file=out or sys.stdout, highlight=False, soft_wrap=True)
    kind = "dry run" if report.dry_run else "baseline" if report.baseline else "run"
    title = f"loops-sync {kind}: {report.sync}"
    table = Table(title=title, show_header=False, box=None, title_justify="left", pad_edge=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("rows read", report.rows_read),
        ("rows rejected (bad data)", _rejected(report)),
        ("duplicate rows (the last one won)", report.duplicates),
        (
            "contacts new / changed / retried",
            f"{report.contacts_new} / {report.contacts_changed} / {report.contacts_retry}",
        ),
        ("contacts unchanged (skipped)", report.contacts_unchanged),
        ("events new / retried", f"{report.events_new} / {report.events_retry}"),
        ("events already delivered (skipped)", report.events_already_delivered),
        ("requests planned", report.requests_planned),
        ("contacts sent", report.contacts_sent),
        ("events sent", report.events_sent),
        ("events Loops already had (409)", report.events_duplicate),
        ("requests rejected by Loops (400)", report.rejected_by_loops),
        ("requests failed (retried next run)", report.failed),
        ("requests left for the next run", report.work_left),
        (
            "requests made / retries / 429s",
            f"{report.requests} / {report.retries} / {report.rate_limited}",
        ),
        ("wall time", duration(report.wall_seconds)),
        ("requests per second", _rate(report)),
    ]
    for label, value in rows:
        table.add_row(label, str(value))
    console.print(table)
    effects = side_effect_lines(report.side_effects)
    if effects:
        made = " (none made: dry run)" if report.dry_run else ""
        made = " (none made: baseline)" if report.baseline else made
        console.print("side effects in Loops" + made)
    for line in effects:
        console.print(f"  {line}")
    for warning in report.warnings:
        console.print(f"warning: {warning}")
    if report.baseline is not None:
        console.print(str(report.baseline))
    if report.rejects_file:
        console.print(f"rejects: {report.rejects_file} ({ROW_NOTE})")
    if report.dry_run_file:
        console.print(f"payloads (nothing sent): {report.dry_run_file}")
    if report.stopped:
        console.print(
            f"stopped early ({report.stopped}); the next run continues where this one left off"
        )
    if report.requests_left_by_limit:
        console.print(
            f"--limit reached: {report.requests_left_by_limit} requests for "
            f"{report.contacts_left_by_limit} contacts left for the next run"
        )
    console.print(f"exit code {report.exit_code}")


def time_left(remaining: float | None, budget_left: float | None) -> str:
    """The ETA a progress bar shows: sending's own estimate, unless `--max-duration` ends it
    first (then the time left in the budget, saying so)."""
    if budget_left is not None and (remaining is None or remaining > budget_left):
        return f"{duration(max(budget_left, 0.0))} (--max-duration)"
    return "-:--" if remaining is None else duration(remaining)


class _TimeLeft(ProgressColumn):
    """`time_left` as a column: `ends_by` is when the budget ends (`time.monotonic()`)."""

    ends_by: float | None = None

    def render(self, task: Task) -> Text:
        budget_left = None if self.ends_by is None else self.ends_by - time.monotonic()
        return Text(time_left(task.time_remaining, budget_left), style="progress.remaining")


class ProgressDisplay:
    """Reading's and sending's progress. Reading: a spinner and the rows read so far, on a
    terminal only. Sending: a bar on a terminal, a plain line every `every` seconds otherwise
    (cron, CI). Given to the library as its callbacks (`reading`, and the display itself for
    sending); a bar starts at its first report and is closed by the CLI before the summary."""

    def __init__(self, *, out: TextIO | None = None, every: float = 10.0) -> None:
        self.out = out or sys.stderr
        self.every = every
        self._last = time.monotonic()
        self._started: float | None = None
        self._bar: Progress | None = None
        self._task: Any = None
        self._eta = _TimeLeft()
        self._reading: Progress | None = None
        self._read_task: Any = None

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop_reading()
        if self._bar is not None:
            self._bar.stop()

    def reading(self, progress: ReadProgress) -> None:
        """Rows read so far: a line that moves while a large source is read, gone once read."""
        if progress.finished:
            self._stop_reading()
            return
        if self._reading is None:
            if not self.out.isatty():
                return
            self._reading = Progress(
                SpinnerColumn(),
                TextColumn("reading"),
                TextColumn("{task.completed:,.0f} rows read"),
                TimeElapsedColumn(),
                console=Console(file=self.out),
                transient=True,
            )
            self._reading.start()
            self._read_task = self._reading.add_task("read", total=None)
        self._reading.update(self._read_task, completed=progress.rows)

    def warning(self, text: str) -> None:
        """A warning known before sending, shown as sending starts, on a terminal: there the
        summary comes after a long wait. Elsewhere (cron) the summary alone says it."""
        if self.out.isatty():
            self._stop_reading()
            print(f"warning: {text}", file=self.out, flush=True)

    def _stop_reading(self) -> None:
        if self._reading is not None:
            self._reading.stop()
            self._reading = None

    def __call__(self, progress: SendProgress) -> None:
        if self._started is None:
            self._stop_reading()
            self._start(progress.total)
        self._eta.ends_by = progress.ends_by
        if self._bar is not None:
            self._bar.update(self._task, completed=progress.done)
            return
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            rate = progress.done / max(now - (self._started or now), 1e-9)
            print(
                f"progress: {progress.done}/{progress.total} requests, {rate:.1f}/s",
                file=self.out,
                flush=True,
            )

    def _start(self, total: int) -> None:
        self._started = self._last = time.monotonic()
        if total and self.out.isatty():
            self._bar = Progress(
                TextColumn("sending"),
                BarColumn(),
                MofNCompleteColumn(),
                self._eta,
                console=Console(file=self.out),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task("send", total=total)
