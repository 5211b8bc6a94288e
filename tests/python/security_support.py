"""Helpers for the security tests: throwaway LOGIN roles that connect on their
own, as an application or a worker would.

Roles are global to the cluster while each test has its own database, so the
names are unique per process and call, and every role made is dropped (after
its sessions are ended) when the test ends.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg import sql

MakeRole = Callable[..., tuple[str, Callable[..., psycopg.Connection[Any]]]]


@contextlib.contextmanager
def login_roles(admin_url: str, db_url: str) -> Iterator[MakeRole]:
    """Factory: ``make("conveyor_enqueuer")`` creates a LOGIN role that
    is a member of the given roles (none: a role with no grants at all) and
    returns ``(name, connect)``; ``connect(**kwargs)`` opens an autocommit
    connection to ``db_url`` as that role."""
    made: list[str] = []
    opened: list[psycopg.Connection[Any]] = []

    def make(*member_of: str) -> tuple[str, Callable[..., psycopg.Connection[Any]]]:
        name = f"conveyor_sec_{os.getpid()}_{secrets.token_hex(4)}"
        statement = sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
            sql.Identifier(name)
        )
        if member_of:
            statement += sql.SQL(" IN ROLE {}").format(
                sql.SQL(", ").join(sql.Identifier(r) for r in member_of)
            )
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(statement)
        made.append(name)

        def connect(**kwargs: Any) -> psycopg.Connection[Any]:
            kwargs.setdefault("autocommit", True)
            conn = psycopg.connect(db_url, user=name, **kwargs)
            opened.append(conn)
            return conn

        return name, connect

    try:
        yield make
    finally:
        for conn in opened:
            conn.close()
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for name in made:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                    [name],
                )
                admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
