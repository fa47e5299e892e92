"""A database that cannot be reached or refuses the login: one message, at once, no password.

The source reaches the server once itself first, then the driver (ADBC's libpq, PyMySQL)
connects once and says why a login is refused; nothing is retried or logged. The servers are
this machine's PostgreSQL and MariaDB (in CI, CI=true, one that cannot be reached fails the
test; elsewhere it is skipped).
"""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path

import psycopg
import pymysql
import pytest

from sync.config import load_config
from sync.errors import SourceError
from sync.sources import read_source
from tests.test_sql_sources import POSTGRES, unreachable

SECRET = "hunter2secret"  # noqa: S105  # a test password, to be masked


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def refusal_of(tmp_path: Path, url: str, env: dict[str, str] | None = None) -> str:
    path = tmp_path / "sync.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            name: db-users
            source:
              sql: {{url: "{url}", query: "select * from users"}}
            contact: {{email: email}}
            """
        )
    )
    with pytest.raises(SourceError) as caught:
        read_source(load_config(path, env=env or {}))
    return str(caught.value)


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_a_database_nobody_listens_for_is_one_message_without_the_password(
    tmp_path: Path, scheme: str, capfd: pytest.CaptureFixture[str]
) -> None:
    port = free_port()

    message = refusal_of(tmp_path, f"{scheme}://app:{SECRET}@127.0.0.1:{port}/test")

    assert f"source.sql.url: cannot connect to {scheme}://app:***@127.0.0.1:{port}/test" in message
    assert "refused" in message
    assert SECRET not in message
    assert len(message.splitlines()) == 1
    assert capfd.readouterr().err == ""


def test_a_postgresql_login_refused_says_why_without_the_password(tmp_path: Path) -> None:
    try:
        psycopg.connect(POSTGRES, connect_timeout=5).close()
    except psycopg.OperationalError as error:
        unreachable("PostgreSQL at 127.0.0.1:5432", error)

    message = refusal_of(tmp_path, f"postgresql://nobody_words:{SECRET}@127.0.0.1:5432/test")

    assert 'role "nobody_words" does not exist' in message
    assert SECRET not in message


def test_a_mariadb_login_refused_says_why_without_the_password(tmp_path: Path) -> None:
    try:
        pymysql.connect(host="127.0.0.1", port=3306, user="root", connect_timeout=5).close()
    except pymysql.err.OperationalError as error:
        unreachable("MariaDB at 127.0.0.1:3306", error)

    message = refusal_of(tmp_path, f"mysql://root:{SECRET}@127.0.0.1:3306/test")

    assert "Access denied for user 'root'" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("url", "env"),
    [
        ("postgresql://app:${DB_PASSWORD}@127.0.0.1:PORT/test", {"DB_PASSWORD": SECRET}),
        ("${DATABASE_URL}", {"DATABASE_URL": f"postgresql://app:{SECRET}@127.0.0.1:PORT/test"}),
    ],
)
def test_a_password_from_the_environment_is_masked_too(
    tmp_path: Path, url: str, env: dict[str, str]
) -> None:
    port = str(free_port())
    env = {name: value.replace("PORT", port) for name, value in env.items()}

    message = refusal_of(tmp_path, url.replace("PORT", port), env)

    assert f"cannot connect to postgresql://app:***@127.0.0.1:{port}/test" in message
    assert SECRET not in message


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_a_password_given_as_a_url_parameter_is_masked_too(tmp_path: Path, scheme: str) -> None:
    """libpq reads `?password=`: a message that names the database must not show it."""
    port = free_port()

    message = refusal_of(tmp_path, f"{scheme}://app@127.0.0.1:{port}/test?password={SECRET}")

    assert "password=***" in message
    assert SECRET not in message
