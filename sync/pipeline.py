"""`run_sync()`: read, map, plan, send, report. The CLI and the tests call the same functions."""

from __future__ import annotations

import shutil
import time
import weakref
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import polars as pl

from sync.account import require_account
from sync.baseline import record_plan
from sync.columns import ROW
from sync.config import Config
from sync.delivery import budget_warning, send_plan
from sync.errors import ConfigError, ConfigProblem
from sync.first_run import fresh_ledger, warn_first_run
from sync.held import Held
from sync.ledger import Ledger
from sync.lifecycle import as_stop_run, crash_log_path, ending_as_stop_run, recorded_in_history
from sync.lock import hold_lock
from sync.loops_api import (
    CONTACT_PATH,
    DELETE_PATH,
    EVENT_PATH,
    check_api_key,
    key_problem,
)
from sync.mapping import map_slices
from sync.model import ReadProgress, Request, RunRecord, SendProgress
from sync.plan import Gathered, Plan, plan_slices
from sync.read import Rows, read_source
from sync.report import RejectLimit, RunReport, reject_groups, write_rejects
from sync.sender import RetryPolicy
from sync.tally import count_left_by_limit, count_mapped

__all__ = [
    "Options",
    "PlanPreview",
    "as_stop_run",
    "crash_log_path",
    "plan_sync",
    "run_history",
    "run_sync",
]


@dataclass(frozen=True)
class Options:
    """How to run. Everything a test or a notebook may want to change, and nothing else."""

    dry_run: bool = False
    full: bool = False
    limit: int | None = None
    max_duration: float | None = None
    on_progress: Callable[[SendProgress], None] | None = None  # e.g. the CLI's progress bar
    on_read: Callable[[ReadProgress], None] | None = None  # rows read, while the source is read
    # Each warning known before sending (the plan's, a budget too short), as sending starts;
    # the report keeps them all the same.
    on_warning: Callable[[str], None] | None = None
    transport: httpx.AsyncBaseTransport | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    handle_signals: bool = False
    # Before sending: the account has the properties and mailing lists the mapping sends
    # (`sync.account`); False is `run --no-check`.
    check_account: bool = True
    # `--max-rejects`: rejected rows that still let the run exit 0 (reported all the same).
    max_rejects: RejectLimit | None = None
    # `run --baseline`: record the plan as delivered, sending nothing (`sync.baseline`); no key
    # is asked for, and the options about sending (dry_run, full, limit, max_duration) do not apply.
    baseline: bool = False
    # Told a first run's notice (`sync.first_run`) before anything is sent: the CLI prints it.
    on_first_run: Callable[[str], None] | None = None
    # `--allow-removals`: departed contacts a person approves removing, over the brake's limit.
    allow_removals: int | None = None


@dataclass(frozen=True)
class PlanPreview:
    """What `loops-sync plan` shows: counts, rejects by column and reason, an ETA, samples."""

    report: RunReport
    plan: Plan  # on disk in a spool of its own, removed once the plan is dropped
    eta_seconds: float
    samples: list[dict[str, object]]


def run_sync(config: Config, options: Options | None = None) -> RunReport:
    """Make Loops match the source, sending only what the ledger says Loops lacks.

    Whatever ends a run early leaves as a StopRun (Ctrl-C as Interrupted, a bug as an
    InternalError whose traceback is in the state directory) whose `report` holds the run's
    figures as far as it got; the run's history entry is closed with the reason.
    """
    options = options or Options()
    report = _new_report(config, dry_run=options.dry_run)
    report.started()
    try:
        with ending_as_stop_run(config, report):
            if options.dry_run:
                _dry_run(config, report, options)
            else:
                _sync(config, report, options)
    finally:
        if report.ended_at is None:  # ended early: the report still says when
            report.ended()
    return report


def _sync(config: Config, report: RunReport, options: Options) -> None:
    started = time.monotonic()
    api_key = None if options.baseline else _require_api_key(config)
    with hold_lock(config.state), _open_ledger(config) as ledger:
        fresh = fresh_ledger(ledger)  # before this run's own record
        run_id = ledger.start_run(config.config_hash)
        with (
            recorded_in_history(ledger, run_id, report),
            ending_as_stop_run(config, report),
            config.state.spool(locked=True) as spool,
        ):
            ready = _ready_to_send(config, ledger, report, spool, options)
            loops_rejects: list[tuple[int, str]] = []
            if api_key is None:  # --baseline
                _learn(config, ledger, ready)
                report.baseline = record_plan(ready.plan, ledger)
            else:
                warn_first_run(fresh, report, options.on_first_run)
                _check_before_sending(config, api_key, options)
                _learn(config, ledger, ready)
                _forewarn(config, ready.plan, report, options)
                loops_rejects = send_plan(
                    config, ready.plan, ledger, report, api_key=api_key, options=options
                )
            count_left_by_limit(report, ready.plan, options.limit)
            _finish(
                config,
                report=report,
                source=ready.source,
                rejects=ready.rejects,
                loops_rejects=loops_rejects,
                started=started,
                max_rejects=options.max_rejects,
            )


def _check_before_sending(config: Config, api_key: str, options: Options) -> None:
    """The key, then the account's properties and lists (`sync.account`): nothing is sent, or
    written to the ledger, when either is wrong."""
    check_api_key(
        config.base_url,
        api_key,
        timeout=config.spec.loops.timeout,
        transport=options.transport,
        handle_signals=options.handle_signals,
    )
    if options.check_account:
        require_account(
            config, api_key, transport=options.transport, handle_signals=options.handle_signals
        )


def _learn(config: Config, ledger: Ledger, ready: _Ready) -> None:
    """What planning found for the ledger besides the plan: adopted occurrences, identifiers."""
    ledger.adopt(ready.plan.adopted, _once_per_of(config))
    ledger.learn(ready.learned)


@dataclass(frozen=True)
class _Ready:
    """A run's work once planned, on disk in the spool: sending holds a slice of the plan at a
    time, not the source, the mapped rows or the plan whole. What stays in memory is small:
    the rejects, and the identifiers the ledger learns."""

    plan: Plan
    source: pl.LazyFrame  # for the rejects file: the source columns of the rows Loops refuses
    rejects: pl.DataFrame
    learned: pl.DataFrame


def _ready_to_send(
    config: Config, ledger: Ledger, report: RunReport, spool: Path, options: Options
) -> _Ready:
    """Read, map and plan, the source's slices kept in the spool as they are read, then put
    the plan there too."""
    rows = read_source(config, keep_in=spool, on_read=options.on_read)
    held = _held(config, ledger)
    gathered, plan = _map_and_plan(config, rows, held, options=options, spool=spool)
    count_mapped(report, gathered, plan)
    report.warnings[:0] = rows.notes
    return _Ready(plan, rows.kept(), gathered.rejects, gathered.learned)


def _forewarn(config: Config, plan: Plan, report: RunReport, options: Options) -> None:
    """Before the first request: a budget too short goes first among the warnings, and each
    warning known by now goes to `on_warning`, so a person reads them while it can still help."""
    too_short = budget_warning(
        config.spec.loops.rate_limit, plan.request_count, options.max_duration
    )
    if too_short is not None:
        report.warnings.insert(0, too_short)
    if options.on_warning is not None:
        for warning in report.warnings:
            options.on_warning(warning)


def _dry_run(config: Config, report: RunReport, options: Options) -> None:
    started = time.monotonic()
    with config.state.spool(locked=False) as spool:
        rows = read_source(config, keep_in=spool, on_read=options.on_read)
        with _open_ledger(config) as ledger:
            held, fresh = _held(config, ledger), fresh_ledger(ledger)
        gathered, plan = _map_and_plan(config, rows, held, options=options, spool=spool)
        count_mapped(report, gathered, plan)
        report.warnings[:0] = rows.notes
        warn_first_run(fresh, report)
        report.dry_run_file = str(_write_dry_run(config, plan, options.limit))
        _finish(
            config,
            report=report,
            source=rows.kept(),
            rejects=gathered.rejects,
            loops_rejects=[],
            started=started,
            max_rejects=options.max_rejects,
        )


def run_history(config: Config, limit: int = 20) -> list[RunRecord]:
    """The sync's latest runs, newest first, each with how it ended (`status`, `reason`)."""
    with _open_ledger(config) as ledger:
        return ledger.runs(limit)


def plan_sync(
    config: Config,
    *,
    full: bool = False,
    samples: int = 3,
    on_read: Callable[[ReadProgress], None] | None = None,
) -> PlanPreview:
    """What a run would send, without sending anything or taking the lock. The plan stays on
    disk in a folder of its own in the state directory, removed with the plan; the rejects
    file is written as a run writes it. `on_read`: rows read so far, as the source is read."""
    spool = config.state.scratch()
    report = _new_report(config, dry_run=True)
    try:
        rows = read_source(config, keep_in=spool, on_read=on_read)
        with _open_ledger(config) as ledger:
            held, fresh = _held(config, ledger), fresh_ledger(ledger)
        gathered, plan = _map_and_plan(config, rows, held, options=Options(full=full), spool=spool)
        first_requests = (r for job in plan.jobs(samples) for r in job.requests)
        sample = [_request_line(r) for _, r in zip(range(samples), first_requests, strict=False)]
        count_mapped(report, gathered, plan)
        report.warnings[:0] = rows.notes
        warn_first_run(fresh, report)
        _note_rejects(config, report, rows.kept(), gathered.rejects)
    except BaseException:
        shutil.rmtree(spool, ignore_errors=True)
        raise
    preview = PlanPreview(
        report=report,
        plan=plan,
        eta_seconds=plan.request_count / config.spec.loops.rate_limit,
        samples=sample,
    )
    # Removed with the plan (also at exit): the plan reads its parts from it, the preview may go.
    weakref.finalize(plan, shutil.rmtree, spool, ignore_errors=True)
    return preview


# --- stages -----------------------------------------------------------------------------------


def _held(config: Config, ledger: Ledger) -> Held:
    return ledger.held(_once_per_of(config))


def _once_per_of(config: Config) -> dict[str, list[str]]:
    return {event.name: event.once_per for event in config.spec.events}


def _map_and_plan(
    config: Config, rows: Rows, held: Held, *, options: Options, spool: Path
) -> tuple[Gathered, Plan]:
    """Map (pure), then plan against what Loops holds, in bounded memory (`sync.plan`)."""
    spec = config.spec
    mapped = map_slices(spec, rows.slices, rows.schema, ls1_keys=held.legacy)
    return plan_slices(
        spec,
        mapped,
        held,
        full=options.full,
        spool=spool,
        allow_removals=options.allow_removals,
    )


def _new_report(config: Config, *, dry_run: bool) -> RunReport:
    return RunReport(
        sync=config.name,
        dry_run=dry_run,
        config_path=str(config.file),
        rate_limit=config.spec.loops.rate_limit,
    )


def _open_ledger(config: Config) -> closing[Ledger]:
    return closing(Ledger(config.state.ledger, config.name))


def _require_api_key(config: Config) -> str:
    """The key a run that sends needs (`plan` and a dry run never ask): a ConfigError naming
    the variable when it is unset or cannot go in an HTTP header, never showing the key."""
    variable = config.spec.loops.api_key_env
    if config.api_key is None:
        problem = f"the environment variable {variable} is not set (it holds the Loops API key)"
        raise ConfigError(str(config.file), [ConfigProblem("loops.api_key_env", problem)])
    key = config.api_key.get_secret_value()
    found = key_problem(key)
    if found is not None:
        problem = (
            f"the environment variable {variable} holds {found}, which cannot be sent "
            "in an HTTP header: copy the key again from Loops (Settings → API)"
        )
        raise ConfigError(str(config.file), [ConfigProblem("loops.api_key_env", problem)])
    return key


def _finish(
    config: Config,
    *,
    report: RunReport,
    source: pl.DataFrame | pl.LazyFrame,
    rejects: pl.DataFrame,
    loops_rejects: list[tuple[int, str]],
    started: float,
    max_rejects: RejectLimit | None,
) -> None:
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
    _note_rejects(config, report, source, rejects)
    if max_rejects is not None:
        report.rejects_allowed = max_rejects.rows(report.rows_read)
    report.wall_seconds = time.monotonic() - started
    report.exit_code = report.decide_exit_code()
    report.ended()


def _note_rejects(
    config: Config, report: RunReport, source: pl.DataFrame | pl.LazyFrame, rejects: pl.DataFrame
) -> None:
    """The rejects file, and the rejects by column and reason in the report."""
    path = write_rejects(config.state.rejects_file, source, rejects)
    report.rejects_file = str(path) if path else None
    groups = reject_groups(rejects)
    report.rejects, report.rejects_more = groups.shown, groups.more


def _write_dry_run(config: Config, plan: Plan, limit: int | None) -> Path:
    config.state.make()
    path = config.state.dry_run_file
    with path.open("wb") as out:
        for job in plan.jobs(limit):
            for request in job.requests:
                out.write(orjson.dumps(_request_line(request, parsed=False)) + b"\n")
    return path


def _request_line(request: Request, *, parsed: bool = True) -> dict[str, object]:
    """A request as the dry run and `plan` show it: method, path, Idempotency-Key, body.
    `parsed=False`: the body as the bytes it is (canonical JSON), for writing as JSON again
    without parsing it (a dry run of 1M requests parsed and wrote 1M bodies a second time)."""
    body = orjson.loads(request.body) if parsed else orjson.Fragment(request.body)
    if request.kind == "removal" and request.ref == "delete":
        return {"method": "POST", "path": DELETE_PATH, "body": body}
    if request.kind in ("contact", "removal"):  # a removal by upsert: subscribed or lists false
        return {"method": "PUT", "path": CONTACT_PATH, "body": body}
    return {"method": "POST", "path": EVENT_PATH, "idempotency_key": request.ref, "body": body}
