"""Generated inputs for the benchmarks: a Clay-like table of N rows, as CSV and Parquet."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl

DATA = Path(__file__).resolve().parent / "data"

CONFIG = """\
name: bench
source:
  {kind}: {file}
loops:
  rate_limit: {rate}
contact:
  email: Email
  properties:
    firstName: First Name
    lastName: Last Name
    company: Company Name
    jobTitle: Job Title
    companySize: {{column: Employee Count, type: number}}
    enrichedAt: {{column: Enriched At, type: date}}
    source: {{value: clay}}
  mailing_lists:
    cm06f5v0e45nf0ml5754o9cix: Newsletter
events:
  - name: signup
    email: Email
    properties:
      plan: Plan
"""
# The custom properties CONFIG maps, as the benchmark's emulated account has them (a run checks
# the account before sending): the file given to `loops-sync emulator --properties`.
PROPERTIES = {
    "company": "string",
    "jobTitle": "string",
    "companySize": "number",
    "enrichedAt": "date",
}


def frame(rows: int, *, changed: int = 0) -> pl.DataFrame:
    """`rows` people; the first `changed` of them with a new job title."""
    i = pl.int_range(0, rows, eager=True)
    title = pl.when(i < changed).then(pl.lit("Chief Changer")).otherwise(pl.lit("Data Engineer"))
    return pl.DataFrame({"i": i}).select(
        pl.format("First{}", i).alias("First Name"),
        pl.format("Last{}", i % 997).alias("Last Name"),
        pl.format("person{}@example{}.com", i, i % 101).alias("Email"),
        pl.format("Company {}", i % 5003).alias("Company Name"),
        title.alias("Job Title"),
        ((i * 37) % 5000 + 1).cast(pl.String).alias("Employee Count"),
        pl.format("2026-0{}-1{}T10:2{}:00.000Z", i % 9 + 1, i % 10, i % 10).alias("Enriched At"),
        pl.when(i % 3 == 0).then(pl.lit("pro")).otherwise(pl.lit("free")).alias("Plan"),
        pl.when(i % 2 == 0).then(pl.lit("TRUE")).otherwise(pl.lit("FALSE")).alias("Newsletter"),
    )


def write_inputs(rows: int, *, changed: int = 0) -> dict[str, Path]:
    """CSV and Parquet files of `rows` rows (made once, then reused)."""
    DATA.mkdir(exist_ok=True)
    suffix = f"{rows}" + (f"-changed{changed}" if changed else "")
    paths = {"csv": DATA / f"people-{suffix}.csv", "parquet": DATA / f"people-{suffix}.parquet"}
    if not all(path.exists() for path in paths.values()):
        table = frame(rows, changed=changed)
        # Written aside, then renamed: an interrupted write is never reused as a whole input.
        table.write_csv(paths["csv"].with_suffix(".csv.part"))
        table.write_parquet(paths["parquet"].with_suffix(".parquet.part"))
        for path in paths.values():
            path.with_suffix(path.suffix + ".part").rename(path)
    return paths


def write_config(directory: Path, kind: str, source: Path | str, *, rate: float = 10) -> Path:
    """`source`: a file, or a YAML flow mapping (`{url: ..., query: ...}` for `sql`)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"bench-{kind}.yaml"
    path.write_text(CONFIG.format(kind=kind, file=source, rate=rate))
    return path


if __name__ == "__main__":
    # `python bench/data.py ROWS`: make the inputs in a process of their own (bench/scaling.py).
    print(write_inputs(int(sys.argv[1]))["csv"])
