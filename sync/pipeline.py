"""`run_sync()`: read, map, plan, send, report. The CLI and the tests call the same functions."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import anyio
import httpx
import orjson
import polars as pl

from sync.config import Config, check_columns
from sync.errors import ConfigError, ConfigProblem, FatalApiError
from sync.ledger import Ledger, Snapshot, hold_lock
from sync.loops_api import CONTACT_PATH, EVENT_PATH, LoopsClient, check_api_key
from sync.mapping import ROW, Mapped, constant_problems, map_rows
from sync.pacing import Pacer
from sync.plan import Plan, Request, make_plan
from sync.report import ProgressReporter, RunReport, write_rejects
from sync.sender import RequestResult, RetryPolicy, StopSwitch, default_concurrency, send_jobs
from sync.sources import read_source

__all__ = ["Options", "PlanPreview", "plan_sync", "run_sync"]

LEDGER_FILE = "ledger.sqlite"


@dataclass(frozen=True)
class Options:
    """How to run. Everything a test or a notebook may want to change, and nothing else."""

    dry_run: bool = False
    full: bool = False
    limit: int | None = None
    max_duration: float | None = None
    quiet: bool = False
    env: Mapping[str, str] | None = None
    transport: httpx.AsyncBaseTransport | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    handle_signals: bool = False


@dataclass(frozen=True)
class PlanPreview:
    """What `loops-sync plan` shows: counts, rejects by reason, an ETA, sample payloads."""

    report: RunReport
    plan: Plan
    rejects_by_reason: dict[str, int]
    eta_seconds: float
    samples: list[dict[str, object]]


def run_sync(config: Config, options: Options | None = None) -> RunReport:
    """Make Loops match the source, sending only what the ledger says Loops lacks."""
    options = options or Options()
    started = time.monotonic()
    source = _read(config)
    if options.dry_run:
        with _open_ledger(config) as ledger:
            mapped, plan = _map_and_plan(config, source, ledger.snapshot(), full=options.full)
        report = _new_report(config, mapped, plan, dry_run=True)
        report.dry_run_file = str(_write_dry_run(config, plan, options.limit))
        _finish(
            config, report=report, source=source, mapped=mapped, loops_rejects=[], started=started
        )
        return report
    api_key = _require_api_key(config, options.env)
    with hold_lock(config.state_dir, config.name), _open_ledger(config) as ledger:
        mapped, plan = _map_and_plan(config, source, ledger.snapshot(), full=options.full)
        report = _new_report(config, mapped, plan, dry_run=False)
        run_id = ledger.start_run(config.config_hash)
        try:
            check_api_key(
                config.base_url,
                api_key,
                timeout=config.spec.loops.timeout,
                transport=options.transport,
            )
            loops_rejects = _send(config, plan, ledger, report, api_key=api_key, options=options)
        except FatalApiError:
            ledger.finish_run(run_id, 3, report.to_json())
            raise
        _finish(
            config,
            report=report,
            source=source,
            mapped=mapped,
            loops_rejects=loops_rejects,
            started=started,
        )
        ledger.finish_run(run_id, report.exit_code, report.to_json())
        return report


def plan_sync(config: Config, *, full: bool = False, samples: int = 3) -> PlanPreview:
    """What a run would send, without sending anything or taking the lock."""
    source = _read(config)
    with _open_ledger(config) as ledger:
        mapped, plan = _map_and_plan(config, source, ledger.snapshot(), full=full)
    report = _new_report(config, mapped, plan, dry_run=True)
    by_reason = (
        mapped.rejects.group_by("reason").len().sort("len", descending=True).iter_rows()
        if not mapped.rejects.is_empty()
        else []
    )
    first_requests = (r for job in plan.jobs(samples) for r in job.requests)
    sample = [_request_line(r) for _, r in zip(range(samples), first_requests, strict=False)]
    return PlanPreview(
        report=report,
        plan=plan,
        rejects_by_reason=dict(by_reason),
        eta_seconds=plan.request_count / config.spec.loops.rate_limit,
        samples=sample,
    )


# --- stages -----------------------------------------------------------------------------------


def _read(config: Config) -> pl.DataFrame:
    frame = read_source(config)
    check_columns(config, frame.schema, extra=constant_problems(config.spec))
    return frame.with_row_index(ROW, offset=1)


def _map_and_plan(
    config: Config, source: pl.DataFrame, confirmed: Snapshot, *, full: bool
) -> tuple[Mapped, Plan]:
    skip = confirmed.without_contacts() if full else confirmed
    mapped = map_rows(config.spec, source, confirmed=skip)
    return mapped, make_plan(mapped, confirmed, full=full)


def _new_report(config: Config, mapped: Mapped, plan: Plan, *, dry_run: bool) -> RunReport:
    report = RunReport(
        sync=config.name,
        dry_run=dry_run,
        rows_read=mapped.rows_read,
        rows_rejected=mapped.rejects.height,
        duplicates=mapped.duplicates,
        rate_limit=config.spec.loops.rate_limit,
    )
    _count_plan(report, plan)
    return report


def _count_plan(report: RunReport, plan: Plan) -> None:
    counts = plan.counts
    report.contacts_new = counts["contacts_new"]
    report.contacts_changed = counts["contacts_changed"]
    report.contacts_unchanged = counts["contacts_unchanged"]
    report.contacts_retry = counts["contacts_retry"]
    report.events_new = counts["events_new"]
    report.events_retry = counts["events_retry"]
    report.events_skipped_delivered = counts["events_already_delivered"]


def _open_ledger(config: Config) -> closing[Ledger]:
    return closing(Ledger(config.state_dir / LEDGER_FILE, config.name))


def _require_api_key(config: Config, env: Mapping[str, str] | None) -> str:
    key = config.api_key(env)
    if key is None:
        variable = config.spec.loops.api_key_env
        raise ConfigError(
            str(config.file),
            [
                ConfigProblem(
                    "loops.api_key_env",
                    f"the environment variable {variable} is not set (it holds the Loops API key)",
                )
            ],
        )
    return key


def _send(
    config: Config,
    plan: Plan,
    ledger: Ledger,
    report: RunReport,
    *,
    api_key: str,
    options: Options,
) -> list[tuple[int, str]]:
    """Send the plan; record in the ledger only what Loops confirmed. Returns Loops' rejects."""
    rate = config.spec.loops.rate_limit
    deadline = time.monotonic() + options.max_duration if options.max_duration else math.inf
    stop = StopSwitch(deadline)
    if plan.request_count / rate > (options.max_duration or math.inf):
        report.warnings.append(
            f"at {rate:g} requests/s the {plan.request_count} requests need about "
            f"{plan.request_count / rate / 60:.0f} min, more than --max-duration: "
            "the rest is sent by the next runs"
        )
    sending_since = time.monotonic()
    with ProgressReporter(plan.size, quiet=options.quiet) as progress:
        recorder = _Recorder(ledger, report, progress)
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
            anyio.run(send, backend="asyncio")
        finally:
            ledger.flush()
    report.stopped = stop.reason
    report.send_seconds = time.monotonic() - sending_since
    if report.send_seconds > 0:
        report.requests_per_second = report.requests / report.send_seconds
    return recorder.loops_rejects


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


class _Recorder:
    """Turns each request's fate into a ledger write, a count in the report, maybe a reject."""

    def __init__(self, ledger: Ledger, report: RunReport, progress: ProgressReporter) -> None:
        self.ledger = ledger
        self.report = report
        self.progress = progress
        self.loops_rejects: list[tuple[int, str]] = []

    def __call__(self, result: RequestResult) -> None:
        request, report = result.request, self.report
        self.progress.advance()
        match result.status, request.kind:
            case "delivered", "contact":
                self.ledger.contact_delivered(request.identity, request.ref)
                report.contacts_sent += 1
            case "delivered", "event":
                self.ledger.event_delivered(request.ref, request.identity, request.event or "")
                report.events_sent += 1
            case "duplicate", _:
                self.ledger.event_delivered(request.ref, request.identity, request.event or "")
                report.already_delivered += 1
            case "rejected", _:
                self._failed(request, result.message)
                self.loops_rejects.append((request.row, result.message))
                report.rejected_by_loops += 1
            case "failed", _:
                self._failed(request, result.message)
                report.failed += 1
            case "deferred", _:
                report.deferred += 1
            case _:
                report.not_sent += 1

    def _failed(self, request: Request, message: str) -> None:
        ref = request.identity if request.kind == "contact" else request.ref
        self.ledger.request_failed(request.kind, ref, message)


async def _watch_signals(stop: StopSwitch) -> None:
    """First SIGINT, SIGTERM or SIGHUP (a closed terminal): start nothing new, let requests in
    flight finish. A second: abandon those too (their outcome unknown, the next run sends them)."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        received = 0
        async for _ in signals:
            received += 1
            stop.throw("signal", now=received > 1)


def _finish(
    config: Config,
    *,
    report: RunReport,
    source: pl.DataFrame,
    mapped: Mapped,
    loops_rejects: list[tuple[int, str]],
    started: float,
) -> None:
    rejects = mapped.rejects
    if loops_rejects:
        from_loops = pl.DataFrame(
            {
                ROW: [row for row, _ in loops_rejects],
                "column": "",
                "reason": [m for _, m in loops_rejects],
            },
            schema={ROW: pl.UInt32, "column": pl.String, "reason": pl.String},
        )
        rejects = pl.concat([rejects, from_loops]).unique(ROW, keep="first", maintain_order=True)
    path = write_rejects(config.state_dir / f"{config.name}-rejects.csv", source, rejects)
    report.rejects_file = str(path) if path else None
    report.wall_seconds = time.monotonic() - started
    report.exit_code = report.decide_exit_code()


def _write_dry_run(config: Config, plan: Plan, limit: int | None) -> Path:
    path = config.state_dir / f"{config.name}-dry-run.ndjson"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for job in plan.jobs(limit):
            for request in job.requests:
                out.write(orjson.dumps(_request_line(request)) + b"\n")
    return path


def _request_line(request: Request) -> dict[str, object]:
    """A request as the dry run and `plan` show it: method, path, Idempotency-Key, body."""
    body = orjson.loads(request.body)
    if request.kind == "contact":
        return {"method": "PUT", "path": CONTACT_PATH, "body": body}
    return {"method": "POST", "path": EVENT_PATH, "idempotency_key": request.ref, "body": body}
