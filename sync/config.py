"""The YAML config: typed, checked once at start, every problem reported together.

`load_config()` turns a file into a `Config` or raises one `ConfigError` listing each problem
with its key path, its line in the file and, for a misspelt key, the closest valid name (the
file is read, and its problems worded, by `sync.config_file`; `sync.config_model` says what is
valid). A `Config` is the checked model plus what comes from outside the file: its place, the
environment, the API key.
Column names are checked later, against the source's real columns (`check_columns`), because
only the source knows them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import (
    SecretStr,
    ValidationError,
)

from sync.budget import budget_place
from sync.config_file import (
    expand_variables,
    parse_yaml,
    validation_problems,
)
from sync.config_model import SyncConfig, known_keys
from sync.errors import ConfigError, ConfigProblem
from sync.ledger_db import PgState, is_postgresql
from sync.state import StateDir

__all__ = ["Config", "load_config"]


@dataclass(frozen=True)
class Config:
    """A checked config plus what comes from outside the file: its place and the environment,
    read once by `load_config`.

    `api_key` is the value of the variable `loops.api_key_env` names, trimmed (a key file saved
    with CRLF leaves a `\\r`), None if unset or blank; it prints as stars. Whether it can go in
    an HTTP header is checked only by a run that sends, so `plan` and `--dry-run` need no key.
    """

    file: Path
    spec: SyncConfig
    base_url: str
    state_dir: Path
    config_hash: str
    api_key: SecretStr | None
    # Where the team's rate budget is kept: a directory, or a postgresql:// URL; None: off.
    budget_place: str | None = None
    # A PostgreSQL state: the ledger, history and lock are kept there (`state_dir` then holds
    # only the run's local files).
    database: PgState | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def state(self) -> StateDir:
        """Every file this sync keeps between runs: ask it for a path, never build one."""
        return StateDir(self.state_dir, self.name, self.database)

    def resolve(self, path: str) -> Path:
        """Paths in the config are relative to the config file, not to the working directory."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.file.parent / candidate

    def source_columns(self) -> list[str]:
        """Every source column the mapping reads, in a stable order."""
        spec = self.spec
        columns: list[str] = []
        if spec.contact:
            columns += [c for c in (spec.contact.email, spec.contact.user_id) if c]
            columns += [p.column for p in spec.contact.properties.values() if p.column]
            columns += list(spec.contact.mailing_lists.values())
        for event in spec.events:
            columns += [c for c in (event.email, event.user_id) if c]
            columns += [p.column for p in event.properties.values() if p.column]
            columns += event.once_per
        return list(dict.fromkeys(columns))


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    """Read and check a config file; raise `ConfigError` with every problem found.

    `env` (os.environ by default) is read here and nowhere else: the API key, LOOPS_BASE_URL,
    LOOPS_SYNC_STATE, where the rate budget lives (LOOPS_SYNC_BUDGET, XDG_STATE_HOME, HOME), and
    the `${NAME}` variables in the source's paths, `sql.url` and `state`.
    """
    env = os.environ if env is None else env
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(file), [ConfigProblem("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(file), [ConfigProblem("", f"cannot read: {error}")]) from None
    raw, lines = parse_yaml(str(file), text)
    unset = expand_variables(raw, lines, env)
    try:
        spec = SyncConfig.model_validate(raw)
    except ValidationError as error:
        problems = [*unset, *validation_problems(error, lines, known_keys)]
        raise ConfigError(str(file), problems) from None
    if unset:
        raise ConfigError(str(file), unset)
    state_dir = _state_dir(file, spec, env)
    return Config(
        file=file.resolve(),
        spec=spec,
        base_url=_base_url(str(file), spec, env),
        state_dir=state_dir,
        config_hash=hashlib.sha256(text.encode()).hexdigest(),
        api_key=_api_key(spec, env),
        budget_place=budget_place(env, spec.state, state_dir),
        database=_database(str(file), spec, env),
    )


def _database(file: str, spec: SyncConfig, env: Mapping[str, str]) -> PgState | None:
    """The PostgreSQL state LOOPS_SYNC_STATE (else `state:`) names, if it is a URL; a bad one,
    or one without the driver installed, is a ConfigError that never shows the URL."""
    key, given = (
        ("LOOPS_SYNC_STATE", env["LOOPS_SYNC_STATE"])
        if env.get("LOOPS_SYNC_STATE")
        else ("state", spec.state or "")
    )
    if not is_postgresql(given.strip()):
        return None
    try:
        database = PgState.parse(given)
    except ValueError as error:
        raise ConfigError(file, [ConfigProblem(key, str(error))]) from None
    if importlib.util.find_spec("psycopg") is None:
        problem = "a PostgreSQL state needs psycopg: pip install 'loops-sync[postgres]'"
        raise ConfigError(file, [ConfigProblem(key, problem)])
    return database


def _state_dir(file: Path, spec: SyncConfig, env: Mapping[str, str]) -> Path:
    """LOOPS_SYNC_STATE, else `state:`, else `.loops-sync/` beside the config; with a
    PostgreSQL state, `.loops-sync/` beside the config, for the run's local files.

    A relative path in the environment is relative to the working directory, as any path typed
    in a shell is; only paths written in the config are relative to the config file.
    """
    given = env.get("LOOPS_SYNC_STATE") or spec.state or ""
    if is_postgresql(given.strip()):
        return (file.resolve().parent / ".loops-sync").resolve()
    if env.get("LOOPS_SYNC_STATE"):
        return Path(env["LOOPS_SYNC_STATE"]).expanduser().resolve()
    base = file.resolve().parent
    return (base / Path(spec.state).expanduser() if spec.state else base / ".loops-sync").resolve()


def _api_key(spec: SyncConfig, env: Mapping[str, str]) -> SecretStr | None:
    key = env.get(spec.loops.api_key_env, "").strip()
    return SecretStr(key) if key else None


def _base_url(file: str, spec: SyncConfig, env: Mapping[str, str]) -> str:
    """LOOPS_BASE_URL overrides the file's, and is held to the same rule (the value not echoed)."""
    override = env.get("LOOPS_BASE_URL")
    if not override:
        return spec.loops.base_url
    if not re.match(r"^https?://[^/\s]+", override):
        problem = ConfigProblem("LOOPS_BASE_URL", "must start with http:// or https://")
        raise ConfigError(file, [problem])
    return override.rstrip("/")
