"""The boundary with Loops: one HTTP attempt in, one classified outcome out.

`classify()` is the single place that decides what an answer means. Every httpx exception is
translated here too (`TRANSPORT_ERRORS`), so nothing above this module handles httpx types.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from enum import Enum
from typing import Literal

import httpx
import orjson

from sync.errors import FatalApiError, RejectedRow, RetryableError

__all__ = [
    "TRANSPORT_ERRORS",
    "Answer",
    "LoopsClient",
    "Outcome",
    "classify",
    "parse_retry_after",
]

CONTACT_PATH = "/v1/contacts/update"
EVENT_PATH = "/v1/events/send"
API_KEY_PATH = "/v1/api-key"


class Outcome(Enum):
    OK = "ok"
    DUPLICATE = "duplicate"  # an event whose Idempotency-Key Loops has seen: delivered before
    REJECT = "reject"  # this request can never succeed as it is: the row goes to rejects
    RETRY = "retry"  # may succeed later: rate limited, server error
    FATAL = "fatal"  # no request can succeed: bad key, wrong URL


def classify(kind: Literal["contact", "event", "check"], status: int) -> Outcome:
    """What an HTTP status means for a request of this kind."""
    if 200 <= status < 300:
        return Outcome.OK
    if status == 409 and kind == "event":
        return Outcome.DUPLICATE
    if status in (401, 403, 404, 405):
        # 404/405: the base URL does not point at the Loops API; every request would fail alike.
        return Outcome.FATAL
    if status in (408, 425, 429) or status >= 500:
        return Outcome.RETRY
    return Outcome.REJECT


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


@dataclass(frozen=True)
class Answer:
    """A classified answer, with the rate-limit headers the pacer watches."""

    outcome: Outcome
    status: int
    message: str
    limit: int | None = None
    remaining: int | None = None


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

    async def check_key(self) -> Answer:
        return await self._send("check", "GET", API_KEY_PATH, None, None)

    async def _send(
        self,
        kind: Literal["contact", "event", "check"],
        method: str,
        path: str,
        body: bytes | None,
        idempotency_key: str | None,
    ) -> Answer:
        """One attempt: OK or DUPLICATE, or RetryableError, RejectedRow, FatalApiError."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        try:
            response = await self._http.request(method, path, content=body, headers=headers)
        except httpx.HTTPError as error:
            raise _translate(error, self.base_url) from None
        answer = Answer(
            classify(kind, response.status_code),
            response.status_code,
            _message(response),
            _int_header(response, "x-ratelimit-limit"),
            _int_header(response, "x-ratelimit-remaining"),
        )
        return _raise_for(answer, response, self.base_url)


def _raise_for(answer: Answer, response: httpx.Response, base_url: str) -> Answer:
    match answer.outcome:
        case Outcome.OK | Outcome.DUPLICATE:
            return answer
        case Outcome.RETRY:
            raise RetryableError(
                f"HTTP {answer.status}: {answer.message}",
                status=answer.status,
                retry_after=parse_retry_after(response.headers.get("retry-after")),
            )
        case Outcome.REJECT:
            raise RejectedRow(
                f"Loops answered {answer.status}: {answer.message}", status=answer.status
            )
        case Outcome.FATAL:
            raise FatalApiError(_fatal_message(answer, base_url))


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


def _translate(error: httpx.HTTPError, base_url: str) -> Exception:
    for error_type, meaning in TRANSPORT_ERRORS.items():
        if isinstance(error, error_type):
            if isinstance(error, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
                return FatalApiError(f"cannot call {base_url}: {meaning} ({error})")
            return RetryableError(f"{meaning}: {type(error).__name__}")
    return RetryableError(f"HTTP error: {type(error).__name__}")


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
