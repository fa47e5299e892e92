"""The emulator as a Starlette app: the Loops API under `/api/v1/`, inspection under `/_emulator/`.

Each API request goes through the same gate as at Loops, in this order: (optional injected
latency) -> API key (401) -> rate limit (429) -> injected faults (drop, hang, 500) -> the
endpoint itself (`sync.emulator.api`). Inspection requests skip all of it: they are for the
tests and demos watching the emulator, not part of what is being emulated.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import anyio
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from sync.emulator.account import DEFAULT_LISTS, MailingList, seed_problems
from sync.emulator.api import Answer, ApiRequest, LoopsApi, failure
from sync.emulator.faults import (
    Fault,
    FaultDice,
    Faults,
    FaultSettingsError,
    SlidingWindowLimiter,
)
from sync.emulator.state import DEFAULT_REQUEST_LOG_SIZE, EmulatorState, JsonObject

DEV_API_KEY = "test-key"
"""The documented development key, used when no key is configured."""

DROP_EXTENSION = "loops_emulator.drop_connection"
"""ASGI scope extension (set by `sync.emulator.server`) closing the connection unanswered."""


@dataclass
class EmulatorOptions:
    """How an emulator instance behaves; the fault knobs can change later at run time."""

    api_key: str = field(default=DEV_API_KEY, repr=False)  # never shown
    faults: Faults = field(default_factory=Faults)  # rate limit, latency, failures, seed
    db: Path | str | None = None  # SQLite file keeping the team's data across restarts
    clock: Callable[[], float] = time.time
    lists: Sequence[MailingList] = DEFAULT_LISTS
    # The team's custom properties at the start (name -> type), as after `--properties FILE`;
    # a reset comes back to them. With `db`, those the database lacks are added.
    properties: Mapping[str, str] = field(default_factory=dict)
    team_name: str = "Loops emulator"
    request_log_size: int = DEFAULT_REQUEST_LOG_SIZE  # 0 = keep every request

    @classmethod
    def from_settings(cls, **settings: Any) -> EmulatorOptions:
        """Options from flat keyword settings (`rate_limit=0, latency_ms=150, db=...`): the
        names of `Faults` fields go to `faults`, the rest to the options themselves."""
        names = {f.name for f in fields(Faults)}
        faults = Faults(**{k: v for k, v in settings.items() if k in names})
        return cls(faults=faults, **{k: v for k, v in settings.items() if k not in names})


def _json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(payload), status_code=status, headers=headers, media_type="application/json"
    )


def _parse_for_log(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


async def _drop_connection(scope: Scope, receive: Receive, send: Send) -> None:
    """Close the connection without an answer, as a network failure would."""
    drop = scope.get("extensions", {}).get(DROP_EXTENSION)
    if drop is not None:
        drop()
        # Wait until the server has noticed, so it doesn't answer a 500 in our place.
        while (await receive())["type"] != "http.disconnect":
            pass
        return
    # Under another ASGI server: promise a body and stop short, so the client still sees a
    # broken answer (uvicorn and most servers then close the connection).
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1000")]}
    )
    await send({"type": "http.response.body", "body": b"{", "more_body": True})


async def _client_gave_up(receive: Receive, seconds: float) -> bool:
    """Wait `seconds`, or less if the client disconnects first; True if it did.

    A hung request whose client gave up is never applied, like a dropped or failed one: what
    the client saw (no answer) is then what happened.
    """
    with anyio.move_on_after(seconds):
        while (await receive())["type"] != "http.disconnect":
            pass
        return True
    return False


class Emulator:
    """One emulated Loops team: its state, the API over it, and the faults in force."""

    def __init__(self, options: EmulatorOptions) -> None:
        db = Path(options.db) if options.db is not None else None
        problems = seed_problems(options.properties)
        if problems:
            raise ValueError("properties: " + "; ".join(problems))
        self.state = EmulatorState(
            clock=options.clock,
            db=db,
            request_log_size=options.request_log_size,
            properties=options.properties,
        )
        self.api = LoopsApi(self.state, lists=options.lists, team_name=options.team_name)
        self._initial_faults = options.faults
        self.faults = self._initial_faults
        self._dice = FaultDice(self.faults.seed)
        self._limiter = SlidingWindowLimiter()
        self._expected_auth = f"Bearer {options.api_key}".encode()

    def set_faults(self, changes: Mapping[str, Any]) -> Faults:
        """Change some fault settings; a new `seed` restarts the fault sequence."""
        self.faults = self.faults.with_changes(changes)
        if "seed" in changes:
            self._dice = FaultDice(self.faults.seed)
        return self.faults

    def reset(self) -> None:
        """Back to a fresh start with the same options: no data, initial faults and seed."""
        self.state.reset()
        self.faults = self._initial_faults
        self._dice = FaultDice(self.faults.seed)
        self._limiter.clear()

    def _authorized(self, header: str | None) -> bool:
        return header is not None and hmac.compare_digest(header.encode(), self._expected_auth)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI endpoint for everything under `/api/`."""
        request = Request(scope, receive)
        raw = await request.body()
        entry: JsonObject = {
            "method": request.method,
            "path": scope["path"].removeprefix("/api"),
            "query": dict(request.query_params),
            "status": None,
            "fault": None,
            # Logged for the tests; the Authorization header never is.
            "idempotency_key": request.headers.get("idempotency-key"),
            "body": _parse_for_log(raw),
            "received_at": self.state.now(),
        }
        outcome = await self._process(request, raw, entry, receive)
        if outcome is None:
            if entry["fault"] == "drop":
                await _drop_connection(scope, receive, send)
            return
        answer, headers = outcome
        # Recorded before sending, so a client inspecting right after its answer sees it.
        if entry["fault"] == "hang":
            self.state.record_status(entry, answer.status)
        else:
            entry["status"] = answer.status
            self.state.record_request(entry)
        await _json_response(answer.payload, answer.status, headers)(scope, receive, send)

    async def _process(
        self, request: Request, raw: bytes, entry: JsonObject, receive: Receive
    ) -> tuple[Answer, dict[str, str]] | None:
        """The answer to give and its headers, or None when there is to be no answer."""
        faults = self.faults
        if faults.latency_ms > 0:
            await anyio.sleep(faults.latency_ms / 1000)

        # rate_limit 0 means unlimited; then there is no limit to report and no rate headers.
        limit = faults.rate_limit
        headers: dict[str, str] = {}
        if not self._authorized(request.headers.get("authorization")):
            # The limit is per team and an unknown key names no team: a 401 only reports the
            # budget, it doesn't use it.
            if limit:
                headers = _rate_headers(limit, self._limiter.remaining(limit, self.state.now()))
            return failure(401, "Invalid API key"), headers
        if limit:
            accepted, remaining = self._limiter.try_acquire(limit, self.state.now())
            headers = _rate_headers(limit, remaining)
            if not accepted:
                return failure(429, "Rate limit exceeded."), headers

        fault: Fault | None = self._dice.roll(faults)
        if faults.fail_match and _mentions(raw, request.scope["query_string"], faults.fail_match):
            fault = "fail_match"
        entry["fault"] = fault
        if fault == "drop":
            self.state.record_request(entry)
            return None
        if fault == "hang":
            # Counted as hung right away (a client timing out can look at once); the status
            # follows if the client waits long enough to get an answer.
            self.state.record_request(entry)
            if await _client_gave_up(receive, faults.hang_seconds):
                return None
        if fault in ("fail", "fail_match"):
            return failure(500, "Internal server error (injected by the emulator)."), headers
        api_request = ApiRequest(
            method=request.method,
            path=entry["path"],
            query=_multi_query(request),
            body=raw,
            idempotency_key=entry["idempotency_key"],
        )
        return self.api.answer(api_request), headers


def _rate_headers(limit: int, remaining: int) -> dict[str, str]:
    return {"x-ratelimit-limit": str(limit), "x-ratelimit-remaining": str(remaining)}


def _multi_query(request: Request) -> dict[str, list[str]]:
    query: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        query.setdefault(key, []).append(value)
    return query


def _mentions(raw: bytes, query_string: bytes, needle: str) -> bool:
    """`fail_match`: the substring in the raw body, or in the (decoded) query string."""
    return needle in raw.decode("utf-8", "replace") or needle in unquote_plus(
        query_string.decode("latin-1")
    )


def _inspection_routes(emulator: Emulator) -> list[Route]:
    """`/_emulator/...`: look inside and steer the emulator (no auth, not counted)."""

    async def contacts(_request: Request) -> Response:
        return _json_response(emulator.state.contacts())

    async def events(_request: Request) -> Response:
        return _json_response(emulator.state.events())

    async def requests(_request: Request) -> Response:
        return _json_response(emulator.state.requests())

    async def counters(_request: Request) -> Response:
        return _json_response(emulator.state.counters())

    async def get_faults(_request: Request) -> Response:
        return _json_response(emulator.faults.as_json())

    async def set_faults(request: Request) -> Response:
        changes = _parse_for_log(await request.body())
        if not isinstance(changes, dict):
            return _json_response(failure(400, "Send a JSON object of settings.").payload, 400)
        try:
            faults = emulator.set_faults(changes)
        except (FaultSettingsError, TypeError) as error:
            return _json_response(failure(400, str(error)).payload, 400)
        return _json_response(faults.as_json())

    async def clock(request: Request) -> Response:
        body = _parse_for_log(await request.body())
        seconds = body.get("advance_seconds") if isinstance(body, dict) else None
        if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
            message = 'Send {"advance_seconds": N} with N >= 0.'
            return _json_response(failure(400, message).payload, 400)
        return _json_response({"now": emulator.state.advance_clock(seconds)})

    async def reset(_request: Request) -> Response:
        emulator.reset()
        return _json_response({"success": True})

    async def set_properties(request: Request) -> Response:
        """Give the team custom properties (`{"name": "type"}`), or change a type, as a person
        does in Loops' settings: for tests and demos that start from an account set up."""
        body = _parse_for_log(await request.body())
        if not isinstance(body, dict):
            message = 'Send a JSON object of property names and types, {"planName": "string"}.'
            return _json_response(failure(400, message).payload, 400)
        problems = seed_problems(body)
        if problems:
            return _json_response(failure(400, "; ".join(problems)).payload, 400)
        for name, kind in body.items():
            emulator.state.add_custom_property(name, kind)
        return _json_response(emulator.state.custom_properties())

    return [
        Route("/_emulator/contacts", contacts, methods=["GET"]),
        Route("/_emulator/events", events, methods=["GET"]),
        Route("/_emulator/requests", requests, methods=["GET"]),
        Route("/_emulator/counters", counters, methods=["GET"]),
        Route("/_emulator/faults", get_faults, methods=["GET"]),
        Route("/_emulator/faults", set_faults, methods=["POST"]),
        Route("/_emulator/clock", clock, methods=["POST"]),
        Route("/_emulator/reset", reset, methods=["POST"]),
        Route("/_emulator/properties", set_properties, methods=["POST"]),
    ]


def create_app(options: EmulatorOptions | None = None) -> Starlette:
    """A Starlette app emulating one Loops team; `app.state.emulator` is its `Emulator`."""
    emulator = Emulator(options or EmulatorOptions())

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            emulator.state.close()

    routes = [*_inspection_routes(emulator), Route("/api/{rest:path}", emulator, methods=None)]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.emulator = emulator
    return app
