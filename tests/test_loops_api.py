"""The one function that decides what an answer means, as a table; and the httpx boundary."""

from __future__ import annotations

import inspect

import anyio
import httpx
import pytest

from sync.errors import FatalApiError, RejectedRow, RetryableError
from sync.loops_api import (
    CHECK_TRIES,
    TRANSPORT_ERRORS,
    LoopsClient,
    check_api_key,
    classify,
    key_problem,
    parse_retry_after,
)
from sync.model import Outcome
from tests.fakes import ScriptedLoops


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        pytest.param("contact", 200, Outcome.DELIVERED, id="upsert-ok"),
        pytest.param("event", 200, Outcome.DELIVERED, id="event-ok"),
        pytest.param("contact", 201, Outcome.DELIVERED, id="created"),
        pytest.param("event", 409, Outcome.DUPLICATE, id="duplicate-event"),
        pytest.param("contact", 409, Outcome.REJECTED, id="contact-conflict-is-a-bad-row"),
        pytest.param("contact", 400, Outcome.REJECTED, id="bad-row"),
        pytest.param("event", 400, Outcome.REJECTED, id="bad-event"),
        pytest.param("contact", 413, Outcome.REJECTED, id="too-large"),
        pytest.param("contact", 422, Outcome.REJECTED, id="unprocessable"),
        pytest.param("contact", 401, Outcome.FATAL, id="bad-key"),
        pytest.param("event", 403, Outcome.FATAL, id="forbidden"),
        pytest.param("contact", 404, Outcome.FATAL, id="wrong-base-url"),
        pytest.param("contact", 405, Outcome.FATAL, id="wrong-method-or-url"),
        pytest.param("contact", 429, Outcome.FAILED, id="rate-limited"),
        pytest.param("event", 429, Outcome.FAILED, id="event-rate-limited"),
        pytest.param("contact", 408, Outcome.FAILED, id="request-timeout"),
        pytest.param("contact", 500, Outcome.FAILED, id="server-error"),
        pytest.param("event", 502, Outcome.FAILED, id="bad-gateway"),
        pytest.param("contact", 503, Outcome.FAILED, id="unavailable"),
        pytest.param("check", 401, Outcome.FATAL, id="key-check-refused"),
    ],
)
def test_classify(kind: str, status: int, expected: Outcome) -> None:
    assert classify(kind, status) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [200, 409, 400, 401, 404, 429, 500])
def test_an_attempt_speaks_the_outcome_classify_gave_its_answer(status: int) -> None:
    """One vocabulary: the answer, or the error that drives retries and stops, carries the
    outcome `classify()` named, and the recorder reads that same word."""

    async def main() -> Outcome:
        loops = ScriptedLoops(default=status)
        client = LoopsClient("http://loops.test/api", KEY, transport=loops.transport)
        try:
            return (await client.send_event(b"{}", "key")).outcome
        except (RetryableError, RejectedRow, FatalApiError) as error:
            return error.outcome
        finally:
            await client.aclose()

    assert anyio.run(main, backend="asyncio") is classify("event", status)


def _concrete_httpx_errors() -> set[type[httpx.HTTPError]]:
    found = set()
    for _, value in inspect.getmembers(httpx, inspect.isclass):
        is_error = issubclass(value, httpx.HTTPError) and value is not httpx.HTTPStatusError
        if is_error and not value.__subclasses__():
            found.add(value)
    return found


def test_every_httpx_transport_error_is_translated() -> None:
    """A new httpx exception must be given a meaning here before it can surprise a run."""
    mapped = {error.__name__ for error in TRANSPORT_ERRORS}
    missing = {error.__name__ for error in _concrete_httpx_errors()} - mapped
    assert not missing


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), ("0", 0.0), (None, None), ("soon", None), ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0)],
)
def test_retry_after_in_both_forms(header: str | None, seconds: float | None) -> None:
    now = 1445412480.0  # 07:28:00 that day
    assert parse_retry_after(header, now=now) == seconds


# --- messages are built from what we know, never from a library's text ----------------------

KEY = "sk-live-0123456789abcdef"


def attempt_raising(error: Exception) -> Exception:
    """What one upsert attempt raises when the transport fails with `error`."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    async def main() -> Exception:
        client = LoopsClient("http://loops.test/api", KEY, transport=httpx.MockTransport(handler))
        try:
            await client.upsert_contact(b"{}")
        except Exception as raised:  # noqa: BLE001  # the test inspects whatever comes out
            return raised
        finally:
            await client.aclose()
        raise AssertionError("the attempt succeeded")

    return anyio.run(main, backend="asyncio")


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(
            httpx.LocalProtocolError(f"Illegal header value b'Bearer {KEY}\\r'"), id="bad-header"
        ),
        pytest.param(
            httpx.UnsupportedProtocol(f"Request URL has no scheme: Bearer {KEY}"), id="scheme"
        ),
        pytest.param(httpx.ConnectError(f"refused (Authorization: Bearer {KEY})"), id="connect"),
        pytest.param(httpx.ReadTimeout(f"timed out, headers: Bearer {KEY}"), id="timeout"),
    ],
)
def test_a_transport_error_is_described_without_the_librarys_text(error: Exception) -> None:
    """httpx quotes request headers (the key among them) in some messages: none reaches ours."""
    raised = attempt_raising(error)
    assert isinstance(raised, FatalApiError | RetryableError)
    assert KEY not in str(raised)
    assert "Bearer" not in str(raised)
    assert "/v1/contacts/update" in str(raised)  # what we know: the method and path
    assert type(error).__name__ in str(raised)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("abc\r", "a control character"),
        ("ab\x01c", "a control character"),
        ("clé", "a non-ASCII character"),
        ("ab c", "a space"),
    ],
)
def test_a_key_that_cannot_go_in_a_header_is_named_by_its_problem(key: str, problem: str) -> None:
    found = key_problem(key)
    assert found is not None
    assert problem in found
    assert key not in found


def test_a_well_formed_key_has_no_problem() -> None:
    assert key_problem(KEY) is None


# --- the key check before sending ----------------------------------------------------------

KEY_CHECK = "/api/v1/api-key"


def check(loops: ScriptedLoops, *, base_url: str = "http://loops.test/api") -> str:
    return check_api_key(base_url, KEY, timeout=5, transport=loops.transport, pause=0)


def test_the_key_check_returns_the_team_name() -> None:
    team = httpx.Response(200, json={"success": True, "teamName": "Acme"})
    loops = ScriptedLoops({KEY_CHECK: [team]})
    assert check(loops) == "Acme"
    assert loops.paths() == ["/v1/api-key"]
    assert loops.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_a_refused_key_is_fatal_and_names_the_variable_not_the_key() -> None:
    loops = ScriptedLoops({KEY_CHECK: [401]})
    with pytest.raises(FatalApiError, match="API key") as caught:
        check(loops)
    assert "LOOPS_API_KEY" in str(caught.value)
    assert KEY not in str(caught.value)
    assert len(loops.requests) == 1  # a refused key is not tried again


@pytest.mark.parametrize("status", [404, 405])
def test_a_wrong_base_url_is_fatal_at_once(status: int) -> None:
    loops = ScriptedLoops({KEY_CHECK: [status]})
    with pytest.raises(FatalApiError, match="base_url"):
        check(loops)
    assert len(loops.requests) == 1


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(httpx.ConnectError("[Errno 111] Connection refused"), id="refused"),
        pytest.param(httpx.ConnectError("[Errno -2] Name or service not known"), id="dns"),
        pytest.param(httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER]"), id="tls"),
        pytest.param(httpx.ConnectTimeout("timed out"), id="connect-timeout"),
    ],
)
def test_an_unreachable_api_is_fatal_after_a_couple_of_quick_tries(error: Exception) -> None:
    loops = ScriptedLoops({KEY_CHECK: [error] * 10})
    with pytest.raises(FatalApiError, match=r"cannot be reached at http://loops\.test/api"):
        check(loops)
    assert len(loops.requests) == CHECK_TRIES


def test_a_passing_network_hiccup_does_not_stop_the_run() -> None:
    loops = ScriptedLoops({KEY_CHECK: [httpx.ConnectError("refused")]})
    check(loops)
    assert len(loops.requests) == 2


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_busy_or_failing_api_at_the_check_is_fatal_after_a_couple_of_tries(status: int) -> None:
    loops = ScriptedLoops({KEY_CHECK: [status] * 10})
    with pytest.raises(FatalApiError, match=str(status)):
        check(loops)
    assert len(loops.requests) == CHECK_TRIES
