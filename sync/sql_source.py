"""Read a SQL source: SQLite through the standard library, PostgreSQL and MySQL/MariaDB through
connectorx's Arrow stream, a slice at a time.

connectorx retries a connection that fails for 30 s and logs every attempt on stderr, so the
connection is tried once here first, with the driver when one is installed (psycopg, PyMySQL):
a server that is not there or a login it refuses is one message at once. The password is
never shown: messages name the database by its URL with `***` for the password.
"""

from __future__ import annotations

import importlib
import os
import re
import socket
import sqlite3
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import polars as pl

from sync.config import Config
from sync.config_model import SourceConfig
from sync.errors import SourceError

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
    _try_connecting(FAMILIES[scheme], url)
    with _query_errors(scheme, url):
        reader = _connectorx().read_sql(
            url.replace("mariadb://", "mysql://", 1),
            query,
            return_type="arrow_stream",
            batch_size=slice_rows,
        )
        schema = pl.DataFrame(reader.schema.empty_table()).schema

    def slices() -> Iterator[pl.DataFrame]:
        with _query_errors(scheme, url):
            for batch in reader:
                piece = pl.from_arrow(batch)
                assert isinstance(piece, pl.DataFrame)  # noqa: S101  # a batch is a table
                if piece.height:
                    yield piece

    return schema, slices()


def _connectorx() -> Any:
    """connectorx, its Rust log off unless RUST_LOG asks for it: its pool logs each of the
    attempts of a failed connection, a screenful that says what the one error says."""
    if "RUST_LOG" in os.environ:
        return importlib.import_module("connectorx")
    os.environ["RUST_LOG"] = "off"
    try:
        return importlib.import_module("connectorx")
    finally:
        os.environ.pop("RUST_LOG", None)


def _try_connecting(family: str, url: str) -> None:
    """Reach the server and log in once, or raise the one SourceError that says why not."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname:  # no host: a Unix socket, which the driver finds
        address = (parts.hostname, parts.port or DEFAULT_PORTS[family])
        try:
            socket.create_connection(address, timeout=CONNECT_TIMEOUT).close()
        except OSError as error:
            raise SourceError(_cannot_connect(url, _network_reason(error, address))) from None
    refusal = _postgres_login(url) if family == "postgresql" else _mysql_login(parts)
    if refusal:
        raise SourceError(_cannot_connect(url, _without_password(refusal, url)))


def _network_reason(error: OSError, address: tuple[str, int]) -> str:
    host, port = address
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused: is the server running, and listening on port {port}?"
    if isinstance(error, socket.gaierror):
        return f"no host '{host}' is known (check the host name)"
    if isinstance(error, TimeoutError):
        return f"no answer from {host}:{port} within {CONNECT_TIMEOUT} s"
    return error.strerror or str(error)


def _postgres_login(url: str) -> str | None:
    """Why PostgreSQL refuses the login, or None (also when psycopg is not installed: then
    connectorx tries, slowly, and its error says why)."""
    try:
        psycopg: Any = importlib.import_module("psycopg")
    except ModuleNotFoundError:
        return None
    try:
        psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT).close()
    except psycopg.Error as error:
        text = " ".join(str(error).split())
        fatal = re.search(r"FATAL:\s*(.*)", text)
        return fatal.group(1) if fatal else text
    return None


def _mysql_login(parts: urllib.parse.SplitResult) -> str | None:
    """Why MySQL/MariaDB refuses the login, or None (also when PyMySQL is not installed)."""
    try:
        pymysql: Any = importlib.import_module("pymysql")
    except ModuleNotFoundError:
        return None
    unquote = urllib.parse.unquote
    try:
        pymysql.connect(
            host=parts.hostname or "localhost",
            port=parts.port or DEFAULT_PORTS["mysql"],
            user=unquote(parts.username or ""),
            password=unquote(parts.password or ""),
            database=unquote(parts.path.lstrip("/")) or None,
            connect_timeout=CONNECT_TIMEOUT,
        ).close()
    except pymysql.err.MySQLError as error:
        return str(error.args[1]) if len(error.args) > 1 else str(error)
    return None


def _cannot_connect(url: str, reason: str) -> str:
    return f"source.sql.url: cannot connect to {redact_url(url)}: {reason}"


@contextmanager
def _query_errors(scheme: str, url: str) -> Iterator[None]:
    try:
        yield
    except ModuleNotFoundError:
        raise SourceError(
            f"source.sql.url: reading {scheme} needs connectorx: pip install 'loops-sync[sql]'"
        ) from None
    except Exception as error:  # noqa: BLE001  # connectorx raises bare RuntimeErrors
        message = _without_password(str(error), url)
        raise SourceError(f"source.sql: the query failed on {redact_url(url)}: {message}") from None


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


def _without_password(text: str, url: str) -> str:
    password = urllib.parse.urlsplit(url).password
    if not password:
        return text
    for form in {password, urllib.parse.unquote(password)}:
        text = text.replace(form, "***")
    return text


def redact_url(url: str) -> str:
    """A database URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url
