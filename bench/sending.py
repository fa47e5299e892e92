"""Memory while sending: a run of a 1M-row first sync, sampled as it sends.

`python bench/sending.py` (a part of `make bench`) plans a first sync of BENCH_SEND_ROWS rows
(default 1,000,000) and sends for BENCH_SEND_SECONDS (default 60 s, then `--max-duration` ends
the run with exit 5) against the emulator without a rate limit, sampling the process's resident
memory every half second. The plan is on disk and read a slice at a time, so memory should stay
flat however many requests are sent: the table shows it when sending starts, at each quarter of
the time, and at its peak. Nothing here asserts a timing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data import write_config, write_inputs
from run import PY, emulator, sync_env

ROWS = int(os.environ.get("BENCH_SEND_ROWS", "1000000"))
SECONDS = float(os.environ.get("BENCH_SEND_SECONDS", "60"))


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return None
    return None


def sent(base_url: str) -> int:
    counted = httpx.get(base_url.removesuffix("/api") + "/_emulator/counters").json()
    return int(counted["requests"])


def sending_memory() -> dict[str, Any]:
    files = write_inputs(ROWS)
    with tempfile.TemporaryDirectory() as work, emulator(0) as base_url:
        state = Path(work)
        config = write_config(state, "csv", files["csv"], rate=10_000)
        command = [PY, "-m", "sync", "run", str(config), "--quiet", "--no-check"]
        command += ["--max-duration", f"{SECONDS:.0f}s"]
        started = time.monotonic()
        process = subprocess.Popen(command, env=sync_env(base_url, state))
        samples: list[tuple[float, int, float]] = []  # seconds, requests sent, MB
        while process.poll() is None:
            time.sleep(0.5)
            memory = rss_mb(process.pid)
            if memory is not None:
                samples.append((time.monotonic() - started, sent(base_url), memory))
        process.wait()
    total = samples[-1][1] if samples else 0
    # From the first request after the checks to the last: not the run's ending.
    sending = [s for s in samples if s[1] > 3]
    sending = sending[: next((i + 1 for i, s in enumerate(sending) if s[1] == total), None)]
    if len(sending) < 4:
        return {"rows": ROWS, "failed": f"exit {process.returncode}, {len(sending)} samples"}
    first, last = sending[0], sending[-1]
    quarters = [sending[min(len(sending) - 1, len(sending) * q // 4)] for q in (1, 2, 3)]
    return {
        "rows": ROWS,
        "exit_code": process.returncode,
        "requests_sent": last[1],
        "send_seconds": last[0] - first[0],
        "rss_mb_when_sending_starts": first[2],
        "rss_mb_by_quarter": [q[2] for q in quarters] + [last[2]],
        "requests_by_quarter": [q[1] for q in quarters] + [last[1]],
        "peak_rss_mb_while_sending": max(s[2] for s in sending),
        "peak_rss_mb_planning": max((s[2] for s in samples if s[1] <= 3), default=0.0),
    }


def print_table(result: dict[str, Any]) -> None:
    print(f"\n7. Memory while sending: a first sync of {result['rows']:,} rows")
    if "failed" in result:
        print(f"  failed: {result['failed']}")
        return
    print(f"  planning peak: {result['peak_rss_mb_planning']:,.0f} MB")
    print(f"  sending starts: {result['rss_mb_when_sending_starts']:,.0f} MB")
    for requests, memory in zip(
        result["requests_by_quarter"], result["rss_mb_by_quarter"], strict=True
    ):
        print(f"  after {requests:>9,} requests: {memory:,.0f} MB")
    print(
        f"  peak while sending: {result['peak_rss_mb_while_sending']:,.0f} MB "
        f"({result['requests_sent']:,} requests in {result['send_seconds']:.0f} s)"
    )


def main() -> None:
    result = sending_memory()
    print_table(result)
    results = Path(__file__).resolve().parent / "results.json"
    stored = orjson.loads(results.read_bytes()) if results.exists() else {}
    stored["sending_memory"] = result
    results.write_bytes(orjson.dumps(stored, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
