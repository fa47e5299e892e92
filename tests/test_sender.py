"""The sender against a recording MockTransport: retries, rejects, fatal errors, ordering, the
fold fallback, stops, an unreachable Loops, and the config's settings reaching the pool."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from sync.config import load_config
from sync.errors import FatalApiError
from sync.loops_api import LoopsClient
from sync.model import Job, Request, RequestResult
from sync.pacing import Pacer
from sync.pipeline import Options, run_sync
from sync.plan import carry
from sync.sender import RetryPolicy, SendCounters, StopSwitch, send_jobs
from tests.fakes import ScriptedLoops

UPSERT = "/api/v1/contacts/update"
EVENT = "/api/v1/events/send"


def job(n: int, *, events: int = 1) -> Job:
    identity = f"e:p{n}@example.com"
    body = orjson.dumps({"email": f"p{n}@example.com"})
    contact = Request("contact", n, identity, f"c1:{n}", body)
    sends = tuple(
        Request(
            "event",
            n,
            identity,
            f"ls2-{n}-{i}",
            orjson.dumps({"eventName": f"e{i}", "email": f"p{n}@example.com"}),
            f"e{i}",
        )
        for i in range(events)
    )
    return Job(identity, (contact, *sends))


def folded(n: int, *, events: int = 1) -> Job:
    """A job whose upsert rides on its first event (one request), as the plan makes it."""
    contact, *sends = job(n, events=events).requests
    return Job(contact.identity, carry(contact, sends))


def send(
    jobs: list[Job],
    loops: Callable[[httpx.Request], Any],
    *,
    attempts: int = 3,
    stop_after: int | None = None,
    policy: RetryPolicy | None = None,
    rate: float = 10_000,
    concurrency: int = 4,
    stop: StopSwitch | None = None,
    unreachable_after: float = 30.0,
) -> tuple[list[RequestResult], SendCounters]:
    """Send `jobs` through a MockTransport; `stop_after` throws the stop switch after N results.

    Bounded: a send that ignores a stop (and would sleep out a long back-off) fails the test.
    """
    results: list[RequestResult] = []
    switch = stop or StopSwitch()
    transport = httpx.MockTransport(loops)  # a sync or an async handler

    def record(result: RequestResult) -> None:
        results.append(result)
        if stop_after is not None and len(results) >= stop_after:
            switch.throw("signal")

    async def main() -> SendCounters:
        client = LoopsClient("http://loops.test/api", "secret-key", transport=transport)
        try:
            with anyio.fail_after(10):
                return await send_jobs(
                    jobs,
                    client=client,
                    pacer=Pacer(rate),
                    policy=policy or RetryPolicy.immediate(attempts),
                    concurrency=concurrency,
                    on_result=record,
                    stop=switch,
                    unreachable_after=unreachable_after,
                )
        finally:
            await client.aclose()

    counters = anyio.run(main, backend="asyncio")
    return results, counters


def statuses(results: list[RequestResult]) -> dict[str, str]:
    return {r.request.ref: r.status for r in results}


def test_everything_delivered_with_key_and_auth_headers() -> None:
    loops = ScriptedLoops()
    results, counters = send([job(1), job(2)], loops)
    assert set(statuses(results).values()) == {"delivered"}
    assert counters.requests == 4
    for request in loops.requests:
        assert request.headers["authorization"] == "Bearer secret-key"
        if request.url.path == EVENT:
            assert request.headers["idempotency-key"].startswith("ls2-")
        else:
            assert "idempotency-key" not in request.headers


def test_the_upsert_goes_before_the_events_of_its_contact() -> None:
    loops = ScriptedLoops()
    send([job(n, events=2) for n in range(20)], loops)
    seen: dict[str, list[str]] = {}
    for request in loops.requests:
        email = orjson.loads(request.content)["email"]
        seen.setdefault(email, []).append(request.url.path)
    assert all(paths[0] == UPSERT for paths in seen.values())


def test_429_and_500_are_retried_then_delivered() -> None:
    loops = ScriptedLoops({UPSERT: [429, 500]})
    results, counters = send([job(1)], loops)
    assert statuses(results)["c1:1"] == "delivered"
    assert counters.retries == 2
    assert counters.rate_limited == 1
    assert counters.requests == 4  # three tries of the upsert, one event


def test_dropped_connection_and_timeout_are_retried_with_the_same_key() -> None:
    drop = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    loops = ScriptedLoops({EVENT: [drop, httpx.ReadTimeout("slow")]})
    results, _ = send([job(1)], loops)
    assert statuses(results)["ls2-1-0"] == "delivered"
    keys = [r.headers["idempotency-key"] for r in loops.requests if r.url.path == EVENT]
    assert keys == ["ls2-1-0"] * 3


def test_retries_are_capped_and_the_failure_reported() -> None:
    loops = ScriptedLoops({UPSERT: [500] * 10})
    results, counters = send([job(1)], loops, attempts=3)
    assert statuses(results) == {"c1:1": "failed", "ls2-1-0": "deferred"}
    assert counters.requests == 3
    assert all(r.url.path == UPSERT for r in loops.requests)  # the event waits for the next run


def test_400_rejects_the_row_with_loops_message_and_is_not_retried() -> None:
    refusal = httpx.Response(400, json={"success": False, "message": "Invalid email"})
    loops = ScriptedLoops({UPSERT: [refusal]})
    results, counters = send([job(1), job(2)], loops)
    rejected = [r for r in results if r.status == "rejected"]
    assert len(rejected) == 1
    assert "Invalid email" in rejected[0].message
    assert counters.retries == 0
    assert statuses(results)["c1:2"] == "delivered"


def test_409_on_an_event_means_already_delivered() -> None:
    loops = ScriptedLoops({EVENT: [409]})
    results, _ = send([job(1)], loops)
    assert statuses(results)["ls2-1-0"] == "duplicate"


def test_a_409_on_a_carrier_is_recorded_before_its_plain_upsert_is_sent() -> None:
    """A stop (or a fatal answer) during the plain upsert must not lose the 409: the event is
    delivered, and past Loops' 24 hours only the ledger says so."""
    loops = ScriptedLoops({EVENT: [409], UPSERT: [401]})
    results: list[RequestResult] = []

    async def main() -> None:
        client = LoopsClient("http://loops.test/api", "k", transport=loops.transport)
        try:
            await send_jobs(
                [folded(1)],
                client=client,
                pacer=Pacer(10_000),
                policy=RetryPolicy.immediate(),
                concurrency=1,
                on_result=results.append,
            )
        finally:
            await client.aclose()

    with pytest.raises(FatalApiError):
        anyio.run(main, backend="asyncio")
    assert loops.paths() == ["/v1/events/send", "/v1/contacts/update"]
    assert statuses(results) == {"ls2-1-0": "duplicate"}


def test_401_stops_the_whole_run_at_once() -> None:
    loops = ScriptedLoops({UPSERT: [401]}, default=200)
    with pytest.raises(FatalApiError, match="API key") as caught:
        send([job(n) for n in range(50)], loops)
    assert "secret-key" not in str(caught.value)
    assert len(loops.requests) < 50


def test_a_stop_request_leaves_the_rest_for_the_next_run() -> None:
    loops = ScriptedLoops()
    results, _ = send([job(n) for n in range(30)], loops, stop_after=6)
    sent = [r for r in results if r.status == "delivered"]
    left = [r for r in results if r.status == "not_sent"]
    assert len(sent) + len(left) == 60
    assert left
    assert len(loops.requests) == len(sent)


# --- an upsert riding on its event: the contact lands even when the event is refused -------


def test_a_refused_carrier_still_lands_the_contact_and_rejects_only_the_event() -> None:
    refusal = httpx.Response(400, json={"success": False, "message": "Bad event property"})
    loops = ScriptedLoops({EVENT: [refusal]})
    results, _ = send([folded(1)], loops)
    assert [(r.request.kind, r.status) for r in results] == [
        ("contact", "delivered"),
        ("event", "rejected"),
    ]
    assert "Bad event property" in results[1].message
    assert results[1].request.ref == "ls2-1-0"  # the event's own key: it goes to the rejects
    assert loops.paths() == ["/v1/events/send", "/v1/contacts/update"]
    assert loops.bodies("/contacts/update") == [{"email": "p1@example.com"}]  # the plain upsert


def test_when_the_plain_upsert_is_refused_too_the_contact_is_rejected_and_its_events_wait() -> None:
    loops = ScriptedLoops({EVENT: [400], UPSERT: [400]})
    results, _ = send([folded(1, events=2)], loops)
    assert statuses(results) == {"c1:1": "rejected", "ls2-1-0": "deferred", "ls2-1-1": "deferred"}
    assert loops.paths() == ["/v1/events/send", "/v1/contacts/update"]  # the 2nd event waits


# --- stopping: no new attempt once the switch is thrown ------------------------------------

SLOW_BACK_OFF = RetryPolicy(attempts=5, initial_wait=60, max_wait=60, jitter=0)


def test_a_stop_wakes_a_worker_sleeping_in_a_retry_back_off() -> None:
    switch = StopSwitch()

    def loops(request: httpx.Request) -> httpx.Response:
        switch.throw("signal")  # arrives while this request is in flight; it may finish
        return httpx.Response(500, json={"success": False, "message": "busy"})

    results, counters = send([job(1)], loops, policy=SLOW_BACK_OFF, stop=switch)
    assert counters.requests == 1  # no retry after the stop, and no 60 s wait for it
    assert statuses(results) == {"c1:1": "not_sent", "ls2-1-0": "not_sent"}  # never "failed"


def test_a_stop_wakes_a_worker_waiting_for_its_pacing_slot() -> None:
    switch = StopSwitch()
    seen: list[httpx.Request] = []

    def loops(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        switch.throw("signal")
        return httpx.Response(200, json={"success": True})

    # One request a minute: the second worker's slot is a minute away.
    results, _ = send([job(1, events=0), job(2, events=0)], loops, rate=1 / 60, stop=switch)
    assert len(seen) == 1
    assert statuses(results) == {"c1:1": "delivered", "c1:2": "not_sent"}


def test_the_deadline_fires_on_time_not_when_a_worker_next_looks() -> None:
    switch = StopSwitch(deadline=time.monotonic() + 0.2)
    jobs = [job(n, events=0) for n in range(3)]
    results, counters = send(jobs, ScriptedLoops(), rate=1 / 60, stop=switch)
    assert counters.requests == 1  # the first slot is at once; the others a minute apart
    assert switch.reason == "time budget"
    assert sorted(r.status for r in results) == ["delivered", "not_sent", "not_sent"]


def test_stopping_now_abandons_requests_in_flight_and_returns_the_counts() -> None:
    switch = StopSwitch()

    async def loops(request: httpx.Request) -> httpx.Response:
        switch.throw("signal", now=True)  # a second Ctrl-C while this request hangs
        await anyio.sleep(60)
        return httpx.Response(200, json={"success": True})

    results, counters = send([job(n) for n in range(3)], loops, stop=switch)
    assert counters.requests >= 1
    assert not [r for r in results if r.status in ("delivered", "failed")]


# --- Loops unreachable mid-run: the run stops, bounded -------------------------------------


def test_loops_unreachable_across_the_pool_stops_the_run_as_fatal() -> None:
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    loops = ScriptedLoops({UPSERT: [refused] * 1000})
    with pytest.raises(
        FatalApiError, match=r"cannot be reached at http://loops\.test/api"
    ) as caught:
        send([job(n) for n in range(100)], loops, attempts=5, unreachable_after=0)
    assert "cannot connect" in str(caught.value)
    assert "secret-key" not in str(caught.value)
    assert len(loops.requests) < 10  # three in a row without an answer, a few in flight


def test_any_answer_resets_the_count_of_requests_without_an_answer() -> None:
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    loops = ScriptedLoops({UPSERT: [refused, refused, 200] * 10})
    results, _ = send(
        [job(n, events=0) for n in range(10)], loops, concurrency=1, unreachable_after=0
    )
    assert set(statuses(results).values()) == {"delivered"}


def test_transport_failures_within_the_grace_time_are_retried_not_fatal() -> None:
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    loops = ScriptedLoops({UPSERT: [refused] * 6})
    results, _ = send([job(n, events=0) for n in range(3)], loops, attempts=3, concurrency=1)
    assert [r.status for r in results] == ["failed", "failed", "delivered"]  # 3 tries each
    assert statuses(results)["c1:2"] == "delivered"


# --- the config reaches the sender ---------------------------------------------------------


def sync_project(tmp_path: Path, rows: int, loops_settings: str) -> Path:
    (tmp_path / "people.csv").write_text(
        "email\n" + "".join(f"p{i}@example.com\n" for i in range(rows))
    )
    config = tmp_path / "sync.yaml"
    config.write_text(
        f"name: t\nsource: {{csv: people.csv}}\nloops: {{rate_limit: 1000, {loops_settings}}}\n"
        "contact: {email: email}\n"
    )
    return config


def run(config: Path, transport: httpx.AsyncBaseTransport) -> None:
    # About sending: no account check before it (those fakes answer every request alike).
    options = Options(transport=transport, retry=RetryPolicy.immediate(), check_account=False)
    run_sync(load_config(config, env={"LOOPS_API_KEY": "k"}), options)


def test_loops_max_attempts_is_how_often_a_request_is_tried(tmp_path: Path) -> None:
    loops = ScriptedLoops({UPSERT: [500] * 100})
    run(sync_project(tmp_path, 3, "max_attempts: 2"), loops.transport)
    assert loops.paths().count("/v1/contacts/update") == 3 * 2


def test_loops_timeout_is_the_clients_timeout(tmp_path: Path) -> None:
    loops = ScriptedLoops()
    run(sync_project(tmp_path, 2, "timeout: 7"), loops.transport)
    sends = [r for r in loops.requests if r.url.path == UPSERT]
    assert sends
    assert all(r.extensions["timeout"]["read"] == 7 for r in sends)


def test_loops_concurrency_caps_the_requests_in_flight(tmp_path: Path) -> None:
    in_flight, most = 0, 0

    async def slow_loops(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await anyio.sleep(0.02)
        in_flight -= 1
        return httpx.Response(200, json={"success": True})

    run(sync_project(tmp_path, 12, "concurrency: 3"), httpx.MockTransport(slow_loops))
    assert most == 3


def test_importing_the_sender_loads_neither_polars_nor_pydantic_nor_yaml() -> None:
    """The sender depends on the shared types, not on the planner or the config: a fresh
    interpreter shows what importing it really loads."""
    code = (
        "import sys, sync.sender; print(sorted({'polars', 'pydantic', 'yaml'} & set(sys.modules)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert loaded.strip() == "[]"
