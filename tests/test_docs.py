"""The README stays true: its exit-code table matches the code, and every command is shown."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from sync.cli import main
from sync.errors import ExitCode

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def test_the_exit_code_table_lists_exactly_the_codes_the_cli_uses() -> None:
    section = README.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", section, flags=re.MULTILINE)}
    assert documented == {int(code) for code in ExitCode}


def test_the_top_level_help_lists_every_exit_code_with_its_meaning() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = dict(re.findall(r"^ +(\d+) +(.+)$", result.output.split("Exit codes:")[1], re.M))
    assert {int(code) for code in listed} >= {int(code) for code in ExitCode}
    for code in ExitCode:
        assert listed[str(code.value)] == code.meaning


def test_the_readme_says_what_limit_and_max_duration_leave_behind() -> None:
    """Both leave work for the next run and exit 5, not 0 ("every row delivered")."""
    options = README.split("### Options of", 1)[1].split("\n#", 1)[0]
    limit_row = next(line for line in options.splitlines() if line.startswith("| `--limit"))
    assert "exit 5" in limit_row
    codes = README.split("### Exit codes", 1)[1].split("\n#", 1)[0]
    work_left = next(line for line in codes.splitlines() if line.startswith("| 5 |"))
    assert "--limit" in work_left
    assert "--max-duration" in work_left


def test_every_command_is_in_the_readme_and_has_help() -> None:
    runner = CliRunner()
    for name in main.commands:
        assert f"loops-sync {name}" in README
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0
        assert "Usage:" in result.output


def test_the_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```sh", 1)[1].split("```", 1)[0]
    assert "make demo" in first_block
    assert "make test" in first_block


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert re.search(r"loops-sync, version \d+\.\d+\.\d+", result.output)


def test_make_demo_runs_a_real_sync_and_a_second_run_sends_nothing() -> None:
    """The README's first command: it must work on a fresh clone."""
    demo = Path(__file__).resolve().parents[1] / "scripts" / "demo.py"
    result = subprocess.run(
        [sys.executable, str(demo)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "sent 0 contacts or events: nothing had changed" in result.stdout
