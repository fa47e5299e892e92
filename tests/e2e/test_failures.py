"""Bad nights, end to end: a malformed or wrong key, Loops unreachable before or during a run,
stops that must take effect at once, the config's retry, timeout and fold settings obeyed.

Each failing run is also checked for the one thing it must never print: the API key.
"""

from __future__ import annotations

import csv
import json
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sync.emulator.server import running_emulator
from tests.e2e.conftest import Project

CONTACTS = """
    name: people
    source:
      csv: people.csv
    loops:
      rate_limit: {rate}
      max_attempts: {attempts}
      timeout: {timeout}
    contact:
      email: email
      properties:
        plan: plan
"""
SIGNUP = """
    events:
      - name: signup
        email: email
"""


def config(
    rate: float = 200, attempts: int = 6, timeout: float = 30, *, events: bool = False
) -> str:
    text = CONTACTS.format(rate=rate, attempts=attempts, timeout=timeout)
    return text + SIGNUP if events else text


def people(count: int) -> str:
    return "email,plan\n" + "".join(f"p{i}@example.com,free\n" for i in range(count))


def assert_key_hidden(result: subprocess.CompletedProcess[str], key: str) -> None:
    assert key not in result.stdout + result.stderr
    assert "Bearer" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there now: connections are refused


def upserts(project: Project) -> int:
    return len(project.api_requests("/contacts/update"))


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the run did not get that far"
        time.sleep(0.05)


def stop_and_wait(running: subprocess.Popen[str], sig: int) -> subprocess.CompletedProcess[str]:
    running.send_signal(sig)
    out, err = running.communicate(timeout=30)
    return subprocess.CompletedProcess(running.args, running.returncode, out, err)


# --- the API key ----------------------------------------------------------------------------


def test_a_key_saved_with_crlf_is_trimmed_and_works(project: Project) -> None:
    project.write(config(), people(3))
    result = project.sync(LOOPS_API_KEY=project.emulator.api_key + "\r\n")
    assert result.returncode == 0, result.stderr
    assert len(project.emulator.contacts()) == 3


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        pytest.param("sk-live\x01secret", "a control character", id="control-character"),
        pytest.param("sk-live-sécret", "a non-ASCII character", id="non-ascii"),
        pytest.param("sk-live secret", "a space", id="inner-space"),
    ],
)
def test_a_key_that_cannot_go_in_a_header_is_a_config_error_that_never_shows_it(
    project: Project, key: str, problem: str
) -> None:
    project.write(config(), people(3))
    result = project.sync(LOOPS_API_KEY=key)
    assert result.returncode == 2
    assert "LOOPS_API_KEY" in result.stderr
    assert problem in result.stderr
    assert_key_hidden(result, key)
    assert "secret" not in result.stderr
    assert project.emulator.counters()["requests"] == 0


def test_a_wrong_key_is_caught_also_when_there_is_nothing_to_send(project: Project) -> None:
    project.write(config(), people(3))
    assert project.sync().returncode == 0
    result = project.sync(LOOPS_API_KEY="sk-wrong-4242")  # every row is in Loops already
    assert result.returncode == 3
    assert "API key" in result.stderr
    assert_key_hidden(result, "sk-wrong-4242")
    assert project.key_checks() == 2


# --- Loops unreachable before sending: exit 3 within seconds, nothing sent -------------------


def unreachable_base_urls(project: Project) -> dict[str, tuple[str, str]]:
    """Base URLs that cannot work, with what the error must say."""
    port = project.emulator.base_url.split(":")[-1].removesuffix("/api")
    return {
        "refused": (f"http://127.0.0.1:{closed_port()}/api", "cannot be reached"),
        "tls": (f"https://127.0.0.1:{port}/api", "cannot be reached"),
        "wrong-path": (project.emulator.root_url + "/not-api", "does not look like the Loops API"),
    }


@pytest.mark.parametrize("case", ["refused", "tls", "wrong-path"])
def test_an_api_that_cannot_be_reached_ends_the_run_with_exit_3_and_sends_nothing(
    project: Project, case: str
) -> None:
    base_url, says = unreachable_base_urls(project)[case]
    project.write(config(), people(3))
    result = project.sync(LOOPS_BASE_URL=base_url)
    assert result.returncode == 3, result.stderr
    assert says in result.stderr
    assert_key_hidden(result, project.emulator.api_key)
    assert not project.api_requests()
    assert not project.emulator.contacts()


# --- Loops gone mid-run: stop after a bounded time, exit 3, keep what was delivered ----------


def test_loops_gone_mid_run_ends_with_exit_3_and_the_next_run_finishes_exactly_once(
    tmp_path: Path,
) -> None:
    count = 60
    loops_data = tmp_path / "loops.sqlite"  # the team's data outlives the emulator process
    settings: dict[str, Any] = {
        "rate_limit": 0,
        "api_key": "e2e-key",
        "request_log_size": 0,
        "db": loops_data,
    }
    with running_emulator(latency_ms=20, **settings) as first:
        project = Project(tmp_path, first)
        project.write(config(rate=20, timeout=1, events=True), people(count))
        running = project.start("run", str(project.config), "--quiet")
        wait_until(lambda: len(project.api_requests()) >= 10)
    # Loops is gone: every connection is refused from here on.
    out, err = running.communicate(timeout=60)
    assert running.returncode == 3, err
    assert "cannot be reached" in err
    assert_key_hidden(subprocess.CompletedProcess(running.args, 3, out, err), "e2e-key")

    with running_emulator(**settings) as second:
        again = Project(tmp_path, second)
        result = again.sync()
        assert result.returncode == 0, result.stderr
        assert {c["email"] for c in second.contacts()} == {
            f"p{i}@example.com" for i in range(count)
        }
        keys = Counter(e["idempotencyKey"] for e in second.events())
        assert len(keys) == count
        assert set(keys.values()) == {1}


# --- stopping: no new attempt after a stop ---------------------------------------------------


def test_a_second_ctrl_c_exits_130_without_a_traceback_and_the_next_run_completes(
    project: Project,
) -> None:
    count = 60
    project.write(config(rate=20, events=True), people(count))
    project.emulator.set_faults(latency_ms=500)  # requests in flight when the signals come
    running = project.start("run", str(project.config), "--quiet")
    wait_until(lambda: project.emulator.counters()["requests"] >= 6)
    running.send_signal(signal.SIGINT)
    time.sleep(0.2)  # the first one is handled: the run is draining its requests in flight
    stopped = stop_and_wait(running, signal.SIGINT)
    assert stopped.returncode == 130
    assert_key_hidden(stopped, project.emulator.api_key)

    project.emulator.set_faults(latency_ms=0)
    project.write(config(rate=200, events=True))
    assert project.sync().returncode == 0
    assert len(project.emulator.contacts()) == count
    keys = Counter(e["idempotencyKey"] for e in project.emulator.events())
    assert len(keys) == count
    assert set(keys.values()) == {1}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_wakes_a_worker_sleeping_in_a_retry_back_off(project: Project, sig: int) -> None:
    project.write(config(attempts=6), people(1))
    project.emulator.set_faults(fail_match="example.com")  # every upsert: 500
    running = project.start("run", str(project.config), "--quiet", "--report", "stopped.json")
    wait_until(lambda: upserts(project) >= 3)  # now sleeping 2-3 s before the fourth try
    tried = upserts(project)
    stopped = stop_and_wait(running, sig)
    assert stopped.returncode == 130, stopped.stderr
    assert upserts(project) == tried  # no attempt after the stop
    report = json.loads((project.root / "stopped.json").read_text())
    assert report["stopped"] == "signal"
    assert (report["not_sent"], report["failed"]) == (1, 0)  # left for the next run, not failed


def test_a_stop_wakes_a_worker_waiting_for_its_pacing_slot(project: Project) -> None:
    project.write(config(rate=0.2), people(3))  # one request every 5 s
    running = project.start("run", str(project.config), "--quiet", "--report", "stopped.json")
    wait_until(lambda: upserts(project) >= 1)  # the next slot is 5 s away
    stopped = stop_and_wait(running, signal.SIGTERM)
    assert stopped.returncode == 130, stopped.stderr
    assert upserts(project) == 1
    assert json.loads((project.root / "stopped.json").read_text())["not_sent"] == 2


def test_max_duration_fires_at_its_deadline_not_at_the_next_slot(project: Project) -> None:
    project.write(config(rate=0.2), people(3))  # one request every 5 s
    result = project.sync("--max-duration", "1s", "--report", "budget.json")
    assert result.returncode == 5, result.stderr
    assert upserts(project) == 1
    report = json.loads((project.root / "budget.json").read_text())
    assert (report["stopped"], report["not_sent"]) == ("time budget", 2)


# --- the config is obeyed --------------------------------------------------------------------


def test_loops_max_attempts_is_how_often_a_row_is_tried(project: Project) -> None:
    project.write(config(attempts=2), people(3))
    project.emulator.set_faults(fail_match="example.com")  # every upsert: 500, forever
    result = project.sync("--report", "report.json")
    assert result.returncode == 5  # work left for the next run
    assert Counter(r["body"]["email"] for r in project.api_requests()) == {
        f"p{i}@example.com": 2 for i in range(3)
    }
    assert json.loads((project.root / "report.json").read_text())["failed"] == 3


def test_loops_timeout_is_how_long_an_answer_is_awaited(project: Project) -> None:
    project.write(config(timeout=0.3), people(3))
    project.emulator.set_faults(latency_ms=1000)  # every answer comes after the timeout
    result = project.sync()
    assert result.returncode == 3
    assert "no answer in time (ReadTimeout)" in result.stderr
    assert_key_hidden(result, project.emulator.api_key)
    assert not project.api_requests()


# --- an upsert riding on its event: an event Loops refuses does not keep the contact out -----

LONG_NAME = "n" * 501  # Loops refuses a body key over 500 characters; the contact has none


def test_an_event_loops_refuses_does_not_keep_its_contact_out_of_loops(project: Project) -> None:
    event_property = f"        properties: {{{LONG_NAME}: plan}}\n"
    project.write(config(events=True) + event_property, people(3))
    first = project.sync()
    assert first.returncode == 1
    assert {c["email"]: c["plan"] for c in project.emulator.contacts()} == {
        f"p{i}@example.com": "free" for i in range(3)
    }
    assert not project.emulator.events()
    with (project.state / "people-rejects.csv").open(
        newline="", encoding="utf-8-sig"
    ) as rejects_file:
        rejects = list(csv.DictReader(rejects_file))
    assert sorted(r["row"] for r in rejects) == ["1", "2", "3"]
    assert all("longer than allowable" in r["reason"] for r in rejects)

    second = project.sync()  # the events are tried again, alone; the contacts are in Loops
    assert second.returncode == 1
    assert upserts(project) == 3
    assert len(project.api_requests("/events/send")) == 6


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_before_sending_still_writes_the_report_and_closes_history(
    project: Project, sig: int
) -> None:
    """Stopped during the key check (Loops accepts the connection and never answers): the run
    ends as Ctrl-C does, exit 130, never a silent death."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        base_url = f"http://127.0.0.1:{silent.getsockname()[1]}/api"
        project.write(config(events=True), people(3))
        running = project.start(
            "run", str(project.config), "--quiet", "--report", "last.json", LOOPS_BASE_URL=base_url
        )
        silent.settimeout(60)
        held, _ = silent.accept()  # reading and planning are done; the key check waits
        with held:
            result = stop_and_wait(running, sig)

    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((project.root / "last.json").read_text())
    assert report["exit_code"] == 130
    history = project.run("history", str(project.config))
    assert "interrupted" in history.stdout
