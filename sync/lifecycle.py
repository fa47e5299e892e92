"""How a run ends when it does not finish: as a StopRun carrying the report as far as it got,
its history entry closed with the reason, a bug's traceback in the crash log.

Whatever ends a run early (an error, Ctrl-C, a bug) leaves `run_sync()` as a StopRun, so that
the CLI writes `--report` and picks the exit code the same way every time.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sync.config import Config
from sync.errors import InternalError, Interrupted, LedgerError, StopRun
from sync.ledger import Ledger
from sync.report import RunReport, write_crash_log

__all__ = ["as_stop_run", "crash_log_path", "ending_as_stop_run", "recorded_in_history"]


def as_stop_run(error: BaseException, config: Config | None) -> StopRun:
    """Whatever ended a run, as the StopRun that says what happens next.

    A StopRun stays itself, also inside the exception group of the sender's task groups;
    Ctrl-C becomes Interrupted; anything else is a bug: an InternalError, its traceback written
    (API key blanked out) to the crash log of `config` (the temp directory when it is None).
    """
    if isinstance(error, BaseExceptionGroup):
        stops, others = error.split(StopRun)
        if stops is not None and others is None:
            return _first_leaf(stops)
        interrupts, others = error.split(KeyboardInterrupt)
        if interrupts is not None and others is None:
            return Interrupted("interrupted: nothing more was sent")
    if isinstance(error, StopRun):
        return error
    if isinstance(error, KeyboardInterrupt):
        return Interrupted("interrupted: nothing more was sent")
    return InternalError(error, write_crash_log(crash_log_path(config), error, _secrets(config)))


def crash_log_path(config: Config | None) -> Path:
    """Where a bug's traceback goes: the state directory, once the config is known."""
    if config is None:
        return Path(tempfile.gettempdir()) / "loops-sync-error.log"
    return config.state.crash_log


def _first_leaf(group: BaseExceptionGroup[StopRun]) -> StopRun:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _secrets(config: Config | None) -> list[str]:
    """The values a crash log must not show: the config's API key. Before the config is loaded
    nothing is resolved yet: then the default variable's value, as the environment holds it."""
    if config is None:
        return [key] if (key := os.environ.get("LOOPS_API_KEY")) else []
    return [config.api_key.get_secret_value()] if config.api_key else []


@contextmanager
def ending_as_stop_run(config: Config, report: RunReport) -> Iterator[None]:
    """Whatever ends the run early leaves as a StopRun carrying the report as far as it got."""
    started = time.monotonic()
    try:
        yield
    except (Exception, KeyboardInterrupt, BaseExceptionGroup) as error:
        stop = as_stop_run(error, config)
        if stop.report is None:
            report.record_error(stop)
            report.wall_seconds = time.monotonic() - started
            stop.report = report
        if stop is error:
            raise
        raise stop from error


@contextmanager
def recorded_in_history(ledger: Ledger, run_id: int, report: RunReport) -> Iterator[None]:
    """The run's history entry is closed however the run ends, with how it ended. A ledger that
    cannot be written cannot record a failure either: the entry is then marked died next run."""
    try:
        yield
    except StopRun:
        with suppress(LedgerError):
            ledger.finish_run(
                run_id, report.exit_code, report.to_json(), status="failed", reason=report.outcome()
            )
        raise
    ledger.finish_run(run_id, report.exit_code, report.to_json(), reason=report.outcome())
