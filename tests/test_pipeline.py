"""run_sync() as a library call, against a recording MockTransport."""

from __future__ import annotations

import gc
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from sync import cli, pipeline, read
from sync.config import Config, load_config
from sync.errors import ConfigError, FatalApiError, LedgerError
from sync.ledger import Ledger
from sync.ledger_db import Db
from sync.model import SendProgress
from sync.pipeline import Options, plan_sync, run_history, run_sync
from sync.sender import RetryPolicy
from tests.fakes import ScriptedLoops

KEY = "sk-live-0123456789abcdef"
WITH_EVENTS = "\nevents:\n  - name: signup\n    email: email\n"


def project(tmp_path: Path, rows: int, extra: str = "", loops: str = "rate_limit: 50") -> Path:
    (tmp_path / "people.csv").write_text(
        "email\n" + "".join(f"p{i}@example.com\n" for i in range(rows))
    )
    config = tmp_path / "sync.yaml"
    config.write_text(
        f"name: t\nsource: {{csv: people.csv}}\nloops: {{{loops}}}\ncontact: {{email: email}}\n"
        + extra
    )
    return config


def run_against(loops: ScriptedLoops, config: Config, **options: Any) -> Any:
    settings = Options(
        transport=loops.transport,
        retry=RetryPolicy.immediate(),
        **options,
    )
    return run_sync(config, settings)


def sent(loops: ScriptedLoops) -> list[httpx.Request]:
    """The contact and event requests (not a check of the API key, if the run makes one)."""
    return [r for r in loops.requests if r.url.path.endswith(("/update", "/send"))]


def test_a_lower_limit_from_loops_is_followed_and_reported(tmp_path: Path) -> None:
    lower = httpx.Response(
        200,
        json={"success": True},
        headers={"x-ratelimit-limit": "20", "x-ratelimit-remaining": "19"},
    )
    loops = ScriptedLoops({"/api/v1/contacts/update": [lower]})
    options = Options(transport=loops.transport, retry=RetryPolicy.immediate())
    report = run_sync(load_config(project(tmp_path, 3), env={"LOOPS_API_KEY": "k"}), options)
    assert report.contacts_sent == 3
    assert any("limit of 20 requests/s" in warning for warning in report.warnings)


def test_ctrl_c_before_sending_is_a_message_and_exit_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_sync", interrupted)
    result = CliRunner().invoke(cli.main, ["run", str(project(tmp_path, 1))])
    assert result.exit_code == 130
    assert "interrupted" in result.output
    assert "Traceback" not in result.output


def test_the_plan_a_preview_returns_stays_readable_and_its_spool_goes_with_it(
    tmp_path: Path,
) -> None:
    """`plan_sync` keeps its plan on disk: the caller can still read every job, and the folder
    is removed once the preview is dropped."""
    config = load_config(project(tmp_path, 3, WITH_EVENTS), env={})
    preview = plan_sync(config)
    assert preview.plan.requests.height == 6
    assert len(list(preview.plan.jobs())) == 3
    spools = list(config.state.root.glob("*-spool-*"))
    assert len(spools) == 1
    del preview
    gc.collect()
    assert not any(path.exists() for path in spools)


def test_the_plan_outlives_its_preview(tmp_path: Path) -> None:
    """`plan_sync(config).plan` drops the preview at once: its plan must stay readable (the
    bench's ledger fill read a removed spool this way)."""
    config = load_config(project(tmp_path, 3, WITH_EVENTS), env={})
    plan = plan_sync(config).plan
    gc.collect()
    assert plan.requests.height == 6
    del plan
    gc.collect()
    assert not list(config.state.root.glob("*-spool-*"))


def test_a_plan_that_fails_leaves_no_spool_behind(tmp_path: Path) -> None:
    config = load_config(project(tmp_path, 3), env={})
    (tmp_path / "people.csv").write_text("mail\nx@example.com\n")  # the email column is gone
    with pytest.raises(ConfigError, match="email"):
        plan_sync(config)
    assert not list(config.state.root.glob("*-spool-*"))


@pytest.mark.parametrize("key", [None, "sk-live\x01secret"], ids=["missing", "malformed"])
def test_plan_and_a_dry_run_need_no_key_and_a_real_run_refuses_it(
    tmp_path: Path, key: str | None
) -> None:
    env = {} if key is None else {"LOOPS_API_KEY": key}
    config = load_config(project(tmp_path, 3), env=env)
    assert plan_sync(config).plan.request_count == 3
    assert run_sync(config, Options(dry_run=True)).exit_code == 0
    with pytest.raises(ConfigError, match="LOOPS_API_KEY") as caught:
        run_sync(config, Options())
    assert caught.value.exit_code == 2
    assert key is None or key not in str(caught.value)


def test_limit_leaves_work_says_how_much_and_exits_5(tmp_path: Path) -> None:
    """0 means every row delivered: a run that --limit cut short has work left for the next."""
    loops = ScriptedLoops()
    config = load_config(project(tmp_path, 5, WITH_EVENTS), env={"LOOPS_API_KEY": KEY})
    report = run_against(loops, config, limit=2)
    assert len(sent(loops)) == 2  # each upsert rides on its contact's event
    assert report.exit_code == 5
    assert (report.requests_left_by_limit, report.contacts_left_by_limit) == (3, 3)
    assert report.to_json()["work_left"] == 3
    assert "--limit: 3 requests (3 contacts)" in report.outcome()
    assert run_history(config)[0].reason == report.outcome()

    rest = run_against(ScriptedLoops(), config)
    assert (rest.exit_code, rest.events_sent, rest.requests_left_by_limit) == (0, 3, 0)


def test_a_fatal_api_error_mid_run_keeps_the_partial_report_and_the_reason(
    tmp_path: Path,
) -> None:
    loops = ScriptedLoops({"/api/v1/events/send": [200, 200, 401]})
    config = load_config(
        project(tmp_path, 5, WITH_EVENTS, "rate_limit: 50, concurrency: 1"),
        env={"LOOPS_API_KEY": KEY},
    )
    with pytest.raises(FatalApiError) as caught:
        run_against(loops, config)
    report = caught.value.report
    assert report is not None
    assert report.events_sent == 2
    assert report.exit_code == 3
    assert report.error == str(caught.value)
    [run] = run_history(config)
    assert (run.status, run.exit_code, run.reason) == ("failed", 3, str(caught.value))
    assert run.counts["events_sent"] == 2


class CommitsRunOut:
    """A ledger connection on a disk that fills up: commits fail after the first `allowed`."""

    def __init__(self, db: Db, allowed: int) -> None:
        self.db = db
        self.allowed = allowed

    @contextmanager
    def transaction(self, *, exclusive: bool = False) -> Iterator[None]:
        with self.db.transaction(exclusive=exclusive):
            yield
            if self.allowed == 0:
                raise sqlite3.OperationalError("database or disk is full")
            self.allowed -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def test_a_ledger_that_cannot_be_written_stops_sending_at_once_with_exit_6(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class FillingLedger(Ledger):
        def __init__(self, path: Path, sync: str) -> None:
            super().__init__(path, sync)
            self._db = CommitsRunOut(self._db, allowed=4)  # the run's start, then 3 events

    monkeypatch.setattr(pipeline, "Ledger", FillingLedger)
    loops = ScriptedLoops()
    config = load_config(
        project(tmp_path, 40, WITH_EVENTS, "rate_limit: 200, concurrency: 2"),
        env={"LOOPS_API_KEY": KEY},
    )
    with pytest.raises(LedgerError, match="database or disk is full") as caught:
        run_against(loops, config)
    assert caught.value.exit_code == 6
    assert caught.value.report is not None
    assert caught.value.report.exit_code == 6
    recorded = Ledger(config.state_dir / "ledger.sqlite", "t").delivered_events().height
    assert recorded == 3
    # Sent but not recorded: the request whose record failed and at most one other in flight.
    assert len(sent(loops)) <= recorded + 2


def test_a_bug_exits_70_with_one_line_and_the_traceback_in_the_state_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*_: object, **__: object) -> None:
        raise RuntimeError(f"boom near {KEY}")

    monkeypatch.setattr(pipeline, "plan_slices", bug)
    config = project(tmp_path, 3)
    runner = CliRunner()
    env = {"LOOPS_API_KEY": KEY, "LOOPS_SYNC_STATE": ""}
    result = runner.invoke(
        cli.main, ["run", str(config), "--report", str(tmp_path / "last.json")], env=env
    )

    assert result.exit_code == 70
    log = tmp_path / ".loops-sync" / "t-error.log"
    assert result.stderr == (
        f"error: internal error (RuntimeError), a bug in loops-sync; the traceback is in {log}\n"
    )
    assert "Traceback" not in result.output
    text = log.read_text()
    assert "Traceback" in text
    assert "RuntimeError: boom near ***" in text
    assert KEY not in text
    report = json.loads((tmp_path / "last.json").read_text())
    assert (report["exit_code"], report["log_file"]) == (70, str(log))
    history = runner.invoke(cli.main, ["history", str(config), "--json"], env=env)
    [run] = json.loads(history.stdout)
    assert (run["status"], run["exit_code"]) == ("failed", 70)
    assert run["reason"].startswith("internal error (RuntimeError)")


def test_a_bug_before_the_config_is_known_logs_in_the_temp_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(*_: object, **__: object) -> None:
        raise ZeroDivisionError

    monkeypatch.setattr(cli, "load_config", bug)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = CliRunner().invoke(cli.main, ["plan", str(project(tmp_path, 1))])
    assert result.exit_code == 70
    assert str(tmp_path / "loops-sync-error.log") in result.stderr
    assert "ZeroDivisionError" in (tmp_path / "loops-sync-error.log").read_text()


def test_ctrl_c_while_reading_writes_the_report_and_closes_the_history_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(read, "open_source", interrupted)
    config = project(tmp_path, 1)
    runner = CliRunner()
    result = runner.invoke(
        cli.main,
        ["run", str(config), "--report", str(tmp_path / "last.json")],
        env={"LOOPS_API_KEY": KEY},
    )
    assert result.exit_code == 130
    assert json.loads((tmp_path / "last.json").read_text())["exit_code"] == 130
    [run] = run_history(load_config(config))
    assert (run.status, run.exit_code) == ("failed", 130)


def test_the_library_prints_nothing_and_reports_progress_through_its_callback(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    seen: list[SendProgress] = []
    config = load_config(project(tmp_path, 4, WITH_EVENTS), env={"LOOPS_API_KEY": KEY})
    report = run_against(ScriptedLoops(), config, on_progress=seen.append)
    assert report.exit_code == 0
    assert capfd.readouterr() == ("", "")
    assert [p.done for p in seen] == list(range(1, len(seen) + 1))
    assert {p.total for p in seen} == {4}  # requests: each upsert rides on its event
    assert seen[-1].done == report.requests == 4


def test_sending_reads_the_plan_from_the_spool_which_is_gone_after_the_run(
    tmp_path: Path,
) -> None:
    config = load_config(project(tmp_path, 3, WITH_EVENTS), env={"LOOPS_API_KEY": KEY})
    spool = config.state.spool_dir
    seen_while_sending: list[bool] = []
    loops = ScriptedLoops()

    def handler(request: httpx.Request) -> httpx.Response:
        seen_while_sending.append(any(spool.glob("plan-*.parquet")))
        return loops(request)

    settings = Options(transport=httpx.MockTransport(handler), retry=RetryPolicy.immediate())
    report = run_sync(config, settings)
    assert report.events_sent == 3
    assert seen_while_sending
    assert all(seen_while_sending)
    assert not spool.exists()
