"""The one function that decides what an answer means, as a table; and the httpx boundary."""

from __future__ import annotations

import inspect

import httpx
import pytest

from sync.loops_api import TRANSPORT_ERRORS, Outcome, classify, parse_retry_after


@pytest.mark.parametrize(
    ("kind", "status", "expected"),
    [
        pytest.param("contact", 200, Outcome.OK, id="upsert-ok"),
        pytest.param("event", 200, Outcome.OK, id="event-ok"),
        pytest.param("contact", 201, Outcome.OK, id="created"),
        pytest.param("event", 409, Outcome.DUPLICATE, id="duplicate-event"),
        pytest.param("contact", 409, Outcome.REJECT, id="contact-conflict-is-a-bad-row"),
        pytest.param("contact", 400, Outcome.REJECT, id="bad-row"),
        pytest.param("event", 400, Outcome.REJECT, id="bad-event"),
        pytest.param("contact", 413, Outcome.REJECT, id="too-large"),
        pytest.param("contact", 422, Outcome.REJECT, id="unprocessable"),
        pytest.param("contact", 401, Outcome.FATAL, id="bad-key"),
        pytest.param("event", 403, Outcome.FATAL, id="forbidden"),
        pytest.param("contact", 404, Outcome.FATAL, id="wrong-base-url"),
        pytest.param("contact", 405, Outcome.FATAL, id="wrong-method-or-url"),
        pytest.param("contact", 429, Outcome.RETRY, id="rate-limited"),
        pytest.param("event", 429, Outcome.RETRY, id="event-rate-limited"),
        pytest.param("contact", 408, Outcome.RETRY, id="request-timeout"),
        pytest.param("contact", 500, Outcome.RETRY, id="server-error"),
        pytest.param("event", 502, Outcome.RETRY, id="bad-gateway"),
        pytest.param("contact", 503, Outcome.RETRY, id="unavailable"),
        pytest.param("check", 401, Outcome.FATAL, id="key-check-refused"),
    ],
)
def test_classify(kind: str, status: int, expected: Outcome) -> None:
    assert classify(kind, status) is expected  # type: ignore[arg-type]


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
