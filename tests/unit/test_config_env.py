"""`${VAR}` in the source's paths, `sql.url` and `state`: read from the environment, so a
database password never sits in the config; an unset variable is a problem at its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.config import load_config
from sync.errors import ConfigError
from sync.sources import read_source
from tests.unit.conftest import WriteConfig


def test_a_csv_path_and_the_state_take_variables_from_the_environment(
    write_config: WriteConfig, tmp_path: Path
) -> None:
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "leads.csv").write_text("Email\nada@example.com\n")
    path = write_config(
        "name: t\nsource: {csv: '${EXPORTS}/leads.csv'}\ncontact: {email: Email}\n"
        "state: ${STATE_HOME}/loops\n"
    )
    env = {"EXPORTS": str(tmp_path / "exports"), "STATE_HOME": str(tmp_path / "var")}

    config = load_config(path, env=env)

    assert read_source(config)["Email"].to_list() == ["ada@example.com"]
    assert config.state_dir == tmp_path / "var" / "loops"


@pytest.mark.parametrize(
    ("source", "key", "line"),
    [
        ("{csv: '${EXPORTS}/leads.csv'}", "source.csv", 2),
        ("{parquet: '${EXPORTS}/a.parquet'}", "source.parquet", 2),
        ("{excel: '${EXPORTS}/a.xlsx'}", "source.excel", 2),
        ("{excel: {path: '${EXPORTS}/a.xlsx'}}", "source.excel.path", 2),
        (
            "\n  sql:\n    url: 'postgresql://app:${EXPORTS}@db/x'\n    query: q",
            "source.sql.url",
            4,
        ),
    ],
)
def test_an_unset_variable_is_a_problem_naming_the_key_and_the_line(
    write_config: WriteConfig, source: str, key: str, line: int
) -> None:
    path = write_config(f"name: t\nsource: {source}\ncontact: {{email: Email}}\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, env={"OTHER": "1"})

    [problem] = caught.value.problems
    assert (problem.path, problem.line) == (key, line)
    assert problem.message == "the environment variable EXPORTS is not set (${EXPORTS})"


def test_every_unset_variable_is_reported_with_the_other_problems(
    write_config: WriteConfig,
) -> None:
    path = write_config(
        "name: t\nsource: {csv: '${A}/${B}.csv'}\ncontact: {email: Email, bogus: 1}\nstate: ${C}\n"
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})

    found = {(problem.path, problem.message) for problem in caught.value.problems}
    assert ("source.csv", "the environment variables A and B are not set (${A}, ${B})") in found
    assert ("state", "the environment variable C is not set (${C})") in found
    assert any(path == "contact.bogus" for path, _ in found)
