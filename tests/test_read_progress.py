"""What a person sees before and while sending: reading's progress, the warnings as soon as the
plan is known (the budget's first), and an ETA that knows about --max-duration."""

from __future__ import annotations

import io
from pathlib import Path

import httpx

from sync.config import Config, load_config
from sync.model import ReadProgress, SendProgress
from sync.pipeline import Options, plan_sync, run_sync
from sync.render import ProgressDisplay, time_left
from sync.sender import RetryPolicy
from tests.fakes import ScriptedLoops

KEY = "sk-live-0123456789abcdef"


def project(tmp_path: Path, rows: int, *, rate: int = 50) -> Config:
    (tmp_path / "people.csv").write_text(
        "email\n" + "".join(f"p{i}@example.com\n" for i in range(rows))
    )
    config = tmp_path / "sync.yaml"
    config.write_text(
        f"name: t\nsource: {{csv: people.csv}}\nloops: {{rate_limit: {rate}}}\n"
        "contact: {email: email}\n"
    )
    return load_config(config, env={"LOOPS_API_KEY": KEY})


def test_reading_reports_the_rows_read_and_the_end_of_the_source(tmp_path: Path) -> None:
    seen: list[ReadProgress] = []
    preview = plan_sync(project(tmp_path, 5), on_read=seen.append)
    assert seen[-1] == ReadProgress(preview.report.rows_read, finished=True)
    assert [p.rows for p in seen] == sorted(p.rows for p in seen)
    assert not any(p.finished for p in seen[:-1])


def test_a_run_reports_reading_through_its_option(tmp_path: Path) -> None:
    seen: list[ReadProgress] = []
    options = Options(dry_run=True, on_read=seen.append)
    assert run_sync(project(tmp_path, 3), options).rows_read == 3
    assert seen[-1] == ReadProgress(3, finished=True)


def test_a_budget_too_short_is_said_before_the_first_request_and_first(tmp_path: Path) -> None:
    """20 requests at 1/s need 20 s: a budget of 5 s is too short, said before sending."""
    happened: list[str] = []
    loops = ScriptedLoops()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/update"):
            happened.append("request")
        return loops(request)

    options = Options(
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy.immediate(),
        max_duration=1.5,
        on_warning=lambda warning: happened.append(f"warning: {warning}"),
    )
    report = run_sync(project(tmp_path, 20, rate=1), options)
    assert happened[0].startswith("warning: at 1 requests/s the 20 requests need about 20 s")
    assert "more than --max-duration (1.5 s)" in happened[0]
    assert "request" in happened
    assert report.warnings[0] == happened[0].removeprefix("warning: ")
    assert report.stopped == "time budget"


def test_the_progress_knows_when_the_budget_ends(tmp_path: Path) -> None:
    seen: list[SendProgress] = []
    config = project(tmp_path, 2)
    transport = ScriptedLoops().transport
    run_sync(config, Options(transport=transport, on_progress=seen.append, max_duration=60))
    assert seen
    assert all(p.ends_by is not None for p in seen)
    unbounded: list[SendProgress] = []
    (tmp_path / "people.csv").write_text("email\nnew@example.com\n")
    run_sync(config, Options(transport=transport, on_progress=unbounded.append))
    assert unbounded
    assert all(p.ends_by is None for p in unbounded)


def test_the_eta_is_the_budget_when_the_budget_ends_first() -> None:
    assert time_left(30.0, None) == "30 s"
    assert time_left(30.0, 300.0) == "30 s"
    assert time_left(3000.0, 300.0) == "5 min 0 s (--max-duration)"
    assert time_left(None, 90.0) == "1 min 30 s (--max-duration)"
    assert time_left(None, None) == "-:--"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_reading_shows_on_a_terminal_only() -> None:
    for out, shown in ((io.StringIO(), False), (Terminal(), True)):
        with ProgressDisplay(out=out) as display:
            display.reading(ReadProgress(50_000))
            display.reading(ReadProgress(70_000, finished=True))
        assert ("rows read" in out.getvalue()) is shown


def test_warnings_before_sending_show_on_a_terminal_only() -> None:
    for out, shown in ((io.StringIO(), ""), (Terminal(), "warning: budget too short\n")):
        with ProgressDisplay(out=out) as display:
            display.warning("budget too short")
        assert out.getvalue() == shown
