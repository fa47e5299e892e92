"""The sender against a recording MockTransport: retries, rejects, fatal errors, ordering."""

from __future__ import annotations

import anyio
import httpx
import orjson
import pytest

from sync.errors import FatalApiError
from sync.loops_api import LoopsClient
from sync.pacing import Pacer
from sync.plan import Job, Request
from sync.sender import RequestResult, RetryPolicy, SendCounters, send_jobs
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


def send(
    jobs: list[Job], loops: ScriptedLoops, *, attempts: int = 3, stop_after: int | None = None
) -> tuple[list[RequestResult], SendCounters]:
    results: list[RequestResult] = []

    async def main() -> SendCounters:
        client = LoopsClient("http://loops.test/api", "secret-key", transport=loops.transport)
        try:
            return await send_jobs(
                jobs,
                client=client,
                pacer=Pacer(10_000),
                policy=RetryPolicy.immediate(attempts),
                concurrency=4,
                on_result=results.append,
                should_stop=lambda: stop_after is not None and len(results) >= stop_after,
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
