"""`make bench`, the shared budget: 1, 2 and 4 syncs of one team at once against one emulator.

Each sync is its own process with its own config and state directory, and the same API key, so
they share one rate budget (`sync/budget.py`). They start together; once the emulator has seen
all of them send for `TOGETHER` seconds they are stopped (SIGTERM). Every figure comes from the
emulator's request log, over the window in which all of them were sending (from the last one's
first request to the first one's last): the combined requests a second, each run's part, and the
429s of the whole case (a run checks its key before it joins the budget: that check can meet a
full window). `python bench/budget.py` runs this part alone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson

PY = sys.executable
KEY = "bench-key"
LIMIT = 10
LATENCY_MS = 150
TOGETHER = 15.0  # seconds of sending together measured per case
ROWS = 600  # per run: more than any run sends before it is stopped
CONFIG = """\
name: {name}
source: {{csv: people.csv}}
loops: {{rate_limit: {limit}}}
contact: {{email: email, properties: {{firstName: name}}}}
"""


@contextmanager
def emulator() -> Iterator[str]:
    """The emulator in its own process, at LIMIT requests a second; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [PY, "-m", "sync", "emulator", "--port", str(port), "--api-key", KEY]
    command += ["--rate-limit", str(LIMIT), "--latency-ms", str(LATENCY_MS)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.communicate(timeout=10)


def requests_log(base_url: str) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = httpx.get(
        base_url.removesuffix("/api") + "/_emulator/requests"
    ).json()
    return log


def accepted(log: list[dict[str, Any]]) -> dict[str, list[float]]:
    """When the emulator accepted each run's contact upserts, by run (its emails' prefix)."""
    times: dict[str, list[float]] = {}
    for request in log:
        if request["status"] == 200 and request["path"].endswith("/contacts/update"):
            times.setdefault(request["body"]["email"].split("-")[0], []).append(
                request["received_at"]
            )
    return times


def start_sync(work: Path, name: str, base_url: str) -> subprocess.Popen[str]:
    directory = work / name
    directory.mkdir()
    rows = "".join(f"{name}-{i}@example.com,N{i}\n" for i in range(ROWS))
    (directory / "people.csv").write_text("email,name\n" + rows)
    (directory / "sync.yaml").write_text(CONFIG.format(name=name, limit=LIMIT))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPS_")}
    env |= {
        "LOOPS_API_KEY": KEY,
        "LOOPS_BASE_URL": base_url,
        "LOOPS_SYNC_BUDGET": str(work / "budget"),
    }
    return subprocess.Popen(
        [PY, "-m", "sync", "run", str(directory / "sync.yaml"), "--quiet", "--no-check"],
        cwd=directory,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def sent_together_for(by_run: dict[str, list[float]], runs: int) -> float:
    if len(by_run) < runs:
        return 0.0
    start = max(min(times) for times in by_run.values())
    return min(max(times) for times in by_run.values()) - start


def concurrent_syncs(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as directory, emulator() as base_url:
        work = Path(directory)
        names = [f"run{i}" for i in range(runs)]
        processes = [start_sync(work, name, base_url) for name in names]
        deadline = time.monotonic() + TOGETHER + 120
        while sent_together_for(accepted(requests_log(base_url)), runs) < TOGETHER:
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise RuntimeError(
                    "the syncs did not send together: "
                    + "".join(
                        p.stderr.read() for p in processes if p.stderr and p.poll() is not None
                    )
                )
            time.sleep(0.5)
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.communicate(timeout=60)
        log = requests_log(base_url)
    return _figures(log, names)


def _figures(log: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    by_run = accepted(log)
    start = max(min(times) for times in by_run.values())
    end = min(max(times) for times in by_run.values())
    inside = {name: [t for t in by_run[name] if start <= t <= end] for name in names}
    total = sum(len(times) for times in inside.values())
    return {
        "runs": len(names),
        "limit": LIMIT,
        "latency_ms": LATENCY_MS,
        "seconds_together": end - start,
        "requests_per_second": (total - 1) / (end - start),
        "of_limit": (total - 1) / (end - start) / LIMIT,
        "rate_limited": sum(1 for r in log if r["status"] == 429),
        "rate_limited_key_checks": sum(
            1 for r in log if r["status"] == 429 and r["path"].endswith("/api-key")
        ),
        "each_run": [
            {
                "requests_per_second": len(inside[name]) / (end - start),
                "part": len(inside[name]) / total,
            }
            for name in names
        ],
    }


def shared_budget() -> list[dict[str, Any]]:
    return [concurrent_syncs(runs) for runs in (1, 2, 4)]


def print_shared_budget(results: list[dict[str, Any]]) -> None:
    print(
        f"\nShared budget: one team's limit split by concurrent syncs (limit {LIMIT} req/s, latency {LATENCY_MS} ms)"
    )
    print(
        f"{'syncs':>5} {'seconds':>7} {'req/s':>6} {'of limit':>8} {'429s':>5}  each sync's req/s (part)"
    )
    for r in results:
        each = "  ".join(
            f"{run['requests_per_second']:.2f} ({run['part']:.0%})" for run in r["each_run"]
        )
        print(
            f"{r['runs']:>5} {r['seconds_together']:>7.1f} {r['requests_per_second']:>6.2f} "
            f"{r['of_limit']:>8.3f} {r['rate_limited']:>5}  {each}"
        )


if __name__ == "__main__":
    # Alone: the figures join bench/results.json as `make bench` would write them.
    figures = shared_budget()
    path = Path(__file__).resolve().parent / "results.json"
    kept = orjson.loads(path.read_bytes()) if path.exists() else {}
    path.write_bytes(orjson.dumps(kept | {"shared_budget": figures}, option=orjson.OPT_INDENT_2))
    print_shared_budget(figures)
