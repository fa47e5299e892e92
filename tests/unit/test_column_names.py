"""A mapped column the source lacks: the suggestion shows what the header really holds."""

from __future__ import annotations

import polars as pl
import pytest

from sync.config import load_config
from sync.errors import ConfigError
from sync.source_columns import check_columns
from tests.unit.conftest import WriteConfig

CONFIG = """
name: people
source: {csv: people.csv}
contact:
  email: Email
  properties:
    firstName: First Name
"""


def message_for(write_config: WriteConfig, header: list[str], config: str = CONFIG) -> str:
    with pytest.raises(ConfigError) as caught:
        check_columns(load_config(write_config(config), env={}), dict.fromkeys(header, pl.String))
    [problem] = caught.value.problems
    return problem.message


def test_a_header_with_a_non_breaking_space_is_shown_with_it_visible(
    write_config: WriteConfig,
) -> None:
    message = message_for(write_config, ["Email", "First\u00a0Name"])

    assert "did you mean 'First\\u00a0Name'?" in message
    assert "NO-BREAK SPACE" in message
    assert '"First\\u00a0Name"' in message  # how to write it in the YAML
    assert "\u00a0" not in message


def test_a_header_with_a_zero_width_space_is_shown_with_it_visible(
    write_config: WriteConfig,
) -> None:
    message = message_for(write_config, ["Email", "First Name\u200b"])

    assert "did you mean 'First Name\\u200b'?" in message
    assert "ZERO WIDTH SPACE" in message


def test_an_invisible_character_written_in_the_config_is_shown_too(
    write_config: WriteConfig,
) -> None:
    config = CONFIG.replace("First Name", '"First\\u00a0Name"')

    message = message_for(write_config, ["Email", "First Name"], config)

    assert "column 'First\\u00a0Name' is not in the source" in message
    assert "did you mean 'First Name'?" in message


def test_a_plain_suggestion_is_shown_as_before(write_config: WriteConfig) -> None:
    message = message_for(write_config, ["Email", "First name"])

    assert message == "column 'First Name' is not in the source; did you mean 'First name'?"
