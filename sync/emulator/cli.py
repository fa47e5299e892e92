"""`loops-sync emulator`: run the Loops API emulator in the foreground.

Registered on the main command group by `sync.cli`; kept here so the emulator package stays
self-contained.
"""

from __future__ import annotations

from pathlib import Path

import click

from sync.emulator.account import (
    DEFAULT_LISTS,
    AccountFileError,
    MailingList,
    load_lists,
    load_properties,
)
from sync.emulator.app import DEV_API_KEY, EmulatorOptions
from sync.emulator.faults import Faults
from sync.emulator.server import serve

_RATE = click.FloatRange(0, 1)


DEFAULTS = Faults()


@click.command(
    "emulator",
    epilog=(
        "Point a Loops client at the printed base URL instead of https://app.loops.so/api. "
        "Inspection API, without auth: GET /_emulator/contacts, /events, /requests, "
        "/counters, /faults; POST /_emulator/faults, /clock, /reset, /properties. "
        "--properties and --lists take JSON as Loops answers GET /v1/contacts/properties "
        "and GET /v1/lists (save a real account's answers with curl to try a config "
        'against it); --properties also takes an object such as {"planName": "string"}.'
    ),
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    default=8787,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0 picks a free one).",
)
@click.option(
    "--api-key",
    envvar="LOOPS_API_KEY",
    default=DEV_API_KEY,
    show_default=False,
    help=(
        "The API key clients must send. Default: $LOOPS_API_KEY if set, else the development "
        f"key '{DEV_API_KEY}'. Never printed."
    ),
)
@click.option(
    "--rate-limit",
    default=DEFAULTS.rate_limit,
    show_default=True,
    type=click.IntRange(min=0),
    help="Requests per second before 429s (sliding window); 0 = unlimited.",
)
@click.option(
    "--latency-ms",
    default=DEFAULTS.latency_ms,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Delay added to every API answer.",
)
@click.option(
    "--fail-rate",
    default=DEFAULTS.fail_rate,
    show_default=True,
    type=_RATE,
    help="Share of requests answered 500 without being applied.",
)
@click.option(
    "--drop-rate",
    default=DEFAULTS.drop_rate,
    show_default=True,
    type=_RATE,
    help="Share of connections closed without an answer (not applied).",
)
@click.option(
    "--hang-rate",
    default=DEFAULTS.hang_rate,
    show_default=True,
    type=_RATE,
    help="Share of requests left waiting --hang-seconds before an answer.",
)
@click.option(
    "--hang-seconds",
    default=DEFAULTS.hang_seconds,
    show_default=True,
    type=click.FloatRange(min=0),
    help="How long a hanging request waits.",
)
@click.option(
    "--seed",
    default=DEFAULTS.seed,
    show_default=True,
    type=int,
    help="Seed of the fault draws (same seed, same faults).",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite file keeping contacts, events and idempotency keys across restarts.",
)
@click.option(
    "--properties",
    "properties_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON file of the team's custom contact properties at the start (default: none).",
)
@click.option(
    "--lists",
    "lists_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON file of the team's mailing lists (default: three sample lists).",
)
def emulator_command(
    *,
    host: str,
    port: int,
    api_key: str,
    rate_limit: int,
    latency_ms: float,
    fail_rate: float,
    drop_rate: float,
    hang_rate: float,
    hang_seconds: float,
    seed: int,
    db: Path | None,
    properties_file: Path | None,
    lists_file: Path | None,
) -> None:
    """Run a local emulator of the Loops API v1 (prints its base URL, Ctrl-C to stop)."""
    properties, lists = _account(properties_file, lists_file)
    options = EmulatorOptions.from_settings(
        api_key=api_key,
        rate_limit=rate_limit,
        latency_ms=latency_ms,
        fail_rate=fail_rate,
        drop_rate=drop_rate,
        hang_rate=hang_rate,
        hang_seconds=hang_seconds,
        seed=seed,
        db=db,
        properties=properties,
        lists=lists,
    )
    serve(options, host=host, port=port)


def _account(
    properties_file: Path | None, lists_file: Path | None
) -> tuple[dict[str, str], tuple[MailingList, ...]]:
    """The team's properties and lists from the files given; a bad file is a usage error."""
    try:
        properties = load_properties(properties_file) if properties_file else {}
        lists = load_lists(lists_file) if lists_file else DEFAULT_LISTS
    except AccountFileError as error:
        raise click.BadParameter(str(error)) from None
    return properties, lists
