"""A new ledger is never silent: the plan, a dry run and a run say that everything will be sent."""

from __future__ import annotations

from pathlib import Path

from sync.config import load_config
from sync.ledger import Ledger
from sync.pipeline import Options, plan_sync, run_sync
from sync.sender import RetryPolicy
from tests.fakes import ScriptedLoops
from tests.ledger_backends import Place, place, places

__all__ = ["place", "places"]  # the fixtures: the ledger's queries run on both backends

KEY = "sk-live-0123456789abcdef"


def project(tmp_path: Path, rows: int, name: str = "t") -> Path:
    (tmp_path / "people.csv").write_text(
        "email\n" + "".join(f"p{i}@example.com\n" for i in range(rows))
    )
    config = tmp_path / "sync.yaml"
    config.write_text(
        f"name: {name}\nsource: {{csv: people.csv}}\nloops: {{rate_limit: 50}}\n"
        "contact: {email: email}\nevents:\n  - name: signup\n    email: email\n"
    )
    return config


def first_run_notices(warnings: list[str]) -> list[str]:
    return [warning for warning in warnings if warning.startswith("first run of sync")]


def test_a_ledger_tells_whether_it_holds_a_sync_and_names_the_syncs_it_holds(
    place: Place,
) -> None:
    empty = Ledger(place, "a")
    assert (empty.holds_sync(), empty.syncs()) == (False, [])
    empty.contact_delivered("e:x@example.com", "c1:h")
    empty.close()
    with_event = Ledger(place, "b")
    with_event.event_delivered("ls2-k", "e:x@example.com", "signup")
    with_event.close()
    Ledger(place, "c").start_run("hash")  # a run that recorded nothing yet

    for name in ("a", "b", "c"):
        assert Ledger(place, name).holds_sync(), name
    other = Ledger(place, "renamed")
    assert not other.holds_sync()
    assert other.syncs() == ["a", "b", "c"]


def test_the_plan_and_a_dry_run_on_a_new_ledger_say_everything_will_be_sent(
    tmp_path: Path,
) -> None:
    config = load_config(project(tmp_path, 3), env={})
    where = tmp_path / ".loops-sync" / "ledger.sqlite"
    said = (
        f"first run of sync `t` in this state ({where}): 3 contacts and 3 events will be sent. "
        "If Loops already has them"
    )

    planned = plan_sync(config).report.to_json()["warnings"]
    dry = run_sync(config, Options(dry_run=True)).to_json()["warnings"]

    assert planned[0].startswith(said)
    assert "--baseline" in planned[0]
    assert dry[0].startswith(said)


def test_a_run_on_a_new_ledger_says_so_before_sending_and_the_next_run_does_not(
    tmp_path: Path,
) -> None:
    config = load_config(project(tmp_path, 2), env={"LOOPS_API_KEY": KEY})
    loops = ScriptedLoops()
    told: list[tuple[str, int]] = []  # the notice, and the requests sent by then

    def options() -> Options:
        return Options(
            transport=loops.transport,
            retry=RetryPolicy.immediate(),
            on_first_run=lambda notice: told.append((notice, len(loops.requests))),
        )

    first = run_sync(config, options())
    assert first.exit_code == 0
    assert len(told) == 1
    notice, requests_before = told[0]
    assert requests_before == 0
    assert "2 contacts and 2 events will be sent" in notice
    assert first_run_notices(first.warnings) == [notice]

    (tmp_path / "people.csv").write_text("email\np0@example.com\np9@example.com\n")
    second = run_sync(config, options())
    assert second.events_sent == 1
    assert len(told) == 1
    assert first_run_notices(second.warnings) == []


def test_a_ledger_holding_other_syncs_names_them_a_renamed_sync_resends_its_events(
    tmp_path: Path,
) -> None:
    config = load_config(project(tmp_path, 2, name="people"), env={"LOOPS_API_KEY": KEY})
    run_sync(config, Options(transport=ScriptedLoops().transport))
    renamed = load_config(project(tmp_path, 2, name="leads"), env={})

    warnings = plan_sync(renamed).report.warnings

    [notice] = first_run_notices(warnings)
    assert "2 contacts and 2 events will be sent" in notice
    assert "holds other syncs (`people`) but none named `leads`" in notice
    assert "did the sync's name change? every event would be sent again" in notice
    assert first_run_notices(plan_sync(config).report.warnings) == []
