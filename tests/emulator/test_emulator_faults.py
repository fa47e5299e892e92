"""Injected faults (latency, 500s, dropped connections, hangs, fail_match), and inspection."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from sync.emulator.server import EmulatorHandle, running_emulator


def upsert(api: httpx.Client, **body: Any) -> httpx.Response:
    return api.put("/v1/contacts/update", json=body)


def test_latency_delays_answers_without_blocking(emu: EmulatorHandle, make_client: Any) -> None:
    emu.set_faults(latency_ms=200)
    client = make_client(emu)
    started = time.monotonic()
    assert client.get("/v1/api-key").status_code == 200
    assert time.monotonic() - started >= 0.2
    # Four at once take about one delay, not four: the server sleeps without blocking.
    clients = [make_client(emu) for _ in range(4)]
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda c: c.get("/v1/api-key").status_code, clients))
    elapsed = time.monotonic() - started
    assert statuses == [200] * 4
    assert 0.2 <= elapsed < 0.6
    # The inspection API is never delayed.
    started = time.monotonic()
    emu.counters()
    assert time.monotonic() - started < 0.2


def test_fail_rate_answers_500_without_applying(emu: EmulatorHandle, api: httpx.Client) -> None:
    emu.set_faults(fail_rate=1)
    response = upsert(api, email="ann@example.com")
    assert response.status_code == 500
    assert response.json()["success"] is False
    assert isinstance(response.json()["message"], str)
    event = api.post("/v1/events/send", json={"email": "ann@example.com", "eventName": "e"})
    assert event.status_code == 500
    assert emu.contacts() == []
    assert emu.events() == []
    assert emu.counters()["500"] == 2
    assert [entry["fault"] for entry in emu.requests()] == ["fail", "fail"]


def test_faults_are_repeatable_with_a_seed(emu: EmulatorHandle, api: httpx.Client) -> None:
    def run() -> list[int]:
        return [api.get("/v1/lists").status_code for _ in range(40)]

    emu.set_faults(fail_rate=0.5, seed=7)
    first = run()
    assert set(first) == {200, 500}
    emu.set_faults(seed=7)  # a new seed (even the same) restarts the sequence
    assert run() == first
    emu.set_faults(seed=8)
    assert run() != first


def test_starting_faults_and_reset(make_client: Any) -> None:
    with running_emulator(rate_limit=0, fail_rate=0.5, seed=3) as emu:
        client = make_client(emu)
        first = [client.get("/v1/lists").status_code for _ in range(30)]
        emu.set_faults(fail_rate=0)
        emu.reset()  # back to the starting faults and seed
        assert [client.get("/v1/lists").status_code for _ in range(30)] == first
    with running_emulator(rate_limit=0, fail_rate=0.5, seed=3) as emu:
        client = make_client(emu)
        assert [client.get("/v1/lists").status_code for _ in range(30)] == first


def test_dropped_connection(emu: EmulatorHandle, api: httpx.Client) -> None:
    emu.set_faults(drop_rate=1)
    with pytest.raises(httpx.RemoteProtocolError):
        upsert(api, email="ann@example.com")
    emu.set_faults(drop_rate=0)
    assert emu.contacts() == []
    counters = emu.counters()
    assert counters["dropped"] == 1
    assert counters["requests"] == 1
    [entry] = emu.requests()
    assert entry["status"] is None
    assert entry["fault"] == "drop"
    # The client can carry on.
    assert upsert(api, email="ann@example.com").status_code == 200


def test_hang_until_the_client_gives_up(emu: EmulatorHandle, make_client: Any) -> None:
    emu.set_faults(hang_rate=1, hang_seconds=0.5)
    client = make_client(emu, timeout=0.1)
    with pytest.raises(httpx.ReadTimeout):
        upsert(client, email="ann@example.com")
    assert emu.counters()["hung"] == 1
    time.sleep(0.6)  # past hang_seconds: the request the client gave up on is never applied
    assert emu.contacts() == []
    [entry] = emu.requests()
    assert (entry["fault"], entry["status"]) == ("hang", None)


def test_hang_then_answer_when_the_client_waits(emu: EmulatorHandle, api: httpx.Client) -> None:
    emu.set_faults(hang_rate=1, hang_seconds=0.2)
    started = time.monotonic()
    assert upsert(api, email="ann@example.com").status_code == 200
    assert time.monotonic() - started >= 0.2
    assert len(emu.contacts()) == 1
    counters = emu.counters()
    assert (counters["hung"], counters["200"], counters["requests"]) == (1, 1, 1)


def test_fail_match_fails_one_row(emu: EmulatorHandle, api: httpx.Client) -> None:
    emu.set_faults(fail_match="bad@example.com")
    assert upsert(api, email="good@example.com").status_code == 200
    assert upsert(api, email="bad@example.com").status_code == 500
    assert upsert(api, email="good2@example.com").status_code == 200
    assert api.get("/v1/contacts/find", params={"email": "bad@example.com"}).status_code == 500
    assert sorted(contact["email"] for contact in emu.contacts()) == [
        "good2@example.com",
        "good@example.com",
    ]
    assert [entry["fault"] for entry in emu.requests()] == [None, "fail_match", None, "fail_match"]


@pytest.mark.parametrize(
    "changes",
    [
        {"fail_rate": 1.5},
        {"drop_rate": -0.1},
        {"hang_rate": "half"},
        {"latency_ms": -1},
        {"rate_limit": 2.5},
        {"seed": "x"},
        {"fail_match": ""},
        {"no_such_knob": 1},
    ],
)
def test_bad_fault_settings_are_400(
    emu: EmulatorHandle, inspect: httpx.Client, changes: dict[str, Any]
) -> None:
    before = emu.faults()
    response = inspect.post("/_emulator/faults", json=changes)
    assert response.status_code == 400
    assert response.json()["success"] is False
    assert emu.faults() == before


def test_faults_endpoint_shape(emu: EmulatorHandle) -> None:
    faults = emu.set_faults(latency_ms=5, fail_match="x")
    assert faults == {
        "latency_ms": 5,
        "fail_rate": 0.0,
        "drop_rate": 0.0,
        "hang_rate": 0.0,
        "hang_seconds": 30.0,
        "fail_match": "x",
        "rate_limit": 100_000,
        "seed": 0,
    }
    assert emu.faults() == faults


# --- inspection -----------------------------------------------------------------------------


def test_inspection_is_not_counted_nor_authenticated(
    emu: EmulatorHandle, inspect: httpx.Client
) -> None:
    for what in ("contacts", "events", "requests", "counters", "faults"):
        assert inspect.get(f"/_emulator/{what}").status_code == 200
    counters = emu.counters()
    assert counters["requests"] == 0
    assert counters["paths"] == {}
    assert emu.requests() == []


def test_request_log_and_counters(emu: EmulatorHandle, api: httpx.Client) -> None:
    upsert(api, email="ann@example.com")
    api.post(
        "/v1/events/send",
        json={"email": "ann@example.com", "eventName": "e"},
        headers={"Idempotency-Key": "key-1"},
    )
    api.get("/v1/contacts/find", params={"email": "ann@example.com"})
    upsert(api, userId="")
    api.put("/v1/contacts/update", content=b"not json")
    log = emu.requests()
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("PUT", "/v1/contacts/update", 200),
        ("POST", "/v1/events/send", 200),
        ("GET", "/v1/contacts/find", 200),
        ("PUT", "/v1/contacts/update", 400),
        ("PUT", "/v1/contacts/update", 400),
    ]
    assert log[0]["body"] == {"email": "ann@example.com"}
    assert log[1]["idempotency_key"] == "key-1"
    assert log[2]["query"] == {"email": "ann@example.com"}
    assert log[4]["body"] is None
    assert set(log[0]) == {
        "method",
        "path",
        "query",
        "status",
        "fault",
        "idempotency_key",
        "body",
        "received_at",
    }
    counters = emu.counters()
    assert counters["requests"] == 5
    assert counters["200"] == 3
    assert counters["400"] == 2
    assert counters["paths"] == {
        "/v1/contacts/find": 1,
        "/v1/contacts/update": 3,
        "/v1/events/send": 1,
    }
    for name in ("401", "409", "429", "500", "dropped", "hung"):
        assert counters[name] == 0


def test_the_key_is_never_logged(emu: EmulatorHandle, make_client: Any) -> None:
    assert emu.api_key not in repr(emu)
    make_client(emu).get("/v1/api-key")
    make_client(emu, headers={"Authorization": "Bearer some-other-secret"}).get("/v1/api-key")
    log = json.dumps(emu.requests())
    assert emu.api_key not in log
    assert "some-other-secret" not in log
    assert "uthorization" not in log


def test_clock(emu: EmulatorHandle, api: httpx.Client, inspect: httpx.Client) -> None:
    upsert(api, email="ann@example.com")
    before = emu.requests()[0]["received_at"]
    now = emu.advance_clock(3600)
    assert now >= before + 3600
    upsert(api, email="ann@example.com")
    assert emu.requests()[1]["received_at"] >= before + 3600
    bad = inspect.post("/_emulator/clock", json={"advance_seconds": -5})
    assert bad.status_code == 400
    assert inspect.post("/_emulator/clock", json={}).status_code == 400


def test_reset_empties_everything(emu: EmulatorHandle, api: httpx.Client) -> None:
    upsert(api, email="ann@example.com")
    api.post("/v1/contacts/properties", json={"name": "plan", "type": "string"})
    api.post("/v1/events/send", json={"email": "a@example.com", "eventName": "e"})
    emu.set_faults(fail_rate=1)
    emu.reset()
    assert emu.contacts() == []
    assert emu.events() == []
    assert emu.requests() == []
    assert emu.counters()["requests"] == 0
    assert emu.faults()["fail_rate"] == 0
    assert api.get("/v1/contacts/properties", params={"list": "custom"}).json() == []
