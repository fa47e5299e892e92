"""Running the emulator: in the foreground (`serve`) or in a background thread (`running_emulator`).

Both run uvicorn with a small extension of its h11 protocol, because an ASGI app has no standard
way to drop a connection: raising makes uvicorn answer 500, and returning without an answer
does too. The protocol below hands the app a callable (as an ASGI scope extension) that closes
the socket, so the client sees the server hang up without a word, as after a network failure.
The same protocol, on shutdown, closes connections whose answer is still pending (an injected
hang or latency) instead of waiting for them.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

import httpx
import uvicorn
from uvicorn.config import LOGGING_CONFIG, Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from sync.emulator.app import DROP_EXTENSION, EmulatorOptions, create_app

if TYPE_CHECKING:  # uvicorn's ASGI types live in a private module: typing only
    from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope

STARTUP_TIMEOUT_SECONDS = 10.0
# A backstop only: the protocol already closes connections still waiting on a fault.
GRACEFUL_SHUTDOWN_SECONDS = 3


class DroppableH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a way for the app to drop the connection unanswered.

    Relies on H11Protocol's `app`, `transport` and `cycle` attributes (checked on uvicorn 0.54);
    `test_dropped_connection` fails loudly should a uvicorn release change them.
    """

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        app = self.app

        async def app_with_drop(
            scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
        ) -> None:
            extensions = cast("dict[str, Any]", scope).setdefault("extensions", {})
            extensions[DROP_EXTENSION] = self._drop
            await app(scope, receive, send)

        self.app = app_with_drop

    def _drop(self) -> None:
        # A plain close (FIN, no bytes sent): clients report "server disconnected without
        # sending a response" (httpx.RemoteProtocolError).
        self.transport.close()

    def shutdown(self) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()
        else:
            super().shutdown()


class _Server(uvicorn.Server):
    """uvicorn.Server that reports the address it listens on once it does."""

    def __init__(self, config: Config, on_started: Callable[[str], None] | None = None) -> None:
        super().__init__(config)
        self._on_started = on_started
        self.base_url = ""
        self.ready = threading.Event()  # set once base_url is known

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if not self.started:
            return
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{host}:{port}/api"
        self.ready.set()
        if self._on_started is not None:
            self._on_started(self.base_url)


def _config(options: EmulatorOptions, host: str, port: int, *, quiet: bool) -> Config:
    return Config(
        create_app(options),
        host=host,
        port=port,
        http=DroppableH11Protocol,
        lifespan="on",
        # In-process: leave the host program's logging alone.
        log_config=None if quiet else LOGGING_CONFIG,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )


def serve(options: EmulatorOptions, host: str = "127.0.0.1", port: int = 8787) -> None:
    """Run the emulator in the foreground until Ctrl-C or SIGTERM, then return normally.

    Prints the base URL (`http://HOST:PORT/api`) on stdout once listening; never the key.
    """

    def announce(base_url: str) -> None:
        print(base_url, flush=True)
        print(
            "Loops API emulator ready (inspection under /_emulator/). Ctrl-C to stop.",
            file=sys.stderr,
            flush=True,
        )

    server = _Server(_config(options, host, port, quiet=False), on_started=announce)
    # uvicorn re-raises the signal that stopped it once it has shut down, which would end the
    # process with "killed by SIGTERM". A stop asked for is a normal end here: absorb it (and
    # one arriving before uvicorn listens for signals still stops the server).

    def absorb(_signum: int, _frame: FrameType | None) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, absorb) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class EmulatorHandle:
    """A running in-process emulator, with shortcuts to its inspection API."""

    base_url: str  # e.g. http://127.0.0.1:54321/api
    api_key: str = field(repr=False)  # never shown
    _client: httpx.Client = field(repr=False)

    @property
    def root_url(self) -> str:
        """The server's root (the inspection API lives at root_url + "/_emulator/...")."""
        return self.base_url.removesuffix("/api")

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def _get(self, what: str) -> Any:
        response = self._client.get(f"/_emulator/{what}")
        response.raise_for_status()
        return response.json()

    def _post(self, what: str, payload: Any = None) -> Any:
        response = self._client.post(f"/_emulator/{what}", json=payload)
        response.raise_for_status()
        return response.json()

    def contacts(self) -> list[dict[str, Any]]:
        """Every contact, as `contacts/find` would return it."""
        result: list[dict[str, Any]] = self._get("contacts")
        return result

    def events(self) -> list[dict[str, Any]]:
        """Every accepted event, oldest first."""
        result: list[dict[str, Any]] = self._get("events")
        return result

    def requests(self) -> list[dict[str, Any]]:
        """Every API request received (within the log size), oldest first."""
        result: list[dict[str, Any]] = self._get("requests")
        return result

    def counters(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("counters")
        return result

    def faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._get("faults")
        return result

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Change fault settings (latency_ms, fail_rate, ..., rate_limit); returns them all."""
        result: dict[str, Any] = self._post("faults", changes)
        return result

    def advance_clock(self, seconds: float) -> float:
        """Move the emulator's clock forward; returns its new time (epoch seconds)."""
        result: float = self._post("clock", {"advance_seconds": seconds})["now"]
        return result

    def reset(self) -> None:
        """Empty the state and restore the starting faults (as if freshly started)."""
        self._post("reset")

    def set_properties(self, properties: dict[str, str]) -> dict[str, str]:
        """Give the team these custom properties (name -> type), or change their types, as a
        person does in Loops; returns every custom property."""
        result: dict[str, str] = self._post("properties", properties)
        return result


@contextmanager
def running_emulator(
    *, host: str = "127.0.0.1", port: int = 0, **options: Any
) -> Iterator[EmulatorHandle]:
    """Run an emulator in a background thread for the duration of the `with` block.

    `options` are the fields of `EmulatorOptions` and of `Faults`, flat; port 0 picks a free
    port.
    """
    emulator_options = EmulatorOptions.from_settings(**options)
    server = _Server(_config(emulator_options, host, port, quiet=True))
    thread = threading.Thread(target=server.run, name="loops-emulator", daemon=True)
    thread.start()
    try:
        _wait_until_started(server, thread)
        with httpx.Client(base_url=server.base_url.removesuffix("/api"), timeout=10) as client:
            yield EmulatorHandle(server.base_url, emulator_options.api_key, client)
    finally:
        server.should_exit = True
        thread.join(timeout=GRACEFUL_SHUTDOWN_SECONDS + 5)
        if thread.is_alive():  # it would keep the port, and a --db file, in use
            raise RuntimeError("the Loops emulator did not stop in time")


def _wait_until_started(server: _Server, thread: threading.Thread) -> None:
    for _ in range(int(STARTUP_TIMEOUT_SECONDS / 0.05)):
        if server.ready.wait(0.05):
            return
        if not thread.is_alive():
            raise RuntimeError("the Loops emulator failed to start (see the uvicorn log)")
    raise RuntimeError("the Loops emulator did not start in time")
