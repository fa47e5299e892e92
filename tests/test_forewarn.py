"""A plan warns before sending of what will fail or surprise: upserts by a user id alone of
contacts Loops lacks, and emails or user ids that several rows give different partners."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from sync import cli
from sync.config import Config, load_config
from sync.pipeline import Options, plan_sync, run_sync
from sync.sender import RetryPolicy
from tests.fakes import ScriptedLoops

KEY = "sk-live-0123456789abcdef"


def project(tmp_path: Path, csv: str) -> Config:
    (tmp_path / "people.csv").write_text(csv)
    config = tmp_path / "sync.yaml"
    config.write_text(
        "name: t\nsource: {csv: people.csv}\nloops: {rate_limit: 50}\n"
        "contact: {email: email, user_id: uid}\n"
    )
    return load_config(config, env={"LOOPS_API_KEY": KEY})


def warned(config: Config, about: str) -> list[str]:
    return [w for w in plan_sync(config).report.warnings if about in w]


def test_a_user_id_without_email_that_loops_lacks_is_warned_of_with_rows(tmp_path: Path) -> None:
    config = project(tmp_path, "uid,email\n7,\n8,b@example.com\n9,\n10,\n11,\n")
    [warning] = warned(config, "no email")
    assert warning.startswith("4 contacts have a user id but no email")
    assert "row 1, user id 7; row 3, user id 9; row 4, user id 10)" in warning
    assert "400" in warning


def test_a_contact_the_ledger_delivered_before_needs_no_email(tmp_path: Path) -> None:
    config = project(tmp_path, "uid,email\n7,a@example.com\n")
    options = Options(transport=ScriptedLoops().transport, retry=RetryPolicy.immediate())
    assert run_sync(config, options).contacts_sent == 1
    (tmp_path / "people.csv").write_text("uid,email\n7,\n9,\n")
    [warning] = warned(config, "no email")
    assert warning.startswith("1 contacts")
    assert "user id 9" in warning
    assert "user id 7" not in warning


def test_one_email_on_several_user_ids_is_counted_with_examples(tmp_path: Path) -> None:
    rows = ["a@example.com,1", "a@example.com,2", "c@example.com,3", "c@example.com,4"]
    rows += [f"x{i}@example.com,{10 + i}" for i in range(3)]
    config = project(tmp_path, "email,uid\n" + "\n".join(rows) + "\n")
    [warning] = warned(config, "emails are each on rows with different user ids")
    assert warning.startswith("2 emails")
    assert (
        "'a@example.com': user ids 1, 2 on rows 1, 2; 'c@example.com': user ids 3, 4 on rows 3, 4"
        in warning
    )
    assert "these 4 rows are rejected" in warning


def test_one_user_id_with_several_emails_is_counted_with_examples(tmp_path: Path) -> None:
    config = project(tmp_path, "email,uid\na@example.com,7\n,7\nb@example.com,8\n")
    [warning] = warned(config, "user ids each come with different emails")
    assert warning.startswith("1 user ids")
    assert "user id 7: a@example.com, no email on rows 1, 2" in warning


def test_plan_and_plan_json_show_the_warnings(tmp_path: Path) -> None:
    config = project(tmp_path, "uid,email\n7,\n")
    shown = CliRunner().invoke(cli.main, ["plan", str(config.file)])
    assert "warning: 1 contacts have a user id but no email" in shown.output
    as_json = CliRunner().invoke(cli.main, ["plan", "--json", str(config.file)])
    assert "1 contacts have a user id but no email" in as_json.output
