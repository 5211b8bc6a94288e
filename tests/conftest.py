"""Fixtures shared by the Python tests (tests/python/).

Every test runs against a real PostgreSQL. The schema is installed once per
session into a template database from sql/conveyor.sql -- the artefact users
install -- and each test that asks for `db_url` gets its own clone of it,
which is cheap (a file copy) and isolates tests from one another.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
INSTALL_SQL = ROOT / "sql" / "conveyor.sql"
# Per test run (pid), since several runs may share one server: another run
# dropping "our" template would break every clone made after that.
TEMPLATE_DB = f"conveyor_test_template_{os.getpid()}"

_clone_numbers = itertools.count(1)


def _with_dbname(url: str, dbname: str) -> str:
    """The same connection (host, port, user, socket dir, ...) to another database.

    A postgresql:// URL stays a URL, since other clients (psql, node's pg)
    take URLs too; query parameters such as host=/socket/dir are kept.
    Anything else is treated as a libpq conninfo string.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("postgres", "postgresql"):
        return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(dbname)))
    return make_conninfo(url, dbname=dbname)


def _admin_exec(url: str, *statements: sql.Composed) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction block.
    with psycopg.connect(url, autocommit=True) as admin:
        for statement in statements:
            admin.execute(statement)


def _drop(url: str, dbname: str) -> None:
    # FORCE ends sessions a test left open (a killed worker, a leaked thread).
    _admin_exec(
        url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
    )


@pytest.fixture(scope="session")
def admin_url() -> str:
    """Admin URL to the `postgres` database, allowed to create databases and roles."""
    url = os.environ.get("DATABASE_URL")
    if not url:
        pytest.exit(
            "DATABASE_URL is not set: run the tests with scripts/test "
            "(or scripts/with-db .venv/bin/pytest ...)",
            returncode=2,
        )
    return url


@pytest.fixture(scope="session")
def template_db(admin_url: str) -> Iterator[str]:
    """Name of a database with the conveyor schema installed from sql/conveyor.sql."""
    if not INSTALL_SQL.exists():
        pytest.fail(f"{INSTALL_SQL} is missing: run scripts/gen-sql")
    _drop(admin_url, TEMPLATE_DB)
    _admin_exec(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
    # psql, not psycopg: the file is meant for psql (as users install it) and
    # may use its syntax. psql takes the URL, socket host included, as --dbname.
    result = subprocess.run(
        [
            "psql",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-q",
            "-f",
            str(INSTALL_SQL),
            "--dbname",
            _with_dbname(admin_url, TEMPLATE_DB),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"installing {INSTALL_SQL.name} failed:\n{result.stderr}", pytrace=False)
    yield TEMPLATE_DB
    _drop(admin_url, TEMPLATE_DB)


@pytest.fixture
def new_db(admin_url: str, template_db: str) -> Iterator[Callable[[], str]]:
    """Factory: each call clones the template into a new database and returns
    its URL. All clones are dropped after the test."""
    made: list[str] = []

    def _new_db() -> str:
        name = f"conveyor_test_{os.getpid()}_{next(_clone_numbers)}"
        _admin_exec(
            admin_url,
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            ),
        )
        made.append(name)
        return _with_dbname(admin_url, name)

    yield _new_db
    for name in made:
        _drop(admin_url, name)


@pytest.fixture
def db_url(new_db: Callable[[], str]) -> str:
    """URL of a fresh clone of the template, dropped after the test."""
    return new_db()


@pytest.fixture
def schemaless_db_url(new_db: Callable[[], str]) -> str:
    """URL of a clone whose conveyor schema was dropped: a database that
    conveyor was never installed in (its roles, global, stay)."""
    url = new_db()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("DROP SCHEMA conveyor CASCADE")
    return url


@pytest.fixture
def connect(db_url: str) -> Iterator[Callable[..., psycopg.Connection[Any]]]:
    """Factory for extra connections to `db_url`; all are closed at teardown.

    Connections are in autocommit mode unless called with autocommit=False,
    e.g. to hold a transaction open while another session acts.
    """
    opened: list[psycopg.Connection[Any]] = []

    def _connect(**kwargs: Any) -> psycopg.Connection[Any]:
        kwargs.setdefault("autocommit", True)
        conn = psycopg.connect(db_url, **kwargs)
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


@pytest.fixture
def conn(connect: Callable[..., psycopg.Connection[Any]]) -> psycopg.Connection[Any]:
    """An autocommit connection to `db_url`."""
    return connect()
