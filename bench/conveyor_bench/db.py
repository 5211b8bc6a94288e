"""Databases for the benchmark: fresh ones per run, cloned from templates.

Every run of a scenario gets a database of its own, created on the server of
the admin URL and dropped afterwards, so no run sees another's rows, dead
tuples or statistics. Creating a database from ``template0`` and installing a
schema into it takes a second or more, so each system's schema is installed
once into a template database, and runs clone it (``CREATE DATABASE ...
TEMPLATE``, a file copy). Templates are dropped when the benchmark ends.
"""

from __future__ import annotations

import itertools
import os
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

__all__ = ["Server", "with_dbname"]

_numbers = itertools.count(1)


def with_dbname(url: str, dbname: str) -> str:
    """The same connection (user, host, port, socket dir, options) to another database.

    A ``postgresql://`` URL stays a URL, query parameters included; anything
    else is treated as a libpq conninfo string.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("postgres", "postgresql"):
        return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(dbname)))
    return make_conninfo(url, dbname=dbname)


class Server:
    """The PostgreSQL server of ``admin_url``, where the benchmark creates and
    drops its databases (the role of ``admin_url`` needs CREATEDB)."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._templates: dict[str, str] = {}
        self._prefix = f"conveyor_bench_{os.getpid()}"

    # --- plumbing --------------------------------------------------------------

    def _admin(self, statement: sql.Composed) -> None:
        # CREATE/DROP DATABASE cannot run in a transaction block.
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)

    def url(self, dbname: str) -> str:
        return with_dbname(self.admin_url, dbname)

    def create(self, dbname: str, template: str | None = None) -> str:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname))
        if template is not None:
            statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
        self._admin(statement)
        return self.url(dbname)

    def drop(self, dbname: str) -> None:
        # FORCE ends sessions a run left behind (a worker that would not stop).
        self._admin(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )

    # --- templates and fresh databases -----------------------------------------

    def template(self, system: str, install: Callable[[str], None]) -> str:
        """The name of a template database holding ``system``'s schema, made on
        first use by calling ``install(url)`` on an empty database."""
        name = self._templates.get(system)
        if name is None:
            name = f"{self._prefix}_tpl_{system}"
            self.drop(name)
            url = self.create(name)
            try:
                install(url)
            except BaseException:
                self.drop(name)
                raise
            self._templates[system] = name
        return name

    @contextmanager
    def fresh(self, system: str, install: Callable[[str], None]) -> Iterator[str]:
        """A new database with ``system``'s schema, dropped when the block ends."""
        template = self.template(system, install)
        name = f"{self._prefix}_{next(_numbers)}"
        url = self.create(name, template)
        try:
            yield url
        finally:
            self.drop(name)

    def close(self) -> None:
        """Drop the template databases."""
        for name in self._templates.values():
            self.drop(name)
        self._templates.clear()

    # --- what the report says about the server ----------------------------------

    def info(self) -> dict[str, Any]:
        """The server's version and the settings that decide the figures."""
        settings = (
            "shared_buffers",
            "synchronous_commit",
            "fsync",
            "wal_level",
            "full_page_writes",
            "max_connections",
            "work_mem",
            "checkpoint_timeout",
            "max_wal_size",
            "autovacuum",
            "jit",
        )
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            version = conn.execute("SELECT version()").fetchone()
            num = conn.execute("SHOW server_version_num").fetchone()
            values = {}
            for name in settings:
                row = conn.execute("SELECT current_setting(%s, true)", [name]).fetchone()
                values[name] = row[0] if row else None
        return {
            "version": version[0] if version else None,
            "version_num": int(num[0]) if num else None,
            "settings": values,
        }
