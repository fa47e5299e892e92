"""run_sync() as a library call, against a recording MockTransport."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from sync import cli
from sync.config import load_config
from sync.pipeline import Options, run_sync
from sync.sender import RetryPolicy
from tests.fakes import ScriptedLoops


def project(tmp_path: Path, rows: int) -> Path:
    (tmp_path / "people.csv").write_text(
        "email\n" + "".join(f"p{i}@example.com\n" for i in range(rows))
    )
    config = tmp_path / "sync.yaml"
    config.write_text(
        "name: t\nsource: {csv: people.csv}\nloops: {rate_limit: 50}\ncontact: {email: email}\n"
    )
    return config


def test_a_lower_limit_from_loops_is_followed_and_reported(tmp_path: Path) -> None:
    lower = httpx.Response(
        200,
        json={"success": True},
        headers={"x-ratelimit-limit": "20", "x-ratelimit-remaining": "19"},
    )
    loops = ScriptedLoops({"/api/v1/contacts/update": [lower]})
    options = Options(
        env={"LOOPS_API_KEY": "k"},
        transport=loops.transport,
        retry=RetryPolicy.immediate(),
        quiet=True,
    )
    report = run_sync(load_config(project(tmp_path, 3), env={}), options)
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
