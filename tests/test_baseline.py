"""`run --baseline`: the source recorded as delivered, nothing sent, the next runs incremental."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from sync import cli
from sync.config import Config, load_config
from sync.errors import LockedError
from sync.ledger import Ledger
from sync.lock import hold_lock
from sync.pipeline import Options, run_history, run_sync
from sync.report import Baseline
from tests.fakes import ScriptedLoops
from tests.ledger_backends import Place, place, places

__all__ = ["place", "places"]  # the fixtures: the ledger's part runs on both backends

KEY = "sk-live-0123456789abcdef"
EVENTS = "events:\n  - name: signup\n    email: email\n"


def project(tmp_path: Path, rows: list[tuple[str, str]], events: bool = True) -> Path:
    (tmp_path / "people.csv").write_text(
        "email,plan\n" + "".join(f"{email},{plan}\n" for email, plan in rows)
    )
    config = tmp_path / "sync.yaml"
    config.write_text(
        "name: t\nsource: {csv: people.csv}\nloops: {rate_limit: 50}\n"
        "contact: {email: email, properties: {firstName: plan}}\n" + (EVENTS if events else "")
    )
    return config


PEOPLE = [("ada@example.com", "pro"), ("grace@example.com", "free"), ("linus@example.com", "team")]


@pytest.mark.parametrize("events", [True, False], ids=["upserts-riding-on-events", "upserts"])
def test_a_baseline_sends_nothing_and_the_next_run_sends_only_what_changed_after_it(
    tmp_path: Path, events: bool
) -> None:
    loops = ScriptedLoops()
    path = project(tmp_path, PEOPLE, events)
    no_key = load_config(path, env={})

    report = run_sync(no_key, Options(baseline=True, transport=loops.transport))

    assert loops.requests == []
    assert report.exit_code == 0
    assert report.baseline == Baseline(contacts=3, events=3 if events else 0)
    assert report.to_json()["baseline"] == {"contacts": 3, "events": 3 if events else 0}
    assert not any(w.startswith("first run") for w in report.warnings)
    [record] = run_history(no_key)
    assert (record.status, record.exit_code) == ("finished", 0)
    assert record.reason == str(report.baseline)

    with_key = load_config(path, env={"LOOPS_API_KEY": KEY})
    unchanged = run_sync(with_key, Options(transport=loops.transport))
    assert (unchanged.requests_planned, unchanged.contacts_sent, unchanged.events_sent) == (0, 0, 0)
    assert not any(r.url.path.endswith(("/update", "/send")) for r in loops.requests)

    project(tmp_path, [PEOPLE[0], ("grace@example.com", "pro"), PEOPLE[2]], events)
    changed = run_sync(with_key, Options(transport=loops.transport))
    assert (changed.contacts_sent, changed.events_sent) == (1, 0)
    assert loops.bodies("/contacts/update") == [{"email": "grace@example.com", "firstName": "pro"}]


def test_a_baseline_writes_what_a_delivering_run_writes(tmp_path: Path) -> None:
    """The same ledger rows either way: the recorder's code writes both."""
    sent_dir, baseline_dir = tmp_path / "sent", tmp_path / "baseline"
    for folder in (sent_dir, baseline_dir):
        folder.mkdir()
    sent = load_config(project(sent_dir, PEOPLE), env={"LOOPS_API_KEY": KEY})
    adopted = load_config(project(baseline_dir, PEOPLE), env={})
    run_sync(sent, Options(transport=ScriptedLoops().transport))
    run_sync(adopted, Options(baseline=True))

    def rows(config: Config) -> tuple[object, ...]:
        ledger = Ledger(config.state.ledger, "t")
        try:
            return (
                ledger.delivered_contacts().sort("identity").rows(),
                ledger.delivered_events().sort("key").rows(),
                ledger.failures().rows(),
            )
        finally:
            ledger.close()

    assert rows(adopted) == rows(sent)


def test_a_baseline_waits_for_no_run_it_takes_the_lock(tmp_path: Path) -> None:
    config = load_config(project(tmp_path, PEOPLE), env={})
    with hold_lock(config.state), pytest.raises(LockedError) as caught:
        run_sync(config, Options(baseline=True))
    assert caught.value.exit_code == 4


def test_the_cli_reports_the_baseline_and_refuses_options_about_sending(tmp_path: Path) -> None:
    config = project(tmp_path, PEOPLE)
    runner = CliRunner()
    env = {"LOOPS_API_KEY": "", "LOOPS_SYNC_STATE": ""}

    refused = runner.invoke(cli.main, ["run", str(config), "--baseline", "--limit", "2"], env=env)
    assert refused.exit_code == 2
    assert "--baseline sends nothing: it takes no --limit" in refused.output

    done = runner.invoke(cli.main, ["run", str(config), "--baseline"], env=env)
    assert done.exit_code == 0, done.output
    assert "baseline: recorded 3 contacts and 3 events as delivered; nothing sent" in done.stdout
    assert "first run" not in done.output
    history = runner.invoke(cli.main, ["history", str(config)], env=env)
    assert "baseline: recorded 3 contacts and 3 events" in history.stdout


def test_a_baseline_commits_events_in_batches_and_all_of_them_when_done(place: Place) -> None:
    """A run commits each delivered event at once; a baseline, which sends nothing, in batches:
    a round trip per event made a big baseline take hours against PostgreSQL."""
    ledger = Ledger(place, "t")
    with ledger.events_batched():
        ledger.event_delivered("ls2-a", "e:a@example.com", "signup")
        assert Ledger(place, "t").delivered_events().is_empty()  # not committed yet
    assert Ledger(place, "t").delivered_events().rows() == [("ls2-a",)]
    ledger.event_delivered("ls2-b", "e:b@example.com", "signup")  # at once again
    assert Ledger(place, "t").delivered_events().height == 2
