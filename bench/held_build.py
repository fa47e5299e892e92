"""What the ledger's view for planning (`Held`) costs at 1M and 10M ledger rows, beside a baseline.

`python bench/held_build.py` (the last part of `make bench`) builds, once, a synthetic
ledger per size of BENCH_HELD_SIZES (default 1M and 10M: N contacts and N signup events, as a
first sync of the bench config leaves them; bench/ledger_fill.py `fill_synthetic`) in
bench/data/. Then, in a process of its own per code (this tree, and BENCH_HELD_BASELINE,
default d12b2c3: strings and Polars joins, the design before bounded memory), it measures:

- build: `Ledger(path, "bench").held()`, wall and CPU seconds, and the peak RSS just after;
- look-ups: every payload hash and event key the ledger holds, asked again 50,000 at a time as
  settling a nightly run over unchanged rows asks them (`holds_payloads`, `event_matches`);
  the time excludes making the texts asked; every one must be found;
- the process' peak RSS at the end.

Beside them, this tree against the same ledger kept in PostgreSQL (row `pg`; bench/ledger_fill_pg.py,
BENCH_POSTGRES): planning against a PostgreSQL ledger should stay within the time and memory of
the SQLite case. Skipped, saying why, without a server.

A case that would not fit in the memory available now is skipped and says so (bench/scaling.py's
rule). The table is printed and written to bench/results.json under "held". Nothing here asserts
a timing.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # `python -P` (the measuring child) does not put it there

from data import DATA  # noqa: E402  # after the path above
from ledger_fill import fill_synthetic, synthetic_hash, synthetic_key  # noqa: E402
from ledger_fill_pg import pg_ledger  # noqa: E402
from scaling import ROOT, Code, baseline_tree, git, machine, too_big  # noqa: E402

PY = sys.executable
SYNC = "bench"
ASKED = 50_000  # values per look-up, as a slice of the source is settled
GUESS_MB_PER_MILLION = {
    "now": 150,
    "baseline": 450,
    "pg": 150,
}  # before a smaller size was measured
LEDGER_BYTES_PER_ROW = 760  # on disk: a contact and an event


# --- the measuring child: `python -P bench/held_build.py measure LEDGER ROWS` -----------------


def measure_here(ledger: str, rows: int) -> dict[str, Any]:
    """Run with the code under test first on PYTHONPATH. `ledger`: a file, or a PostgreSQL URL."""
    from sync.ledger import Ledger  # noqa: PLC0415  # the code under test

    place: Any = Path(ledger)
    if ledger.startswith("postgresql://"):
        from sync.ledger_db import PgState  # noqa: PLC0415  # this tree only

        place = PgState.parse(ledger)
    started, cpu = time.perf_counter(), time.process_time()
    held = Ledger(place, SYNC).held()
    built = {
        "build_seconds": time.perf_counter() - started,
        "build_cpu_seconds": time.process_time() - cpu,
        "build_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    asking = found = 0.0
    for start in range(0, rows, ASKED):
        numbers = range(start, min(rows, start + ASKED))
        hashes = pl.Series("hash", [synthetic_hash(i) for i in numbers])
        keys = pl.Series("key_email", [synthetic_key(i) for i in numbers])
        nothing = pl.Series([None] * len(numbers), dtype=pl.String)
        occurrences = pl.DataFrame({"key_email": keys, "key_user": nothing, "legacy": nothing})
        clock = time.perf_counter()
        payloads = held.holds_payloads(hashes)
        by_email, by_user = held.event_matches(occurrences)
        asking += time.perf_counter() - clock
        found += payloads.sum() + (by_email | by_user).sum()
    if found != 2 * rows:
        raise SystemExit(f"{found} of the {2 * rows} values the ledger holds were found")
    return built | {
        "lookup_seconds": asking,
        "lookups": 2 * rows,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


# --- the driver -----------------------------------------------------------------------------------


def ledger_file(rows: int) -> Path | str:
    """The synthetic ledger of `rows` rows, built once; or why it could not be."""
    from sync.ledger_schema import SCHEMA_VERSION  # noqa: PLC0415  # this tree's

    path = DATA / f"ledger-v{SCHEMA_VERSION}-{rows}.sqlite"
    if path.exists():
        return path
    needed = rows * LEDGER_BYTES_PER_ROW * 2  # the file, and SQLite's sorter beside it
    free = shutil.disk_usage(DATA.parent).free
    if free < needed:
        return f"the ledger needs about {needed / 2**30:.1f} GiB of disk, {free / 2**30:.1f} free"
    DATA.mkdir(exist_ok=True)
    part = path.with_suffix(".part")
    part.unlink(missing_ok=True)
    print(f"  building a ledger of {rows:,} contacts and events in {path} (once)", flush=True)
    fill_synthetic(part, SYNC, rows)
    part.rename(path)
    return path


def measure(code: Code, ledger: Path | str, rows: int, needed_mb: float) -> dict[str, Any]:
    why_not = too_big(needed_mb)
    if why_not:
        return {"skipped": why_not}
    argv = [PY, "-P", str(Path(__file__).resolve()), "measure", str(ledger), str(rows)]
    out = subprocess.run(argv, env=code.env(), capture_output=True, text=True, check=False)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or [f"exit {out.returncode}"]
        return {"failed": lines[-1]}
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def guess_mb(done: list[dict[str, Any]], label: str, rows: int) -> float:
    seen = [(r["rows"], r[label]["peak_mb"]) for r in done if "peak_mb" in r.get(label, {})]
    if seen:
        smaller, peak = max(seen)
        return float(peak * rows / smaller)
    return 100 + GUESS_MB_PER_MILLION[label] * rows / 1e6


def print_row(cell: dict[str, Any], labels: list[str]) -> None:
    for label in labels:
        m = cell[label]
        why = m.get("skipped") or m.get("failed")
        if why:
            print(f"{cell['rows']:>11,} {label:<9} {why}", flush=True)
            continue
        per_million = 1e6 * m["lookup_seconds"] / m["lookups"]
        print(
            f"{cell['rows']:>11,} {label:<9} {m['build_seconds']:>8.1f} {m['build_cpu_seconds']:>8.1f} "
            f"{m['build_peak_mb']:>9.0f} {m['lookup_seconds']:>9.1f} {per_million:>10.2f} "
            f"{m['peak_mb']:>8.0f}",
            flush=True,
        )


def save(results: dict[str, Any]) -> None:
    """Under "held" in bench/results.json, the other sections' figures kept."""
    path = HERE / "results.json"
    everything = orjson.loads(path.read_bytes()) if path.exists() else {}
    everything["held"] = results
    path.write_bytes(orjson.dumps(everything, option=orjson.OPT_INDENT_2))


def main() -> None:
    sizes = [int(s) for s in os.environ.get("BENCH_HELD_SIZES", "1000000,10000000").split(",")]
    changed = "+changes" if git("status", "--porcelain", "--", "sync") else ""
    now = Code("now", ROOT, git("rev-parse", "HEAD") + changed)
    with baseline_tree(os.environ.get("BENCH_HELD_BASELINE", "d12b2c3")) as baseline:
        codes = [now, baseline]
        for code in codes:
            code.check_import()
        results: dict[str, Any] = {
            "machine": machine(),
            "codes": {c.label: c.commit for c in codes},
            "cells": [],
        }
        print(
            f"\n6. The ledger's view for planning (Held): now vs baseline ({baseline.commit[:9]}); "
            "pg: now, the same ledger in PostgreSQL"
        )
        print(
            f"{'ledger rows':>11} {'code':<9} {'build s':>8} {'cpu s':>8} {'build MB':>9} "
            f"{'lookups s':>9} {'s per 1M':>10} {'peak MB':>8}"
        )
        for rows in sizes:
            ledger = ledger_file(rows)
            cell: dict[str, Any] = {"rows": rows}
            for code in codes:
                if isinstance(ledger, str):
                    cell[code.label] = {"skipped": ledger}
                else:
                    needed = guess_mb(results["cells"], code.label, rows)
                    cell[code.label] = measure(code, ledger, rows, needed)
            url, why_not = pg_ledger(rows, SYNC)
            needed = guess_mb(results["cells"], "pg", rows)
            cell["pg"] = {"skipped": why_not} if why_not else measure(now, url, rows, needed)
            results["cells"].append(cell)
            print_row(cell, [*(c.label for c in codes), "pg"])
            save(results)


if __name__ == "__main__":
    if sys.argv[1:2] == ["measure"]:
        print(json.dumps(measure_here(sys.argv[2], int(sys.argv[3]))))
    else:
        main()
