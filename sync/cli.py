"""The command line: parse, call the library, render, pick the exit code. No logic lives here."""

from __future__ import annotations

import re
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click
import orjson

from sync import __version__
from sync.check import check_config
from sync.config import Config, load_config
from sync.config_tests import cases_report
from sync.emulator.cli import emulator_command
from sync.errors import ExitCode, Interrupted, StopRun
from sync.init import draft_config
from sync.ledger_move import export_state, import_state, rows_text
from sync.pipeline import Options, as_stop_run, plan_sync, run_history, run_sync
from sync.render import ProgressDisplay, render_summary
from sync.report import RejectLimit, RunReport
from sync.screens import cases_lines, check_lines, history_lines, plan_lines

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])
CONFIG = click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
LOADED = "loops_sync.config"  # the loaded config, in click's context: where a crash log goes
CLICK_OWN = (click.ClickException, click.exceptions.Exit, click.exceptions.Abort)


def _errors_to_exit_codes(command: F) -> F:
    """Whatever goes wrong is one clear message and a documented exit code, never a traceback:
    a bug's traceback goes to a log file, and the message says where."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CLICK_OWN:
            raise
        # A bug too ends in one message and its exit code: as_stop_run logs its traceback.
        except (Exception, KeyboardInterrupt, BaseExceptionGroup) as error:  # noqa: BLE001
            stop = _as_stop_run(error)
            click.echo(f"{'' if isinstance(stop, Interrupted) else 'error: '}{stop}", err=True)
            sys.exit(stop.exit_code)

    wrapper.__name__ = command.__name__
    wrapper.__doc__ = command.__doc__
    return wrapper  # type: ignore[return-value]  # same signature as `command`


def _load(path: Path) -> Config:
    """Load the config and remember it: a crash from here on is logged in its state directory."""
    config = load_config(path)
    click.get_current_context().meta[LOADED] = config
    return config


def _loaded() -> Config | None:
    config = click.get_current_context().meta.get(LOADED)
    return config if isinstance(config, Config) else None


def _as_stop_run(error: BaseException) -> StopRun:
    return as_stop_run(error, _loaded())


def _write_report(path: Path, report: RunReport) -> None:
    try:
        report.write_json(path)
    except OSError as error:  # the run is over: say so, and keep its exit code
        click.echo(f"error: cannot write the report to {path}: {error.strerror}", err=True)


def _failure_report(stop: StopRun) -> RunReport:
    """The report of a run that ended early: as far as it got, or (when it never started: a
    config error, say) the exit code and the message alone."""
    if stop.report is not None:
        return stop.report
    config = _loaded()
    report = RunReport(sync=config.name if config else "")
    report.record_error(stop)
    return report


def _main_help() -> str:
    codes = "\n".join(f"  {code.value:<4} {code.meaning}" for code in ExitCode)
    return (
        "Keep a Loops (loops.so) team's contacts and events in step with a table.\n\n"
        f"\b\nExit codes:\n{codes}"
    )


def parse_duration(text: str) -> float:
    """'50m', '1h30m', '90s' or plain seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not text or parts is None:
        raise click.BadParameter(f"'{text}' is not a duration like 50m, 1h30m or 90s")
    hours, minutes, seconds = (int(p or 0) for p in parts.groups())
    return hours * 3600.0 + minutes * 60.0 + seconds


def _reject_limit(text: str | None) -> RejectLimit | None:
    if text is None:
        return None
    try:
        return RejectLimit.parse(text)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--max-rejects'") from None


@click.group(help=_main_help(), context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="loops-sync")
def main() -> None:
    pass


@main.command()
@CONFIG
@click.option("--dry-run", is_flag=True, help="Write the exact payloads as NDJSON; send nothing.")
@click.option("--full", is_flag=True, help="Send every contact again (events are never repeated).")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    help="Send at most N contacts' requests; exit 5 with the rest left for the next run.",
)
@click.option(
    "--report",
    "report_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the run report as JSON.",
)
@click.option(
    "--max-duration",
    type=str,
    help="Stop starting requests after this long (e.g. 50m); exit 5 with work left.",
)
@click.option(
    "--max-rejects",
    type=str,
    help=(
        "Exit 0, not 1, while rows rejected for their data stay within N rows or N% of the "
        "rows read (they are still written and reported)."
    ),
)
@click.option(
    "--allow-removals",
    type=click.IntRange(min=0),
    help=(
        "Approve removing up to N contacts that left the source (contact.removed), over the "
        "limit that otherwise holds them back."
    ),
)
@click.option("-v", "--verbose", is_flag=True, help="Show every rejected or failed row.")
@click.option(
    "-q", "--quiet", is_flag=True, help="No progress output; only errors and the exit code."
)
@click.option(
    "--no-check",
    is_flag=True,
    help=(
        "Send even if the Loops account lacks a property or mailing list the config maps "
        "(normally checked before sending; exit 2 then)."
    ),
)
@click.option(
    "--baseline",
    is_flag=True,
    help=(
        "Record the source as delivered without sending anything: adopt an audience Loops "
        "already has (synced before by hand, by another tool, or under a lost ledger)."
    ),
)
@_errors_to_exit_codes
def run(
    config: Path,
    dry_run: bool,
    full: bool,
    limit: int | None,
    report_file: Path | None,
    max_duration: str | None,
    max_rejects: str | None,
    allow_removals: int | None,
    verbose: bool,
    quiet: bool,
    no_check: bool,
    baseline: bool,
) -> None:
    """Sync CONFIG's source into Loops, sending only what changed."""
    if baseline:
        _baseline_alone(dry_run=dry_run, full=full, limit=limit, max_duration=max_duration)
    progress = ProgressDisplay()
    options = Options(
        dry_run=dry_run,
        full=full,
        limit=limit,
        max_duration=parse_duration(max_duration) if max_duration else None,
        on_progress=None if quiet else progress,
        on_read=None if quiet else progress.reading,
        on_warning=None if quiet else progress.warning,
        handle_signals=True,
        check_account=not no_check,
        max_rejects=_reject_limit(max_rejects),
        baseline=baseline,
        on_first_run=_warn,  # even with --quiet: it comes before duplicates would go out
        allow_removals=allow_removals,
    )
    try:
        with _termination_as_interrupt(), progress:
            report = run_sync(_load(config), options)
    except CLICK_OWN:
        raise
    except (Exception, KeyboardInterrupt, BaseExceptionGroup) as error:
        stop = _as_stop_run(error)
        if report_file:  # also now: a cron job's report must never be last week's
            _write_report(report_file, _failure_report(stop))
        if stop is error:
            raise
        raise stop from error
    if report_file:
        _write_report(report_file, report)
    if not quiet:
        render_summary(report)
    if verbose and report.rejects_file:
        click.echo(Path(report.rejects_file).read_text(), err=True)
    sys.exit(report.exit_code)


def _baseline_alone(**others: object) -> None:
    """`--baseline` sends nothing: the options that shape sending have no meaning beside it."""
    given = [f"--{name.replace('_', '-')}" for name, value in others.items() if value]
    if given:
        raise click.UsageError(f"--baseline sends nothing: it takes no {', '.join(given)}")


def _warn(notice: str) -> None:
    click.echo(f"warning: {notice}", err=True)


@contextmanager
def _termination_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) end a run as Ctrl-C does, also while it reads or
    plans: the report is written and history closed, never a silent death. While sending, the
    run's own handlers take over (they let the requests in flight finish)."""

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@main.command()
@CONFIG
@click.option("--full", is_flag=True, help="As `run --full` would.")
@click.option("--json", "as_json", is_flag=True, help="The same as one JSON document, for CI.")
@_errors_to_exit_codes
def plan(config: Path, full: bool, as_json: bool) -> None:
    """Show what a run would send: counts, rejects by column and reason (also written to the
    rejects file), side effects, an ETA, sample payloads. No network."""
    with ProgressDisplay() as progress:
        preview = plan_sync(_load(config), full=full, on_read=progress.reading)
    report = preview.report
    if as_json:
        document = report.to_json() | {
            "eta_seconds": round(preview.eta_seconds, 1),
            "samples": preview.samples,
        }
        click.echo(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode())
        return
    for line in plan_lines(preview):
        click.echo(line)


@main.command()
@CONFIG
@click.option(
    "--create-properties",
    is_flag=True,
    help="Create in Loops the custom properties the mapping sends and the account lacks.",
)
@_errors_to_exit_codes
def check(config: Path, create_properties: bool) -> None:
    """Check CONFIG, its source's columns and, with an API key, the Loops account.

    \b
    Without a key: the config and its tests: cases (as `loops-sync test` runs them), the
    source's columns and their types against the mapping (the first rows are read, never the
    whole source), the `when` filters.
    With LOOPS_API_KEY (or the variable loops.api_key_env names): the key, and the account's
    custom properties and mailing lists against what the mapping sends. Nothing is sent,
    unless --create-properties.

    \b
    Exit codes: 0 all is well; 2 a problem in the config (a failing test case too), the
    source, or the account's properties and lists; 3 Loops refused the key or cannot be
    reached.
    """
    report = check_config(_load(config), create=create_properties)
    for line in check_lines(report, config):
        click.echo(line)
    sys.exit(report.exit_code)


@main.command("test")
@CONFIG
@_errors_to_exit_codes
def test_cases(config: Path) -> None:
    """Run the cases of CONFIG's `tests:` section: no network, no ledger, no source.

    \b
    Each case's rows are mapped and planned as a first sync would take them; what they produce
    (requests and rejected rows) is compared with what the case expects, and a difference is
    shown field by field.

    \b
    Exit codes: 0 every case passes; 1 a case fails; 2 a problem in the config (its tests:
    section included, each problem with its key and line), or no tests: section.
    """
    report = cases_report(_load(config))
    for line in cases_lines(report, config):
        click.echo(line)
    sys.exit(report.exit_code)


@main.command()
@CONFIG
@click.option("--limit", default=20, show_default=True, help="How many runs to list.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")
@_errors_to_exit_codes
def history(config: Path, limit: int, as_json: bool) -> None:
    """List the recent runs of CONFIG's sync, and how each ended."""
    loaded = _load(config)
    runs = run_history(loaded, limit)
    if as_json:
        click.echo(
            orjson.dumps([run.__dict__ for run in runs], option=orjson.OPT_INDENT_2).decode()
        )
        return
    if not runs:
        click.echo(f"no runs of '{loaded.name}' yet")
        return
    for line in history_lines(runs):
        click.echo(line)


@main.command()
@click.argument("source")
@click.option("--query", help="The SQL query, when SOURCE is a database URL.")
@click.option("--name", help="The sync's name (default: from the file's name).")
@_errors_to_exit_codes
def init(source: str, query: str | None, name: str | None) -> None:
    """Print a starting config for SOURCE: a CSV, Parquet or Excel file, or a database URL
    (postgresql://…, mysql://…, sqlite:///…) with --query.

    \b
    The email column is found by its name or its values; every other column becomes a
    contact property with a camelCase name and a type guessed from the first rows.
    Save it, then run `loops-sync check` and `loops-sync plan` on it:
      loops-sync init exports/leads.csv > leads.yaml
    """
    draft = draft_config(source, query=query, name=name)
    click.echo(draft.yaml(), nl=False)
    for note in draft.notes:
        click.echo(f"note: {note}", err=True)


@main.group()
def state() -> None:
    """Move a sync's ledger between states (a SQLite file, PostgreSQL)."""


FILE = click.argument("file", type=click.Path(dir_okay=False, path_type=Path))


@state.command("export")
@CONFIG
@FILE
@_errors_to_exit_codes
def state_export(config: Path, file: Path) -> None:
    """Write CONFIG's sync's ledger from its state into FILE, a new SQLite ledger."""
    moved = export_state(_load(config), file)
    click.echo(
        f"exported sync '{moved.sync}' from {moved.source} to {moved.target}: "
        f"{rows_text(moved.rows)}"
    )


@state.command("import")
@CONFIG
@FILE
@_errors_to_exit_codes
def state_import(config: Path, file: Path) -> None:
    """Add the sync's rows of the ledger FILE (an export, or a ledger.sqlite) to CONFIG's state."""
    moved = import_state(_load(config), file)
    click.echo(
        f"imported sync '{moved.sync}' from {moved.source} into {moved.target}: "
        f"{rows_text(moved.rows)}"
    )


main.add_command(emulator_command, "emulator")
