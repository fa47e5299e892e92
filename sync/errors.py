"""Every error loops-sync raises, grouped by what happens next.

    LoopsSyncError                 base; carries the exit code the CLI uses
    ├── StopRun                    the run stops; nothing more is sent
    │   ├── ConfigError            exit 2: the config is wrong (every problem listed)
    │   ├── SourceError            exit 2: the source cannot be read
    │   ├── FatalApiError          exit 3: bad API key, API unreachable, wrong base URL
    │   └── LockedError            exit 4: another run of the same sync holds the lock
    ├── RetryableError             sent again (now with back-off, or on the next run)
    └── RejectedRow                the row goes to the rejects file with the reason

Exit codes 0 (all delivered), 1 (some rows rejected or failed) and 5 (the time budget ran out)
are outcomes of a finished run, not errors; they live in `report.ExitCode`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "FatalApiError",
    "LockedError",
    "LoopsSyncError",
    "RejectedRow",
    "RetryableError",
    "SourceError",
    "StopRun",
]


class LoopsSyncError(Exception):
    """Base of every loops-sync error."""

    exit_code = 1


class StopRun(LoopsSyncError):
    """The run cannot go on: the CLI prints the message and exits with `exit_code`."""


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

    exit_code = 2

    def __init__(self, file: str, problems: list[ConfigProblem]) -> None:
        self.file = file
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{file}: {count} {noun} in the config:\n{lines}")


class SourceError(StopRun):
    """The source (file, glob or database) cannot be read as configured."""

    exit_code = 2


class FatalApiError(StopRun):
    """Loops refused the whole run (a bad key) or cannot be reached at all."""

    exit_code = 3


class LockedError(StopRun):
    """Another run of the same sync is in progress."""

    exit_code = 4


class RetryableError(LoopsSyncError):
    """A request that may succeed later: rate limited, a 5xx, a timeout, a dropped connection.

    `retry_after` is the server's hint in seconds, when it gave one.
    """

    def __init__(
        self, message: str, *, status: int | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class RejectedRow(LoopsSyncError):
    """Loops refused this one request (a 400): the row goes to the rejects file."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status
