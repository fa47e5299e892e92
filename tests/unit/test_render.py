"""What a person reads: durations, rates, the exit-code rule for rejects (--max-rejects)."""

from __future__ import annotations

import pytest

from sync.errors import ExitCode
from sync.render import duration
from sync.report import RejectLimit, RunReport


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0.0, "< 1 s"),
        (0.4, "< 1 s"),
        (4.24, "4.2 s"),
        (42.4, "42 s"),
        (149, "2 min 29 s"),
        (3599.4, "59 min 59 s"),
        (100_000, "27 h 47 min"),
    ],
)
def test_a_duration_reads_as_a_person_says_it(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


@pytest.mark.parametrize(
    ("text", "limit"),
    [
        ("50", RejectLimit(count=50)),
        ("0", RejectLimit(count=0)),
        ("2%", RejectLimit(percent=2.0)),
        (" 0.5 % ", RejectLimit(percent=0.5)),
    ],
)
def test_max_rejects_is_a_count_or_a_share(text: str, limit: RejectLimit) -> None:
    assert RejectLimit.parse(text) == limit


@pytest.mark.parametrize("text", ["", "ten", "-1", "101%", "2.5", "nan%"])
def test_max_rejects_refuses_what_is_neither(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a number|out of range"):
        RejectLimit.parse(text)


def report(rows: int, rejected: int, loops: int = 0, failed: int = 0) -> RunReport:
    return RunReport(
        "s", rows_read=rows, rows_rejected=rejected, rejected_by_loops=loops, failed=failed
    )


@pytest.mark.parametrize(
    ("run", "limit", "code"),
    [
        (report(100, 0), None, ExitCode.OK),
        (report(100, 3), None, ExitCode.REJECTED),
        (report(100, 2, loops=1), RejectLimit(count=3), ExitCode.OK),
        (report(100, 3, loops=1), RejectLimit(count=3), ExitCode.REJECTED),
        (report(1000, 20), RejectLimit(percent=2.0), ExitCode.OK),
        (report(1000, 21), RejectLimit(percent=2.0), ExitCode.REJECTED),
        (report(100, 0, failed=1), None, ExitCode.WORK_LEFT),
        (report(100, 50, failed=1), RejectLimit(count=0), ExitCode.WORK_LEFT),
    ],
)
def test_rejects_exit_1_unless_allowed_and_failures_exit_5(
    run: RunReport, limit: RejectLimit | None, code: ExitCode
) -> None:
    if limit is not None:
        run.rejects_allowed = limit.rows(run.rows_read)
    assert run.decide_exit_code() == code
