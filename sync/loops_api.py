"""The boundary with Loops: one HTTP attempt in, one classified outcome out.

`classify()` is the single place that decides what an answer means. Every httpx exception is
translated here too (`TRANSPORT_ERRORS`), so nothing above this module handles httpx types.
Messages are built from what this module knows (method, path, status, Loops' own message, the
error's class), never from a library's exception text: httpx and h11 quote request headers in
theirs, and the Authorization header holds the key.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Literal, TypeVar

import anyio
import httpx
import orjson

from sync.errors import FatalApiError, RejectedRow, RetryableError
from sync.model import Answer, Outcome
from sync.signals import run_until_stopped

__all__ = [
    "LISTS_PATH",
    "PROPERTIES_PATH",
    "TRANSPORT_ERRORS",
    "LoopsClient",
    "check_api_key",
    "classify",
    "key_problem",
    "parse_retry_after",
    "quickly",
]

T = TypeVar("T")

CONTACT_PATH = "/v1/contacts/update"
EVENT_PATH = "/v1/events/send"
DELETE_PATH = "/v1/contacts/delete"
# What a call is, as far as its answer's meaning goes.
CallKind = Literal["contact", "event", "delete", "check"]
API_KEY_PATH = "/v1/api-key"
PROPERTIES_PATH = "/v1/contacts/properties"
LISTS_PATH = "/v1/lists"

# The checks before a run (the key, the account's properties and lists): a few quick tries, each
# answered or not within CHECK_TIMEOUT, all within CHECK_SECONDS, so that an unreachable API
# ends the run within seconds.
CHECK_TRIES = 3
CHECK_PAUSE = 0.5  # seconds before the second try, doubled before the third
CHECK_TIMEOUT = 5.0
CHECK_SECONDS = 12.0


def classify(kind: CallKind, status: int) -> Outcome:
    """What an HTTP status means for a request of this kind: DELIVERED, DUPLICATE (an event
    Loops has seen), REJECTED (never as it is), FAILED (may succeed later: tried again) or
    FATAL (no request can succeed). A deletion answered 404 finds the contact already gone:
    done (a wrong base URL fails the key check before any deletion is sent)."""
    if 200 <= status < 300 or (status == 404 and kind == "delete"):
        return Outcome.DELIVERED
    if status == 409 and kind == "event":
        return Outcome.DUPLICATE
    if status in (401, 403, 404, 405):
        # 404/405: the base URL does not point at the Loops API; every request would fail alike.
        return Outcome.FATAL
    if status in (408, 425, 429) or status >= 500:
        return Outcome.FAILED
    return Outcome.REJECTED


# Every httpx error a request can raise, and what it means. A test checks this covers them all.
TRANSPORT_ERRORS: dict[type[httpx.HTTPError], str] = {
    httpx.ConnectTimeout: "connection timed out",
    httpx.ReadTimeout: "no answer in time",
    httpx.WriteTimeout: "sending timed out",
    httpx.PoolTimeout: "no free connection in time",
    httpx.ConnectError: "cannot connect",
    httpx.ReadError: "connection broken while reading",
    httpx.WriteError: "connection broken while sending",
    httpx.CloseError: "connection broken while closing",
    httpx.RemoteProtocolError: "connection dropped by the server",
    httpx.LocalProtocolError: "invalid request",
    httpx.ProxyError: "proxy failed",
    httpx.UnsupportedProtocol: "unsupported URL scheme",
    httpx.DecodingError: "undecodable answer",
    httpx.TooManyRedirects: "too many redirects",
}


def key_problem(api_key: str) -> str | None:
    """What keeps `api_key` out of an HTTP header, worded without showing the key; or None.

    A header value is visible ASCII: a key pasted with a control character (a key file saved
    with CRLF leaves a carriage return), a space or a non-ASCII character cannot be sent.
    """
    for position, character in enumerate(api_key, start=1):
        if character == " ":
            found = "a space"
        elif not character.isascii():
            found = "a non-ASCII character"
        elif not character.isprintable():
            found = "a control character"
        else:
            continue
        return f"{found} (character {position} of {len(api_key)})"
    return None


class LoopsClient:
    """One `httpx.AsyncClient` for the whole run; the key goes only in the Authorization header."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        max_connections: int = 20,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        problem = key_problem(api_key)
        if problem is not None:  # httpx would fail later, quoting the header in its message
            raise FatalApiError(f"the API key cannot be sent in an HTTP header: it holds {problem}")
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "User-Agent": "loops-sync",
            },
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def upsert_contact(self, body: bytes) -> Answer:
        return await self._send("contact", "PUT", CONTACT_PATH, body, None)

    async def send_event(self, body: bytes, idempotency_key: str) -> Answer:
        return await self._send("event", "POST", EVENT_PATH, body, idempotency_key)

    async def delete_contact(self, body: bytes) -> Answer:
        return await self._send("delete", "POST", DELETE_PATH, body, None)

    async def check_key(self) -> str:
        """The name of the team the key belongs to ("" if Loops does not say)."""
        answer = await self._send("check", "GET", API_KEY_PATH, None, None)
        return answer.team

    async def read(self, path: str) -> Any:
        """`GET path` (the account's properties or mailing lists): Loops' JSON answer, whose
        shape the caller checks. An answer that is not JSON is not the Loops API's: fatal."""
        response = await self._exchange("check", "GET", path, None, None)
        try:
            return orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise FatalApiError(
                f"{self.base_url} answered GET {path} with something that is not JSON: it does "
                "not look like the Loops API. Check loops.base_url or LOOPS_BASE_URL."
            ) from None

    async def create_property(self, name: str, kind: str) -> None:
        """`POST /v1/contacts/properties`; RejectedRow with Loops' words when it refuses (a name
        that is taken or not camelCase)."""
        body = orjson.dumps({"name": name, "type": kind})
        await self._send("check", "POST", PROPERTIES_PATH, body, None)

    async def _send(
        self,
        kind: CallKind,
        method: str,
        path: str,
        body: bytes | None,
        idempotency_key: str | None,
    ) -> Answer:
        """One attempt: DELIVERED or DUPLICATE, or the error that carries FAILED, REJECTED or FATAL
        (RetryableError, RejectedRow, FatalApiError)."""
        response = await self._exchange(kind, method, path, body, idempotency_key)
        return _answer(kind, response)

    async def _exchange(
        self,
        kind: CallKind,
        method: str,
        path: str,
        body: bytes | None,
        idempotency_key: str | None,
    ) -> httpx.Response:
        """One attempt whose answer was DELIVERED or DUPLICATE; any other raises (as `_send`)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        try:
            response = await self._http.request(method, path, content=body, headers=headers)
        except httpx.HTTPError as error:
            raise _translate(error, f"{method} {path}", self.base_url) from None
        _raise_for(_answer(kind, response), response, self.base_url)
        return response


def _answer(kind: CallKind, response: httpx.Response) -> Answer:
    return Answer(
        classify(kind, response.status_code),
        response.status_code,
        _message(response),
        _int_header(response, "x-ratelimit-limit"),
        _int_header(response, "x-ratelimit-remaining"),
        _team(response) if kind == "check" else "",
    )


def _raise_for(answer: Answer, response: httpx.Response, base_url: str) -> Answer:
    match answer.outcome:
        case Outcome.FAILED:
            raise RetryableError(
                f"HTTP {answer.status}: {answer.message}",
                status=answer.status,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        case Outcome.REJECTED:
            raise RejectedRow(
                f"Loops answered {answer.status}: {answer.message}", status=answer.status
            )
        case Outcome.FATAL:
            raise FatalApiError(_fatal_message(answer, base_url))
    return answer  # DELIVERED or DUPLICATE


def _fatal_message(answer: Answer, base_url: str) -> str:
    if answer.status == 401:
        return (
            f"Loops refused the API key (401: {answer.message}). Check the key in the "
            "environment variable named by loops.api_key_env (LOOPS_API_KEY by default)."
        )
    if answer.status == 403:
        return f"Loops refused access (403: {answer.message})."
    return (
        f"{base_url} answered {answer.status}: it does not look like the Loops API. "
        "Check loops.base_url or LOOPS_BASE_URL (it should end in /api)."
    )


def _translate(error: httpx.HTTPError, request: str, base_url: str) -> Exception:
    """The error, described by what we know: the request, the meaning of the error's class.

    Never `str(error)`: h11's "Illegal header value b'Bearer …'" would print the key.
    """
    meaning = next(
        (text for error_type, text in TRANSPORT_ERRORS.items() if isinstance(error, error_type)),
        "HTTP error",
    )
    described = f"{request}: {meaning} ({type(error).__name__})"
    if isinstance(error, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
        return FatalApiError(
            f"cannot call {base_url}: {described}. Check loops.base_url or LOOPS_BASE_URL, "
            "and that the API key is the one Loops shows (Settings → API)."
        )
    return RetryableError(described)


def _message(response: httpx.Response) -> str:
    """Loops' own words: `message`, or the older `error` key, or the start of the body."""
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return response.text[:200] or response.reason_phrase
    if isinstance(data, dict):
        text = data.get("message") or data.get("error")
        if isinstance(text, str):
            return text
    return response.reason_phrase


def _team(response: httpx.Response) -> str:
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return ""
    team = data.get("teamName") if isinstance(data, dict) else None
    return team if isinstance(team, str) else ""


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` in seconds, from either of its forms (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def check_api_key(
    base_url: str,
    api_key: str,
    *,
    timeout: float = CHECK_TIMEOUT,
    transport: httpx.AsyncBaseTransport | None = None,
    pause: float = CHECK_PAUSE,
    handle_signals: bool = False,
) -> str:
    """Ask Loops whether it takes the key (`GET /v1/api-key`); the team's name if it does.

    Run before sending, also when there is nothing to send: an empty plan proves nothing about
    the key. FatalApiError within seconds when the key is refused (401), the base URL is not
    the Loops API (404, 405), or Loops cannot be reached (refused, DNS, TLS, no answer), after
    at most CHECK_TRIES quick tries for what may pass (no answer, 429, 5xx). `handle_signals`:
    a stop signal ends the check as Ctrl-C does (`sync.signals`).
    """
    check = partial(_check_api_key, base_url, api_key, timeout, transport, pause)
    return run_until_stopped(check, watch=handle_signals)


async def _check_api_key(
    base_url: str,
    api_key: str,
    timeout: float,
    transport: httpx.AsyncBaseTransport | None,
    pause: float,
) -> str:
    client = LoopsClient(
        base_url,
        api_key,
        timeout=min(timeout, CHECK_TIMEOUT),
        max_connections=1,
        transport=transport,
    )
    try:
        return await quickly(client.check_key, client.base_url, "confirm the API key", pause)
    finally:
        await client.aclose()


async def quickly(
    call: Callable[[], Awaitable[T]], base_url: str, what: str, pause: float = CHECK_PAUSE
) -> T:
    """`call()`, tried up to CHECK_TRIES times within CHECK_SECONDS while it may pass (no
    answer, 429, 5xx): a check before sending, which must end within seconds either way.
    FatalApiError when it never passed; `what` says what Loops did not do ("confirm the API
    key")."""
    last: RetryableError | None = None
    with anyio.move_on_after(CHECK_SECONDS):
        for attempt in range(CHECK_TRIES):
            if attempt:
                await anyio.sleep(pause * 2 ** (attempt - 1))
            try:
                return await call()
            except RetryableError as error:
                last = error
    raise FatalApiError(_unconfirmed(base_url, what, last))


def _unconfirmed(base_url: str, what: str, last: RetryableError | None) -> str:
    if last is None:
        return f"Loops cannot be reached at {base_url}: no answer in time (to {what})."
    if last.status is None:
        return (
            f"Loops cannot be reached at {base_url}: {last}. Check the network and "
            "loops.base_url or LOOPS_BASE_URL. Nothing was sent."
        )
    return (
        f"Loops did not {what} at {base_url}: {last} ({CHECK_TRIES} tries). "
        "Loops seems to be in trouble; nothing was sent, the next run tries again."
    )
