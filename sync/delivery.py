"""The send stage as a run drives it: the pool over the plan's jobs, each outcome recorded.

`sync.sender` sends jobs; this module gives it the config's settings, the stop switch (a
deadline, signals) and a recorder that turns each request's fate into a ledger write and a count
in the report. Only what Loops confirmed is recorded.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import orjson
from anyio.abc import TaskGroup

from sync.budget import budget_name, open_store, sharing
from sync.config import Config
from sync.errors import FatalApiError, LedgerError
from sync.ledger import Ledger
from sync.loops_api import LoopsClient
from sync.model import Outcome, Request, RequestResult, SendProgress
from sync.pacing import Pacer
from sync.plan import Plan
from sync.report import RunReport
from sync.sender import StopSwitch, default_concurrency, send_jobs
from sync.signals import STOP_SIGNALS, handlers_kept

if TYPE_CHECKING:
    from sync.pipeline import Options

__all__ = ["budget_warning", "record_delivered", "send_plan"]


def send_plan(
    config: Config,
    plan: Plan,
    ledger: Ledger,
    report: RunReport,
    *,
    api_key: str,
    options: Options,
) -> list[tuple[int, str]]:
    """Send the plan; record in the ledger only what Loops confirmed, count the rest in the
    report. Returns Loops' rejects (row, message)."""
    deadline = time.monotonic() + options.max_duration if options.max_duration else math.inf
    stop = StopSwitch(deadline)
    sending_since = time.monotonic()
    ends_by = deadline if options.max_duration else None
    recorder = _Recorder(ledger, report, options.on_progress, plan.request_count, ends_by)
    try:
        send = partial(
            _send_async,
            config,
            plan=plan,
            recorder=recorder,
            stop=stop,
            api_key=api_key,
            options=options,
        )
        with handlers_kept(signal.SIGTERM, signal.SIGHUP):
            anyio.run(send, backend="asyncio")
    finally:
        ledger.flush()
    report.stopped = stop.reason
    report.send_seconds = time.monotonic() - sending_since
    if report.send_seconds > 0:
        report.requests_per_second = report.requests / report.send_seconds
    return recorder.loops_rejects


def budget_warning(rate: float, requests: int, budget: float | None) -> str | None:
    """What a person should know before a run starts sending: `--max-duration` is shorter than
    the plan needs at the rate limit (and about how much it leaves for the next runs)."""
    if budget is None or requests <= rate * budget:
        return None
    fits = int(rate * budget)
    return (
        f"at {rate:g} requests/s the {requests} requests need about {_about(requests / rate)}, "
        f"more than --max-duration ({_about(budget)}): about {fits} are sent by this run, the "
        "rest by the next runs"
    )


def _about(seconds: float) -> str:
    """A duration as the warning says it: `1.5 s`, `20 s`, `8 min`, `27 h 47 min`."""
    if seconds < 60:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


async def _send_async(
    config: Config,
    *,
    plan: Plan,
    recorder: _Recorder,
    stop: StopSwitch,
    api_key: str,
    options: Options,
) -> None:
    """The pool, sized and timed by the config: `concurrency` workers and connections,
    `timeout` per request (and as the silence after which Loops counts as unreachable),
    `max_attempts` tries per request, waited out as `options.retry` says."""
    settings = config.spec.loops
    concurrency = settings.concurrency or default_concurrency(settings.rate_limit)
    client = LoopsClient(
        config.base_url,
        api_key,
        timeout=settings.timeout,
        max_connections=concurrency,
        transport=options.transport,
    )
    fatal: FatalApiError | None = None
    try:
        async with anyio.create_task_group() as group:
            if options.handle_signals:
                group.start_soon(_watch_signals, stop)
            pacer = Pacer(settings.rate_limit)
            async with _shared_budget(config, plan, api_key, pacer, group) as budget_warnings:
                try:
                    counters = await send_jobs(
                        plan.jobs(options.limit),
                        client=client,
                        pacer=pacer,
                        policy=replace(options.retry, attempts=settings.max_attempts),
                        concurrency=concurrency,
                        on_result=recorder,
                        stop=stop,
                        unreachable_after=settings.timeout,
                    )
                except FatalApiError as error:
                    fatal = error
            group.cancel_scope.cancel()
    finally:
        await client.aclose()
    recorder.report.warnings.extend(budget_warnings)
    if fatal is not None:
        raise fatal
    if pacer.lowered_to is not None:
        recorder.report.warnings.append(
            f"Loops reported a limit of {pacer.lowered_to} requests/s, below loops.rate_limit "
            f"({settings.rate_limit:g}); the run slowed down to it"
        )
    recorder.report.requests = counters.requests
    recorder.report.retries = counters.retries
    recorder.report.rate_limited = counters.rate_limited


def _shared_budget(
    config: Config, plan: Plan, api_key: str, pacer: Pacer, group: TaskGroup
) -> AbstractAsyncContextManager[list[str]]:
    """The pacer at this run's share of its team's budget (`sync.budget`), unless it is off or
    there is nothing to send (joining would make the other runs slow down for nothing)."""
    place = config.budget_place
    if place is None or plan.request_count == 0:
        return nullcontext([])
    name = budget_name(config.base_url, api_key, config.spec.loops.team)
    return sharing(partial(open_store, place), name, pacer, group)


class _Recorder:
    """Turns each request's fate into a count in the report, a ledger write, maybe a reject.

    The count comes first: Loops has what it confirmed even when the ledger cannot record it.
    Failed, deferred and unsent requests are counted as planned: an upsert that rode on an
    event shares its fate, so it is written to the ledger but not counted a second time.
    """

    def __init__(
        self,
        ledger: Ledger,
        report: RunReport,
        on_progress: Callable[[SendProgress], None] | None,
        total: int,
        ends_by: float | None = None,
    ) -> None:
        self.ledger = ledger
        self.report = report
        self.on_progress = on_progress
        self.progress = SendProgress(0, total, ends_by)
        self.loops_rejects: list[tuple[int, str]] = []
        self._refused: set[str] = set()  # identities whose upsert Loops refused (400)
        self.unwritable: LedgerError | None = None

    def __call__(self, result: RequestResult) -> None:
        request, report = result.request, self.report
        if not result.rider:
            done = self.progress.done + 1
            total = max(done, self.progress.total)
            self.progress = SendProgress(done, total, self.progress.ends_by)
            if self.on_progress is not None:
                self.on_progress(self.progress)
        match result.status, request.kind:
            case Outcome.DELIVERED, "contact":
                report.contacts_sent += 1
                self._write(record_delivered, self.ledger, request)
            case Outcome.DELIVERED, "removal":
                report.contacts_removed += 1
                self._write(record_delivered, self.ledger, request)
            case Outcome.REJECTED, "removal":
                report.rejected_by_loops += 1  # no row to reject: tried again next run
                self._write(self._failed, request, result.message)
            case Outcome.DELIVERED, "event":
                report.events_sent += 1
                self._write(record_delivered, self.ledger, request)
            case Outcome.DUPLICATE, _:
                report.events_duplicate += 1
                self._write(record_delivered, self.ledger, request)
            case Outcome.REJECTED, _:
                if request.kind == "contact":
                    self._refused.add(request.identity)
                self.loops_rejects.append((request.row, result.message))
                report.rejected_by_loops += 1
                self._write(self._failed, request, result.message)
            case Outcome.FAILED, _:
                report.failed += not result.rider
                self._write(self._failed, request, result.message)
            case Outcome.DEFERRED, _:
                # Behind an upsert Loops refused, it is part of a rejected row, not work left.
                report.failed += not result.rider and request.identity not in self._refused
                report.deferred += not result.rider
            case _:
                report.not_sent += not result.rider

    def _write(self, write: Callable[..., None], *args: Any) -> None:
        """Once the ledger cannot be written, try no more (each try may wait out its busy
        timeout) and raise again: the sender stops on it, and nothing more is sent."""
        if self.unwritable is not None:
            raise self.unwritable
        try:
            write(*args)
        except LedgerError as error:
            self.unwritable = error
            raise

    def _failed(self, request: Request, message: str) -> None:
        ref = request.ref if request.kind == "event" else request.identity
        self.ledger.request_failed(request.kind, ref, message)


def record_delivered(ledger: Ledger, request: Request) -> None:
    """What the ledger keeps of a request Loops has (the recorder's, and `run --baseline`'s,
    which records a plan as delivered without sending it): a contact's payload hash and
    top-level keys, an event's keys and the identifiers it was sent with, a removal's action."""
    match request.kind:
        case "contact":
            props = orjson.loads(request.body).keys()
            ledger.contact_delivered(request.identity, request.ref, props)
        case "event":
            ledger.event_delivered(
                request.ref, request.identity, request.event or "", request.occurrence
            )
        case "removal":
            ledger.contact_removed(request.identity, request.ref)


async def _watch_signals(stop: StopSwitch) -> None:
    """First SIGINT, SIGTERM or SIGHUP (a closed terminal): start nothing new, let requests in
    flight finish. A second: abandon those too (their outcome unknown, the next run sends them)."""
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        received = 0
        async for _ in signals:
            received += 1
            stop.throw("signal", now=received > 1)
