"""What planning costs as the source grows, beside a baseline commit, in one run.

`python bench/scaling.py` (the last part of `make bench`) measures the wall time and peak RSS of
`loops-sync plan` and `loops-sync run --dry-run`, for a first sync (an empty ledger) and a
nightly run (a ledger holding every row), from CSV, Parquet and a PostgreSQL table, at each
size of BENCH_SCALE_SIZES (default 1M, 5M and 10M rows). Each figure stands beside the same
measurement of BENCH_BASELINE (default 8398e39, the design before issue 9), checked out with
`git worktree add` and run by the same interpreter with that tree first on the path. Each ledger
is built by the code that reads it (bench/ledger_fill.py). Above 1M rows, the baseline and the
dry runs from Parquet and PostgreSQL are left out unless asked for (BENCH_BASELINE_UPTO,
BENCH_DRY_RUN_EVERY_INPUT_UPTO; see there why). A case that would likely not fit in
the memory available now is skipped and says so: other work shares the machine. Some inputs or
commands only: BENCH_SCALE_INPUTS (e.g. `postgres`), BENCH_SCALE_COMMANDS (e.g. `plan`); the
PostgreSQL table's name: BENCH_PG_TABLE. The table is printed and written to bench/results.json
under "scaling". Nothing here asserts a timing.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import DATA, write_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
GIT = shutil.which("git") or "git"
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Its own name where another bench may use the default one on the same server.
TABLE = os.environ.get("BENCH_PG_TABLE", "loops_sync_bench_people")
QUERY = f"select * from {TABLE}"  # noqa: S608  # a name we chose
INPUTS = ("csv", "parquet", "postgres")
CASES = tuple(os.environ.get("BENCH_SCALE_CASES", "first sync,nightly").split(","))
ALL_COMMANDS = {"plan": ("plan",), "run --dry-run": ("run", "--dry-run", "--quiet")}
# Some of the inputs and commands only, e.g. BENCH_SCALE_INPUTS=postgres BENCH_SCALE_COMMANDS=plan.
MEASURED_INPUTS = os.environ.get("BENCH_SCALE_INPUTS", ",".join(INPUTS)).split(",")
COMMANDS = {
    name: words
    for name, words in ALL_COMMANDS.items()
    if name in os.environ.get("BENCH_SCALE_COMMANDS", ",".join(ALL_COMMANDS)).split(",")
}
# Left free for the others sharing the machine; a case needing more than the rest is skipped.
RESERVE_MB = 2048
# A first guess of the peak before a smaller size has been measured (today's code, 2026-11).
GUESS_BYTES_PER_ROW = {"first sync": 2000, "nightly": 1200}
MARGIN = 1.25
# Above these sizes the cells that add time but no new knowledge are left out, and say so: the
# baseline grows linearly (issue 10: 1.3 KB a row, 5.4 GB at 4M rows), and sending a plan does
# not depend on where its rows came from. 0 measures every cell at every size.
BASELINE_UPTO = int(os.environ.get("BENCH_BASELINE_UPTO", "1000000"))
DRY_RUN_EVERY_INPUT_UPTO = int(os.environ.get("BENCH_DRY_RUN_EVERY_INPUT_UPTO", "1000000"))


@dataclass(frozen=True)
class Code:
    """A tree of loops-sync to measure: `python -P` with only `root` on PYTHONPATH imports it."""

    label: str
    root: Path
    commit: str

    def env(self, state: Path | None = None) -> dict[str, str]:
        env = os.environ | {"PYTHONPATH": str(self.root)}
        return env | {"LOOPS_SYNC_STATE": str(state)} if state else env

    def check_import(self) -> None:
        """The venv holds an editable install of the current tree: make sure it does not win."""
        found = subprocess.run(
            [PY, "-P", "-c", "import sync; print(sync.__file__)"],
            env=self.env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not Path(found).resolve().is_relative_to(self.root.resolve()):
            raise SystemExit(f"{self.label}: `import sync` found {found}, not {self.root}")
        print(f"{self.label}: {self.commit[:9]}, sync from {found}")


def git(*args: str) -> str:
    return subprocess.run(
        [GIT, *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


@contextmanager
def baseline_tree(ref: str) -> Iterator[Code]:
    commit = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    with tempfile.TemporaryDirectory(prefix="loops-sync-baseline-") as work:
        tree = Path(work) / "tree"
        git("worktree", "add", "--detach", "--quiet", str(tree), commit)
        try:
            yield Code("baseline", tree, commit)
        finally:
            subprocess.run([GIT, "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)


# --- inputs ---------------------------------------------------------------------------------------


def make_inputs(rows: int, configs: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """A config per input that could be made, and why the others could not."""
    subprocess.run([PY, str(HERE / "data.py"), str(rows)], check=True, capture_output=True)
    files = {kind: DATA / f"people-{rows}.{kind}" for kind in ("csv", "parquet")}
    made = {kind: write_config(configs, kind, path) for kind, path in files.items()}
    missing = {}
    why_not = load_postgres(files["csv"])
    if why_not:
        missing["postgres"] = why_not
    else:
        source = f'{{url: "{PG_URL}", query: "{QUERY}"}}'
        made["postgres"] = write_config(configs, "sql", source)
    return made, missing


def load_postgres(csv_file: Path) -> str | None:
    """The CSV's rows, as text, into TABLE through COPY; returns why that failed, if it did."""
    with csv_file.open(newline="", encoding="utf-8") as source:
        header = next(csv.reader(source))
    table = sql.Identifier(TABLE)
    columns = sql.SQL(", ").join(sql.SQL("{} text").format(sql.Identifier(c)) for c in header)
    try:
        with psycopg.connect(PG_URL, connect_timeout=5) as db:
            db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
            db.execute(sql.SQL("CREATE UNLOGGED TABLE {} ({})").format(table, columns))
            copy_in = sql.SQL("COPY {} FROM STDIN (FORMAT csv, HEADER true)").format(table)
            with db.cursor().copy(copy_in) as copy, csv_file.open("rb") as data:
                while chunk := data.read(1 << 20):
                    copy.write(chunk)
    except psycopg.Error as error:
        return f"PostgreSQL at {PG_URL}: {str(error).strip().splitlines()[0]}"
    return None


def drop_postgres() -> None:
    """The table takes a gigabyte at 5M rows, on a server others use."""
    try:
        with psycopg.connect(PG_URL, connect_timeout=5) as db:
            db.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(TABLE)))
    except psycopg.Error as error:
        print(f"could not drop {TABLE}: {error}")


# --- measuring ------------------------------------------------------------------------------------


def available_mb() -> float:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def too_big(needed_mb: float) -> str | None:
    """Why a command likely needing `needed_mb` at its peak should not start now, if so."""
    free = available_mb()
    if needed_mb * MARGIN + RESERVE_MB <= free:
        return None
    return f"needs about {needed_mb:,.0f} MB; {free:,.0f} MB available, {RESERVE_MB} MB kept free"


def guess_mb(done: list[dict[str, Any]], label: str, rows: int, **cell: str) -> float:
    """The peak of the same cell at the largest size up to `rows`, scaled to it; else a guess."""
    seen = [
        (r["rows"], r[label]["peak_rss_mb"])
        for r in done
        if r["rows"] <= rows
        and all(r[k] == v for k, v in cell.items())
        and "peak_rss_mb" in r.get(label, {})
    ]
    if seen:
        smaller, peak = max(seen)
        return float(peak * rows / smaller)
    return 150 + rows * GUESS_BYTES_PER_ROW[cell["case"]] / 2**20


def measure(
    code: Code, command: str, config: Path, state: Path, needed_mb: float
) -> dict[str, Any]:
    why_not = too_big(needed_mb)
    if why_not:
        return {"skipped": why_not}
    state.mkdir(parents=True, exist_ok=True)
    words = COMMANDS[command]
    argv = [PY, str(HERE / "measure.py"), PY, "-P", "-m", "sync", words[0], str(config), *words[1:]]
    out = subprocess.run(argv, env=code.env(state), capture_output=True, text=True, check=True)
    measured = json.loads(out.stdout)
    if measured["returncode"] != 0:
        lines = measured["stderr"].strip().splitlines() or [f"exit {measured['returncode']}"]
        return {"failed": lines[-1]}
    result = {k: measured[k] for k in ("wall_seconds", "peak_rss_mb", "cpu_seconds")}
    for dry_run in state.glob("*dry-run.ndjson"):
        result["requests"] = count_lines(dry_run)
        dry_run.unlink()  # 5M requests take gigabytes
    return result


def count_lines(path: Path) -> int:
    with path.open("rb") as lines:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: lines.read(1 << 20), b""))


def fill_ledger(code: Code, config: Path, state: Path, needed_mb: float) -> str | None:
    """The nightly ledger, written by `code` itself; returns why it was not, if it was not."""
    why_not = too_big(needed_mb)
    if why_not:
        return f"the ledger was not built: {why_not}"
    state.mkdir(parents=True, exist_ok=True)
    filled = subprocess.run(
        [PY, "-P", str(HERE / "ledger_fill.py"), str(config), str(state)],
        env=code.env(state),
        capture_output=True,
        text=True,
        check=False,
    )
    if filled.returncode != 0:
        lines = filled.stderr.strip().splitlines() or [f"exit {filled.returncode}"]
        return f"the ledger could not be built with this code: {lines[-1]}"
    return None


def left_out(rows: int, code: Code, kind: str, command: str) -> str | None:
    """Why this cell is not measured at this size, if it is not (see BASELINE_UPTO)."""
    if code.label == "baseline" and 0 < BASELINE_UPTO < rows:
        return f"measured up to {BASELINE_UPTO:,} rows (BENCH_BASELINE_UPTO); it grows linearly"
    if command != "plan" and kind != "csv" and 0 < DRY_RUN_EVERY_INPUT_UPTO < rows:
        return (
            f"from every input up to {DRY_RUN_EVERY_INPUT_UPTO:,} rows, then from CSV "
            "(BENCH_DRY_RUN_EVERY_INPUT_UPTO): sending does not depend on the input"
        )
    return None


def state_dir(work: Path, rows: int, code: Code, case: str) -> Path:
    """One per code and case: the first sync's ledger stays empty, the nightly one full."""
    return work / f"{rows}-{code.label}-{case.replace(' ', '-')}"


def scale(
    rows: int,
    codes: list[Code],
    work: Path,
    done: list[dict[str, Any]],
    earlier: list[dict[str, Any]],
) -> None:
    """Every cell at `rows`, the codes back to back in each, appended to `done` as measured;
    peaks are guessed from `earlier` cells and those done."""
    configs, missing = make_inputs(rows, work / f"configs-{rows}")
    configs = {kind: config for kind, config in configs.items() if kind in MEASURED_INPUTS}
    for kind, why in missing.items():
        print(f"  {rows} rows from {kind}: skipped, {why}")
    for case in CASES:
        not_built: dict[str, str] = {}
        if case == "nightly":
            for code in codes:
                if left_out(rows, code, "csv", "plan"):
                    continue
                # It plans as `plan` does, then walks every request in Python.
                plan = guess_mb(
                    [*earlier, *done],
                    code.label,
                    rows,
                    input="csv",
                    case="first sync",
                    command="plan",
                )
                state = state_dir(work, rows, code, case)
                why = fill_ledger(code, configs["csv"], state, plan * 1.2)
                if why:
                    not_built[code.label] = why
        for kind, config in configs.items():
            for command in COMMANDS:
                cell = {"rows": rows, "input": kind, "case": case, "command": command}
                for code in codes:
                    why_left_out = left_out(rows, code, kind, command)
                    if why_left_out:
                        cell[code.label] = {"skipped": why_left_out}
                        continue
                    if code.label in not_built:
                        cell[code.label] = {"skipped": not_built[code.label]}
                        continue
                    needed = guess_mb(
                        [*earlier, *done], code.label, rows, input=kind, case=case, command=command
                    )
                    state = state_dir(work, rows, code, case)
                    cell[code.label] = measure(code, command, config, state, needed)
                done.append(cell)
                print_row(cell, [c.label for c in codes])


# --- output ---------------------------------------------------------------------------------------


def figures(measured: dict[str, Any] | None) -> str:
    if not measured:
        return f"{'':>8} {'':>8}"
    if "peak_rss_mb" in measured:
        return f"{measured['wall_seconds']:>8.2f} {measured['peak_rss_mb']:>8.0f}"
    return f"{'skipped' if 'skipped' in measured else 'failed':>17}"


def print_header(codes: list[Code]) -> None:
    names = " | ".join(f"{c.label[:4] + ' s':>8} {c.label[:4] + ' MB':>8}" for c in codes)
    print(f"{'rows':>9} {'input':<9} {'case':<11} {'command':<14} {'requests':>8} | {names}")


def print_row(cell: dict[str, Any], labels: list[str]) -> None:
    counts = {
        str(cell[label].get("requests")) for label in labels if "requests" in cell.get(label, {})
    }
    requests = "/".join(sorted(counts)) if counts else "-"
    numbers = " | ".join(figures(cell.get(label)) for label in labels)
    print(
        f"{cell['rows']:>9} {cell['input']:<9} {cell['case']:<11} {cell['command']:<14} "
        f"{requests:>8} | {numbers}",
        flush=True,
    )
    for label in labels:
        why = cell.get(label, {}).get("skipped") or cell.get(label, {}).get("failed")
        if why:
            print(f"{'':>9} {label}: {why}", flush=True)


def machine() -> dict[str, Any]:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        total = int(meminfo.readline().split()[1]) / 2**20
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(total, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def save(results: dict[str, Any]) -> None:
    """Under "scaling" in bench/results.json, the other sections' figures kept. A cell measured
    again replaces the earlier one; the others stay, each naming the codes that measured it."""
    path = HERE / "results.json"
    everything = orjson.loads(path.read_bytes()) if path.exists() else {}
    cells = {_cell_key(c): c for c in earlier_cells()}
    cells |= {_cell_key(c): c | {"codes": results["codes"]} for c in results["cells"]}
    everything["scaling"] = results | {"cells": sorted(cells.values(), key=_cell_order)}
    path.write_bytes(orjson.dumps(everything, option=orjson.OPT_INDENT_2))


def earlier_cells() -> list[dict[str, Any]]:
    """The cells of earlier runs (to merge with, and to guess peaks from)."""
    path = HERE / "results.json"
    everything = orjson.loads(path.read_bytes()) if path.exists() else {}
    section = everything.get("scaling", {})
    codes = section.get("codes", {})
    return [{"codes": codes} | cell for cell in section.get("cells", [])]


def _cell_key(cell: dict[str, Any]) -> tuple[Any, ...]:
    return (cell["rows"], cell["input"], cell["case"], cell["command"])


def _cell_order(cell: dict[str, Any]) -> tuple[Any, ...]:
    return (
        cell["rows"],
        ("first sync", "nightly").index(cell["case"]),
        INPUTS.index(cell["input"]),
        list(ALL_COMMANDS).index(cell["command"]),
    )


def main() -> None:
    sizes = [
        int(s) for s in os.environ.get("BENCH_SCALE_SIZES", "1000000,5000000,10000000").split(",")
    ]
    now = Code(
        "now",
        ROOT,
        git("rev-parse", "HEAD")
        + ("+changes" if git("status", "--porcelain", "--", "sync") else ""),
    )
    with (
        baseline_tree(os.environ.get("BENCH_BASELINE", "8398e39")) as baseline,
        tempfile.TemporaryDirectory(prefix="loops-sync-scaling-") as work,
    ):
        codes = [now, baseline]
        for code in codes:
            code.check_import()
        results: dict[str, Any] = {
            "machine": machine(),
            "codes": {c.label: c.commit for c in codes},
            "reserve_mb": RESERVE_MB,
            "cells": [],
        }
        print(
            f"\n5. Scaling: plan and run --dry-run, now ({now.commit[:9]}) vs baseline ({baseline.commit[:9]})"
        )
        print_header(codes)
        guesses = earlier_cells()  # peaks measured before, for guessing before measuring
        try:
            for rows in sizes:
                measured: list[dict[str, Any]] = []
                scale(rows, codes, Path(work), measured, guesses)
                results["cells"] += measured
                guesses += measured
                save(results)
        finally:
            drop_postgres()


if __name__ == "__main__":
    main()
