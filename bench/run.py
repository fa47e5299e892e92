"""`make bench`: how close loops-sync comes to the rate limit, and what planning costs.

Every figure comes from this run, measured side by side with a baseline: the plain sequential
loop of Loops' own examples (one call after another) for sending, and a naive pure-Python
reader/mapper/hasher for planning. The emulator runs in its own process on loopback. Results
are printed as tables and written to bench/results.json. Nothing here asserts a timing.
Last, bench/scaling.py measures planning at millions of rows beside an older commit.
"""

from __future__ import annotations

import json
import os
import platform
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
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget import print_shared_budget, shared_budget
from data import PROPERTIES, write_config, write_inputs
from ledger_fill import mark_all_delivered

from sync.state import LEDGER_FILE

HERE = Path(__file__).resolve().parent
PY = sys.executable
KEY = "bench-key"
LATENCY_MS = 150
RESULTS: dict[str, Any] = {}


@contextmanager
def emulator(rate: int, latency_ms: int = 0) -> Iterator[str]:
    """A Loops emulator in its own process; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        account = Path(folder) / "properties.json"  # the account has what CONFIG maps
        account.write_bytes(orjson.dumps(PROPERTIES))
        command = [PY, "-m", "sync", "emulator", "--port", str(port), "--rate-limit", str(rate)]
        command += ["--latency-ms", str(latency_ms), "--api-key", KEY]
        command += ["--properties", str(account)]
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            yield base_url
        finally:
            process.terminate()
            process.communicate(timeout=10)


def counters(base_url: str) -> dict[str, Any]:
    return httpx.get(base_url.removesuffix("/api") + "/_emulator/counters").json()  # type: ignore[no-any-return]


def writes(base_url: str) -> int:
    """Upserts and events received: what a run sends, the checks before it (the key, the
    account's properties and lists) aside."""
    paths = counters(base_url)["paths"]
    return int(paths.get("/v1/contacts/update", 0) + paths.get("/v1/events/send", 0))


def measure(*command: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = subprocess.run(
        [PY, str(HERE / "measure.py"), *command],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def sync_env(base_url: str, state: Path) -> dict[str, str]:
    return os.environ | {
        "LOOPS_API_KEY": KEY,
        "LOOPS_BASE_URL": base_url,
        "LOOPS_SYNC_STATE": str(state),
    }


def loops_sync_run(config: Path, env: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    report_path = Path(env["LOOPS_SYNC_STATE"]) / "report.json"
    measured = measure(
        PY, "-m", "sync", "run", str(config), "--quiet", "--report", str(report_path), env=env
    )
    return measured, json.loads(report_path.read_text())


# --- 1. rate saturation ---------------------------------------------------------------------------


def sequential_loop(base_url: str, csv: Path, seconds: float) -> dict[str, float]:
    """Loops' examples, as a user would paste them into a loop: upsert, then event, then the next.

    For `seconds`, or until the rows run out."""
    rows = pl.read_csv(csv, infer_schema=False).iter_rows(named=True)
    headers = {"Authorization": f"Bearer {KEY}"}
    done = requests = rate_limited = 0
    cpu = time.process_time()
    started = time.perf_counter()
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
        for row in rows:
            if time.perf_counter() - started >= seconds:
                break
            contact = {
                "email": row["Email"],
                "firstName": row["First Name"],
                "jobTitle": row["Job Title"],
            }
            event = {
                "email": row["Email"],
                "eventName": "signup",
                "eventProperties": {"plan": row["Plan"]},
            }
            for method, path, body in (
                ("PUT", "/v1/contacts/update", contact),
                ("POST", "/v1/events/send", event),
            ):
                status = client.request(method, path, json=body).status_code
                requests += 1
                rate_limited += status == 429
            done += 1
    wall = time.perf_counter() - started
    return {
        "rows": done,
        "requests": requests,
        "seconds": wall,
        "requests_per_second": requests / wall,
        "rows_per_second": done / wall,
        "rate_limited": rate_limited,
        "cpu_seconds": time.process_time() - cpu,
    }


def rate_saturation(rate: int, seconds: float = 30) -> dict[str, Any]:
    rows = int(rate * seconds)
    files = write_inputs(rows)
    with tempfile.TemporaryDirectory() as work, emulator(rate, LATENCY_MS) as base_url:
        state = Path(work)
        config = write_config(state, "csv", files["csv"], rate=rate)
        _, report = loops_sync_run(config, sync_env(base_url, state))
        server = counters(base_url)
        arrivals = [
            r["received_at"]
            for r in httpx.get(base_url.removesuffix("/api") + "/_emulator/requests").json()
        ]
    with emulator(rate, LATENCY_MS) as base_url:
        baseline = sequential_loop(base_url, files["csv"], seconds=10)
    planned = report["contacts_new"] + report["events_new"]
    ours = {
        "rows": rows,
        "requests": report["requests"],
        "send_seconds": report["send_seconds"],
        "requests_per_second": report["requests_per_second"],
        "saturation": report["requests_per_second"] / rate,
        # What the server's limiter sees: from the first arrival to the last.
        "sustained_saturation": (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) / rate,
        "rate_limited": server["429"],
        "rate_limited_share": server["429"] / max(server["requests"], 1),
        "rows_per_second": rows / report["send_seconds"],
        "requests_per_row_unfolded": planned / rows,
        "requests_per_row": report["requests"] / rows,
    }
    return {
        "limit": rate,
        "latency_ms": LATENCY_MS,
        "loops_sync": ours,
        "sequential_loop": baseline,
        "speedup_rows": ours["rows_per_second"] / baseline["rows_per_second"],
    }


# --- 2. planning cost -------------------------------------------------------------------------------


def planning(rows: int) -> list[dict[str, Any]]:
    """`plan` of a first sync (empty ledger), then against a ledger holding every row (the
    nightly case the issue sets its targets for); the naive baseline does the same two."""
    files = write_inputs(rows)
    out = []
    with tempfile.TemporaryDirectory() as work:
        state = Path(work)
        env = os.environ | {"LOOPS_SYNC_STATE": work}
        configs = {kind: write_config(state, kind, files[kind]) for kind in ("csv", "parquet")}
        ledger = str(state / LEDGER_FILE)
        for ledger_rows in (0, rows):
            if ledger_rows:
                mark_all_delivered(configs["csv"], state)
            for kind, config in configs.items():
                measured = measure(PY, "-m", "sync", "plan", str(config), env=env)
                out.append(_planning_row("loops-sync plan", kind, rows, ledger_rows, measured))
            naive_args = [str(files["csv"])] + ([ledger] if ledger_rows else [])
            naive = measure(PY, str(HERE / "naive.py"), *naive_args)
            out.append(_planning_row("naive Python", "csv", rows, ledger_rows, naive))
    return out


def _planning_row(
    tool: str, kind: str, rows: int, ledger_rows: int, measured: dict[str, Any]
) -> dict[str, Any]:
    if measured["returncode"] != 0:
        raise RuntimeError(f"{tool} failed: {measured['stderr']}")
    return {
        "tool": tool,
        "input": kind,
        "rows": rows,
        "ledger_rows": ledger_rows,
        "wall_seconds": measured["wall_seconds"],
        "peak_rss_mb": measured["peak_rss_mb"],
        "rows_per_second": rows / measured["wall_seconds"],
    }


# --- 3. incremental runs ----------------------------------------------------------------------------


def incremental(rows: int, changed: int) -> dict[str, Any]:
    same = write_inputs(rows)
    edited = write_inputs(rows, changed=changed)
    with tempfile.TemporaryDirectory() as work, emulator(0) as base_url:
        state = Path(work)
        env = sync_env(base_url, state)
        measure(PY, "-m", "sync", "plan", str(write_config(state, "csv", same["csv"])), env=env)
        mark_all_delivered(write_config(state, "csv", same["csv"]), state)
        unchanged, unchanged_report = loops_sync_run(write_config(state, "csv", same["csv"]), env)
        sent_unchanged = writes(base_url)
        changed_config = write_config(state, "csv", edited["csv"], rate=2000)
        after_change, changed_report = loops_sync_run(changed_config, env)
        sent_changed = writes(base_url) - sent_unchanged
    return {
        "rows": rows,
        "unchanged": {
            "wall_seconds": unchanged["wall_seconds"],
            "peak_rss_mb": unchanged["peak_rss_mb"],
            "requests": sent_unchanged,
            "skipped_unchanged": unchanged_report["skipped_unchanged"],
        },
        "changed": {
            "changed_rows": changed,
            "wall_seconds": after_change["wall_seconds"],
            "decide_seconds": after_change["wall_seconds"] - changed_report["send_seconds"],
            "requests": sent_changed,
            "contacts_sent": changed_report["contacts_sent"],
        },
    }


# --- 4. client CPU ------------------------------------------------------------------------------------


def client_cpu(rows: int = 3000) -> dict[str, Any]:
    files = write_inputs(rows)
    with tempfile.TemporaryDirectory() as work, emulator(0) as base_url:
        state = Path(work)
        env = sync_env(base_url, state)
        config = write_config(state, "csv", files["csv"], rate=5000)
        planned = measure(PY, "-m", "sync", "plan", str(config), env=env)
        ran, report = loops_sync_run(config, env)
    with emulator(0) as base_url:
        baseline = sequential_loop(base_url, files["csv"], seconds=5)
    sending_cpu = ran["cpu_seconds"] - planned["cpu_seconds"]
    return {
        "requests": report["requests"],
        "cpu_seconds_per_1000_requests": 1000 * sending_cpu / report["requests"],
        "requests_per_second_unlimited": report["requests_per_second"],
        "sequential_loop_cpu_seconds_per_1000_requests": 1000
        * baseline["cpu_seconds"]
        / baseline["requests"],
        "sequential_loop_requests_per_second": baseline["requests_per_second"],
    }


# --- output -------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "polars": pl.__version__,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def print_tables(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(
        f"\nmachine: {m['cpus']} cores, {m['platform']}, Python {m['python']}, Polars {m['polars']}"
    )
    print(f"\n1. Rate saturation (emulator latency {LATENCY_MS} ms)")
    print(
        f"{'limit':>6} {'req/s':>7} {'of limit':>9} {'sustained':>9} {'429s':>5} {'req/row':>12} {'rows/s':>7} | {'loop req/s':>10} {'loop rows/s':>11} {'speed-up':>8}"
    )
    for r in results["rate_saturation"]:
        o, b = r["loops_sync"], r["sequential_loop"]
        per_row = f"{o['requests_per_row_unfolded']:.2f}→{o['requests_per_row']:.2f}"
        print(
            f"{r['limit']:>6} {o['requests_per_second']:>7.2f} {o['saturation']:>9.3f} "
            f"{o['sustained_saturation']:>9.3f} {o['rate_limited']:>5} "
            f"{per_row:>12} {o['rows_per_second']:>7.2f} | {b['requests_per_second']:>10.2f} "
            f"{b['rows_per_second']:>11.2f} {r['speedup_rows']:>7.1f}x"
        )
    print("\n2. Planning cost (read, map, validate, key, diff against the ledger)")
    print(
        f"{'tool':<16} {'input':<8} {'rows':>9} {'ledger':>9} {'seconds':>8} {'peak MB':>8} {'rows/s':>10}"
    )
    for r in results["planning"]:
        print(
            f"{r['tool']:<16} {r['input']:<8} {r['rows']:>9} {r['ledger_rows']:>9} "
            f"{r['wall_seconds']:>8.2f} {r['peak_rss_mb']:>8.0f} {r['rows_per_second']:>10.0f}"
        )
    inc = results["incremental"]
    print(f"\n3. Incremental run over {inc['rows']} rows")
    u, c = inc["unchanged"], inc["changed"]
    print(
        f"  unchanged: {u['wall_seconds']:.2f} s, {u['requests']} requests, peak {u['peak_rss_mb']:.0f} MB"
    )
    print(
        f"  {c['changed_rows']} changed: decided in {c['decide_seconds']:.2f} s, "
        f"{c['requests']} requests sent ({c['wall_seconds']:.1f} s in all)"
    )
    cpu = results["client_cpu"]
    print("\n4. Client CPU (emulator without a limit)")
    print(
        f"  loops-sync: {cpu['cpu_seconds_per_1000_requests']:.2f} CPU s per 1000 requests "
        f"({cpu['requests_per_second_unlimited']:.0f} req/s); sequential loop: "
        f"{cpu['sequential_loop_cpu_seconds_per_1000_requests']:.2f} CPU s per 1000 "
        f"({cpu['sequential_loop_requests_per_second']:.0f} req/s)"
    )


def main() -> None:
    sizes = [int(s) for s in os.environ.get("BENCH_SIZES", "10000,100000,1000000").split(",")]
    results: dict[str, Any] = {"machine": machine()}
    results["rate_saturation"] = [rate_saturation(10), rate_saturation(100)]
    results["planning"] = [row for size in sizes for row in planning(size)]
    results["incremental"] = incremental(sizes[-1], changed=sizes[-1] // 100)
    results["client_cpu"] = client_cpu()
    results["shared_budget"] = shared_budget()
    path = HERE / "results.json"
    kept = orjson.loads(path.read_bytes()) if path.exists() else {}
    path.write_bytes(orjson.dumps(kept | results, option=orjson.OPT_INDENT_2))
    print_tables(results)
    print_shared_budget(results["shared_budget"])
    # 5. Scaling, 6. the ledger's view and 7. memory while sending, each in a process of its
    # own: this one's memory must not count against their cases.
    for part in ("scaling.py", "held_build.py", "sending.py"):
        subprocess.run([PY, str(HERE / part)], check=True)


if __name__ == "__main__":
    main()
