"""Read a SQL source a slice at a time: SQLite through the standard library, PostgreSQL through
the ADBC libpq driver (`sync/sql_postgres.py`), MySQL/MariaDB through PyMySQL's unbuffered
cursor (`sync/sql_mysql.py`). Both servers' readers stream: the server sends rows as slices are
taken, so memory does not grow with the table.

The server is reached here first, once, so that one that is not there is one message at once;
the driver's own connection then says why a login is refused. The password is never shown:
messages name the database by its URL with `***` for the password.
"""

from __future__ import annotations

import socket
import sqlite3
import urllib.parse
from collections.abc import Iterator

import polars as pl

from sync.config import Config
from sync.config_model import SourceConfig
from sync.errors import SourceError
from sync.sql_common import cannot_connect, redact_url
from sync.sql_mysql import open_mysql
from sync.sql_postgres import open_postgres

__all__ = ["open_sql", "redact_url"]

CONNECT_TIMEOUT = 10  # seconds: a database that takes longer to answer is not there
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}
# Each URL scheme, as the family of servers it reaches.
FAMILIES = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}


def open_sql(
    config: Config, source: SourceConfig, slice_rows: int
) -> tuple[pl.Schema, Iterator[pl.DataFrame]]:
    """The query's schema now, its rows a slice of at most `slice_rows` at a time."""
    assert source.sql is not None  # noqa: S101  # the config validated that this kind is set
    url, query = source.sql.url, source.sql.query  # `${NAME}`s put in by `load_config`
    if url.startswith("sqlite:///"):
        whole = _read_sqlite(config, url.removeprefix("sqlite:///"), query)
        return whole.schema, whole.iter_slices(slice_rows)
    scheme = url.split(":", 1)[0]
    if scheme not in FAMILIES:
        raise SourceError(
            f"source.sql.url: unsupported database '{scheme}'; "
            "use sqlite:///path, postgresql://… or mysql://…"
        )
    _reach(url, FAMILIES[scheme])
    if FAMILIES[scheme] == "postgresql":
        return open_postgres(url, query, slice_rows)
    return open_mysql(url, query, slice_rows)


def _reach(url: str, family: str) -> None:
    """Reach the server once, or raise the one SourceError that says why not."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:  # a Unix socket, which the driver finds
        return
    address = (parts.hostname, parts.port or DEFAULT_PORTS[family])
    try:
        socket.create_connection(address, timeout=CONNECT_TIMEOUT).close()
    except OSError as error:
        raise cannot_connect(url, _network_reason(error, address)) from None


def _network_reason(error: OSError, address: tuple[str, int]) -> str:
    host, port = address
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused: is the server running, and listening on port {port}?"
    if isinstance(error, socket.gaierror):
        return f"no host '{host}' is known (check the host name)"
    if isinstance(error, TimeoutError):
        return f"no answer from {host}:{port} within {CONNECT_TIMEOUT} s"
    return error.strerror or str(error)


def _read_sqlite(config: Config, path: str, query: str) -> pl.DataFrame:
    database = config.resolve(path)
    if not database.is_file():
        raise SourceError(f"source.sql.url: no SQLite database at {database}")
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return pl.read_database(query, connection, infer_schema_length=None)
    except (sqlite3.Error, pl.exceptions.PolarsError) as error:
        raise SourceError(f"source.sql.query failed on {database}: {error}") from None
    finally:
        connection.close()
