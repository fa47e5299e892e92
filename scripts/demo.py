"""`make demo`: a real sync of sample_data/ into the bundled Loops emulator, run twice.

`check --create-properties` first gives the fresh emulated account the custom properties the
config maps (a run refuses to send values Loops would drop). The first run sends every good row of the Clay export and sets the bad ones aside; the second
finds nothing changed and sends nothing. Its state lives in a fresh temporary folder, so the
demo can be run again and again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from sync.emulator.server import running_emulator

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo.yaml"


def sync(env: dict[str, str], *args: str) -> int:
    command = [sys.executable, "-m", "sync", "run", str(CONFIG), *args]
    print(f"\n$ loops-sync run {CONFIG.relative_to(REPO)} {' '.join(args)}".rstrip(), flush=True)
    return subprocess.run(command, env=env, check=False).returncode


def check(env: dict[str, str]) -> int:
    command = [sys.executable, "-m", "sync", "check", str(CONFIG), "--create-properties"]
    print(f"\n$ loops-sync check {CONFIG.relative_to(REPO)} --create-properties", flush=True)
    return subprocess.run(command, env=env, check=False).returncode


def _writes(requests: list[dict[str, object]]) -> int:
    """Upserts and events: what a run sends, the key check (GET /v1/api-key) aside."""
    return sum(str(r["path"]).endswith(("/contacts/update", "/events/send")) for r in requests)


def main() -> int:
    with (
        tempfile.TemporaryDirectory(prefix="loops-sync-demo-") as state,
        running_emulator(rate_limit=20, latency_ms=40, api_key="demo-key") as emulator,
    ):
        env = os.environ | {
            "LOOPS_API_KEY": emulator.api_key,
            "LOOPS_BASE_URL": emulator.base_url,
            "LOOPS_SYNC_STATE": state,
        }
        print(f"Loops emulator at {emulator.base_url} (20 requests/s, 40 ms latency)")
        checked = check(env)
        first = sync(env)
        contacts = emulator.contacts()
        events = Counter(event["eventName"] for event in emulator.events())
        print(f"\nThe emulator now holds {len(contacts)} contacts and events {dict(events)}.")
        for contact in contacts[:3]:
            shown = {k: v for k, v in contact.items() if v not in (None, "", {})}
            print(f"  {shown}")
        rejects = Path(state) / "demo-rejects.csv"
        if rejects.exists():
            lines = rejects.read_text(encoding="utf-8").splitlines()
            print(f"\n{len(lines) - 1} rows were set aside in the rejects file, with reasons:")
            for line in lines[1:]:
                row, column, reason = next(iter(__import__("csv").reader([line])))[:3]
                print(f"  row {row:>3}  {column:<18} {reason[:90]}")
        before = _writes(emulator.requests())
        second = sync(env)
        after = _writes(emulator.requests())
        print(
            f"\nThe second run checked the API key and sent {after - before} contacts or events:"
            " nothing had changed."
        )
        print(f"Exit codes: {first} (some rows rejected), then {second}.")
    return 0 if checked == 0 and first in (0, 1) and second in (0, 1) and after == before else 1


if __name__ == "__main__":
    sys.exit(main())
