"""`loops-sync emulator`: the click command, in-process for --help, as a subprocess for real."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import httpx
import pytest
from click.testing import CliRunner

from sync.emulator.cli import emulator_command

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-emulator-test-secret-7f3a"  # noqa: S105 - a made-up key to look for in the output


def test_help() -> None:
    result = CliRunner().invoke(emulator_command, ["--help"])
    assert result.exit_code == 0
    for option in (
        "--host",
        "--port",
        "--api-key",
        "--rate-limit",
        "--latency-ms",
        "--fail-rate",
        "--drop-rate",
        "--hang-rate",
        "--seed",
        "--db",
        "--properties",
        "--lists",
    ):
        assert option in result.output
    assert "test-key" in result.output  # the documented development key


def _first_line(stream: IO[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail("the emulator printed no URL in time")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
def test_runs_prints_its_url_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "LOOPS_API_KEY": SECRET}
    command = [
        sys.executable,
        "-c",
        "from sync.emulator.cli import emulator_command; emulator_command()",
        "--port",
        "0",
        "--rate-limit",
        "0",
        "--db",
        str(tmp_path / "cli.sqlite"),
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = _first_line(process.stdout, timeout=15).strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api", url), url
        with httpx.Client(base_url=url, timeout=5) as client:
            ok = client.get("/v1/api-key", headers={"Authorization": f"Bearer {SECRET}"})
            assert ok.status_code == 200
            # The key comes from LOOPS_API_KEY, so the dev key is refused.
            dev = client.get("/v1/api-key", headers={"Authorization": "Bearer test-key"})
            assert dev.status_code == 401
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert SECRET not in out + err + url
