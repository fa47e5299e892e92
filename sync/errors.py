"""Every error loops-sync raises, grouped by what happens next, and the exit codes they map to.

    LoopsSyncError                 base; carries the exit code the CLI uses
    ├── StopRun                    the run stops; nothing more is sent
    │   ├── ConfigError            exit 2: the config is wrong (every problem listed)
    │   ├── SourceError            exit 2: the source cannot be read
    │   ├── AccountError           exit 2: the Loops account lacks what the config maps
    │   ├── FatalApiError          exit 3: bad API key, API unreachable, wrong base URL
    │   ├── LockedError            exit 4: another run of the same sync holds the lock
    │   ├── LedgerError            exit 6: the ledger cannot be written; sending stopped
    │   ├── InternalError          exit 70: a bug; the traceback is in a log file
    │   └── Interrupted            exit 130: Ctrl-C before the run could drain
    ├── RetryableError             sent again (now with back-off, or on the next run)
    └── RejectedRow                the row goes to the rejects file with the reason

The three a request can raise (FatalApiError, RetryableError, RejectedRow) carry the `Outcome`
they stand for: the words `classify()` gave the answer are the ones the recorder reads.

Exit codes 0 (all delivered), 1 (rows rejected: fix the data) and 5 (work left for the next
run: run again) are outcomes of a finished run, not errors. Every code is a member of `ExitCode`,
defined once here: the errors carry them, `loops-sync --help` lists them, a test checks the
README's table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from sync.model import Outcome

if TYPE_CHECKING:
    from sync.report import RunReport

__all__ = [
    "AccountError",
    "ConfigError",
    "ConfigProblem",
    "ExitCode",
    "FatalApiError",
    "InternalError",
    "Interrupted",
    "LedgerError",
    "LockedError",
    "LoopsSyncError",
    "RejectedRow",
    "RetryableError",
    "SourceError",
    "StopRun",
]


class ExitCode(IntEnum):
    """The process exit codes; `meaning` is what `--help` and the README say of each."""

    OK = 0
    REJECTED = 1
    TEST_FAILED = 1  # `loops-sync test`: the same code, another command
    USAGE = 2
    FATAL_API = 3
    LOCKED = 4
    WORK_LEFT = 5
    LEDGER = 6
    INTERNAL = 70
    INTERRUPTED = 130

    @property
    def meaning(self) -> str:
        return _MEANINGS[self]


_MEANINGS = {
    ExitCode.OK: "every row delivered (or already in Loops; rejects within --max-rejects)",
    ExitCode.REJECTED: "rows rejected (bad data, or refused by Loops): fix them, see the rejects "
    "file; for `test`: a case failed",
    ExitCode.USAGE: "usage, config, source or account (properties, lists) error: nothing was sent",
    ExitCode.FATAL_API: "fatal API error: bad API key, API unreachable",
    ExitCode.LOCKED: "another run of the same sync holds the lock",
    ExitCode.WORK_LEFT: "work left for the next run: requests failed (Loops down, 5xx) and are "
    "retried, --max-duration ran out, or --limit",
    ExitCode.LEDGER: "the ledger (state) cannot be written: sending stopped",
    ExitCode.INTERNAL: "internal error (a bug): the traceback is in <state dir>/<sync>-error.log",
    ExitCode.INTERRUPTED: "interrupted (SIGINT or SIGTERM); the next run continues",
}


class LoopsSyncError(Exception):
    """Base of every loops-sync error. One that is not a StopRun should never leave a run."""

    exit_code: ExitCode = ExitCode.INTERNAL


class StopRun(LoopsSyncError):
    """The run cannot go on: the CLI prints the message and exits with `exit_code`.

    `report` is the run's report as far as it got, when the error left `run_sync()`.
    """

    report: RunReport | None = None


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a config: where (a dotted key path, maybe a line) and what."""

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        line = f"line {self.line}" if self.line else ""
        where = f"{self.path} ({line})" if self.path and line else self.path or line
        return f"{where}: {self.message}" if where else self.message


class ConfigError(StopRun):
    """The config file is wrong; every problem found is reported at once."""

    exit_code = ExitCode.USAGE

    def __init__(self, file: str, problems: list[ConfigProblem]) -> None:
        self.file = file
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{file}: {count} {noun} in the config:\n{lines}")


class SourceError(StopRun):
    """The source (file, glob or database) cannot be read as configured."""

    exit_code = ExitCode.USAGE


class AccountError(StopRun):
    """The Loops account does not take what the config maps: a custom property it lacks (Loops
    drops such values silently), a property of another type, a mailing list it does not have.
    Found before anything is sent; every problem is listed, each at its place in the config."""

    exit_code = ExitCode.USAGE

    def __init__(self, file: str, problems: list[ConfigProblem], advice: str = "") -> None:
        self.file = file
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        advice = f"\n{advice}" if advice else ""
        super().__init__(
            f"{file}: the Loops account does not match the config ({count} {noun}); "
            f"nothing was sent:\n{lines}{advice}"
        )


class FatalApiError(StopRun):
    """Loops refused the whole run (a bad key) or cannot be reached at all."""

    exit_code = ExitCode.FATAL_API
    outcome: ClassVar[Outcome] = Outcome.FATAL


class LockedError(StopRun):
    """Another run of the same sync is in progress."""

    exit_code = ExitCode.LOCKED


class LedgerError(StopRun):
    """The ledger cannot be written (disk full, read-only, locked beyond the busy timeout).

    Sending stops at once: a request Loops confirmed but the ledger cannot record would be sent
    again by the next run.
    """

    exit_code = ExitCode.LEDGER


class InternalError(StopRun):
    """An exception loops-sync did not expect: a bug. The traceback is in `log_file`, not on the
    screen; the message names only the exception's type (a library's text may hold anything)."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, error: BaseException, log_file: Path | None) -> None:
        self.log_file = log_file
        where = f"the traceback is in {log_file}" if log_file else "no log file could be written"
        super().__init__(f"internal error ({type(error).__name__}), a bug in loops-sync; {where}")


class Interrupted(StopRun):
    """Ctrl-C (or SIGTERM) arrived where the run could not drain its requests in flight."""

    exit_code = ExitCode.INTERRUPTED


class RetryableError(LoopsSyncError):
    """A request that may succeed later: rate limited, a 5xx, a timeout, a dropped connection.

    `retry_after` is the server's hint in seconds, when it gave one. Once the tries are spent,
    the request's outcome is FAILED, and the next run sends it again.
    """

    outcome: ClassVar[Outcome] = Outcome.FAILED

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class RejectedRow(LoopsSyncError):
    """Loops refused this one request (a 400): the row goes to the rejects file."""

    outcome: ClassVar[Outcome] = Outcome.REJECTED

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status
