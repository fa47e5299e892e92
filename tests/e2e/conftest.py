"""End-to-end: the real CLI in a subprocess against the emulator on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sync.account import DEFAULT_PROPERTIES, mapped_properties
from sync.config import load_config
from sync.emulator.server import EmulatorHandle, running_emulator
from sync.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
KEY_CHECK = "/v1/api-key"
# What a run asks before sending, besides the key: the account's properties and mailing lists.
ACCOUNT_CHECK = ("/v1/contacts/properties", "/v1/lists")


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator(rate_limit=0, api_key="e2e-key", request_log_size=0) as handle:
        yield handle


@dataclass
class Project:
    """A config, its source and its state directory in a temporary folder."""

    root: Path
    emulator: EmulatorHandle

    @property
    def config(self) -> Path:
        return self.root / "sync.yaml"

    @property
    def state(self) -> Path:
        return self.root / ".loops-sync"

    def write(self, config: str, csv: str | None = None, *, account: bool = True) -> None:
        """Write the config (and the CSV); `account`: the emulated team then has the custom
        properties the config maps, as a team that ran `check --create-properties` has (set
        up directly, so no request of it shows among the emulator's)."""
        self.config.write_text(textwrap.dedent(config))
        if csv is not None:
            (self.root / "people.csv").write_text(textwrap.dedent(csv).lstrip())
        if account:
            try:
                loaded = load_config(self.config, env=self.env())
            except ConfigError:
                return  # a test of a bad config: no run gets as far as the account
            properties = mapped_properties(loaded)
            custom = {k: v for k, v in properties.items() if k not in DEFAULT_PROPERTIES}
            if custom:
                self.emulator.set_properties(dict(custom))

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPS_")}
        env |= {"LOOPS_API_KEY": self.emulator.api_key, "LOOPS_BASE_URL": self.emulator.base_url}
        return env | extra

    def start(self, *args: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "sync", *args],
            cwd=self.root,
            env=self.env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sync", *args],
            cwd=self.root,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    def sync(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.run("run", str(self.config), "--quiet", *args, **env)

    def api_requests(self, path_end: str = "") -> list[dict[str, Any]]:
        """The requests that carried the sync's data, oldest first: the checks that start every
        real run (`GET /v1/api-key`, the account's properties and lists) are left out."""
        return [
            r
            for r in self.emulator.requests()
            if r["path"] not in (KEY_CHECK, *ACCOUNT_CHECK) and r["path"].endswith(path_end)
        ]

    def key_checks(self) -> int:
        return int(self.emulator.counters()["paths"].get(KEY_CHECK, 0))


@pytest.fixture
def project(tmp_path: Path, emulator: EmulatorHandle) -> Project:
    return Project(tmp_path, emulator)
