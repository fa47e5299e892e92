"""Authentication (401) and the per-second rate limit (429 and its headers)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from sync.emulator.server import EmulatorHandle, running_emulator


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": "test-key"},  # no "Bearer "
        {"Authorization": "bearer test-key"},  # the scheme is matched exactly
        {"Authorization": "Bearer test-key2"},
    ],
)
def test_missing_or_wrong_key_is_401(emu: EmulatorHandle, make_client: Any, headers: Any) -> None:
    client = make_client(emu, headers=headers)
    response = client.get("/v1/api-key")
    assert response.status_code == 401
    assert response.json() == {"success": False, "message": "Invalid API key"}
    # A refused request changes nothing.
    assert client.put("/v1/contacts/update", json={"email": "a@example.com"}).status_code == 401
    assert emu.contacts() == []
    assert emu.counters()["401"] == 2


def test_right_key_answers_team_name(api: httpx.Client) -> None:
    response = api.get("/v1/api-key")
    assert response.status_code == 200
    assert response.json() == {"success": True, "teamName": "Loops emulator"}


def test_custom_api_key(make_client: Any) -> None:
    with running_emulator(api_key="sk-custom") as emu:
        assert emu.api_key == "sk-custom"
        assert make_client(emu).get("/v1/api-key").status_code == 200
        wrong = make_client(emu, headers={"Authorization": "Bearer test-key"})
        assert wrong.get("/v1/api-key").status_code == 401


def test_rate_limit_headers_on_every_answer(make_client: Any) -> None:
    with running_emulator(rate_limit=50) as emu:
        client = make_client(emu)
        answers = [
            client.get("/v1/api-key"),  # 200
            client.put("/v1/contacts/update", json={}),  # 400
            client.get("/v1/nowhere"),  # 404
            client.post("/v1/api-key"),  # 405
            make_client(emu, headers={}).get("/v1/api-key"),  # 401
        ]
        assert [answer.status_code for answer in answers] == [200, 400, 404, 405, 401]
        for answer in answers:
            assert answer.headers["x-ratelimit-limit"] == "50"
            assert 0 <= int(answer.headers["x-ratelimit-remaining"]) < 50
        # Accepted requests use the budget (the 401 only reports it).
        assert answers[0].headers["x-ratelimit-remaining"] == "49"
        assert answers[3].headers["x-ratelimit-remaining"] == "46"
        assert answers[4].headers["x-ratelimit-remaining"] == "46"


def test_past_the_limit_429_then_recovers(make_client: Any) -> None:
    """Real time: more than the limit within a second gets 429s; a second later all is well."""
    with running_emulator(rate_limit=5) as emu:
        client = make_client(emu)
        started = time.monotonic()
        statuses = [client.get("/v1/api-key").status_code for _ in range(9)]
        assert time.monotonic() - started < 1.0, "the burst must fit in one second"
        assert statuses == [200] * 5 + [429] * 4
        refused = client.get("/v1/api-key")
        assert refused.status_code == 429
        assert refused.json()["success"] is False
        assert isinstance(refused.json()["message"], str)
        assert refused.headers["x-ratelimit-remaining"] == "0"
        time.sleep(1.05)
        assert client.get("/v1/api-key").status_code == 200
        assert emu.counters()["429"] == 5


def test_sliding_window_is_strict(make_client: Any, fake_clock: Any) -> None:
    """Never more than the limit in any one-second window, not just per calendar second."""
    with running_emulator(rate_limit=3, clock=fake_clock) as emu:
        client = make_client(emu)

        def status() -> int:
            code: int = client.get("/v1/api-key").status_code
            return code

        assert status() == 200  # t = 0.0
        fake_clock.advance(0.9)
        assert [status(), status()] == [200, 200]  # t = 0.9
        assert status() == 429
        fake_clock.advance(0.15)  # t = 1.05: only the request at 0.0 has left the window
        assert [status(), status()] == [200, 429]
        fake_clock.advance(0.86)  # t = 1.91: the two at 0.9 have left, the one at 1.05 not
        assert [status(), status(), status()] == [200, 200, 429]


def test_refused_requests_do_not_use_the_budget(make_client: Any, fake_clock: Any) -> None:
    with running_emulator(rate_limit=2, clock=fake_clock) as emu:
        client = make_client(emu)
        assert [client.get("/v1/lists").status_code for _ in range(2)] == [200, 200]
        for _ in range(3):  # a client hammering while refused...
            fake_clock.advance(0.3)
            assert client.get("/v1/lists").status_code == 429
        fake_clock.advance(0.11)  # t = 1.01: ...is let in as soon as the first second is over
        assert client.get("/v1/lists").status_code == 200


def test_rate_limit_changes_at_run_time(emu: EmulatorHandle, api: httpx.Client) -> None:
    emu.set_faults(rate_limit=2)
    assert [api.get("/v1/lists").status_code for _ in range(3)] == [200, 200, 429]
    emu.reset()  # back to the starting (high) limit
    assert api.get("/v1/lists").status_code == 200


def test_zero_means_unlimited(make_client: Any) -> None:
    with running_emulator(rate_limit=0) as emu:
        client = make_client(emu)
        answers = [client.get("/v1/api-key") for _ in range(40)]
        assert {answer.status_code for answer in answers} == {200}
        # No limit to report, so no rate-limit headers.
        assert "x-ratelimit-limit" not in answers[0].headers
