"""Fixtures for the emulator tests: one shared server (reset before each test) and helpers.

Starting uvicorn costs ~0.1 s, so tests needing no special options share a session-wide
emulator with a rate limit high enough never to get in the way; tests about options (rate
limits, clocks, databases, lists) start their own with `running_emulator`.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from sync.emulator.server import EmulatorHandle, running_emulator

HIGH_RATE_LIMIT = 100_000
# httpx builds a fresh SSL context (~40 ms) for each client unless given one; the emulator
# speaks plain HTTP, but sharing one keeps the many short-lived test clients cheap.
_SSL_CONTEXT = ssl.create_default_context()


class FakeClock:
    """A clock that only moves when told to (seconds since the epoch)."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="session")
def shared_emu() -> Iterator[EmulatorHandle]:
    with running_emulator(rate_limit=HIGH_RATE_LIMIT) as handle:
        yield handle


@pytest.fixture(scope="session")
def shared_api(shared_emu: EmulatorHandle) -> Iterator[httpx.Client]:
    """A client on the shared emulator, for tests that can't use function-scoped fixtures."""
    with httpx.Client(
        base_url=shared_emu.base_url, headers=shared_emu.auth_headers, verify=_SSL_CONTEXT
    ) as client:
        yield client


@pytest.fixture
def emu(shared_emu: EmulatorHandle) -> EmulatorHandle:
    """The shared emulator, emptied and with its starting faults."""
    shared_emu.reset()
    return shared_emu


ClientFactory = Callable[..., httpx.Client]


@pytest.fixture
def make_client() -> Iterator[ClientFactory]:
    """`make_client(handle, **httpx_options)`: an authenticated client, closed after the test."""
    clients: list[httpx.Client] = []

    def make(handle: EmulatorHandle, **kwargs: Any) -> httpx.Client:
        options: dict[str, Any] = {
            "base_url": handle.base_url,
            "headers": handle.auth_headers,
            "timeout": 5.0,
            "verify": _SSL_CONTEXT,
            **kwargs,
        }
        client = httpx.Client(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def api(emu: EmulatorHandle, make_client: ClientFactory) -> httpx.Client:
    """A client on the shared emulator's API."""
    return make_client(emu)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def inspect(emu: EmulatorHandle, make_client: ClientFactory) -> httpx.Client:
    """An unauthenticated client on the shared emulator's root, for raw `/_emulator/` calls."""
    return make_client(emu, base_url=emu.root_url, headers={})
