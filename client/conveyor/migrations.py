"""Install the conveyor schema from the SQL bundled in the package.

The package ships ``conveyor/sql/conveyor.sql``, the plain-SQL install file
generated from the sqitch plan. :func:`migrate` installs it into a database
that has no ``conveyor`` schema, does nothing when the installed
``conveyor.schema_version()`` is the bundled one, and raises
:class:`~conveyor.SchemaError` otherwise (a schema of another version is
upgraded with ``sqitch deploy``; this release has no upgrade scripts).
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import psycopg

from . import sql
from .errors import SchemaError

__all__ = ["bundled_version", "installed_version", "migrate"]

_VERSION = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+conveyor\.schema_version\(\).*?"
    r"SELECT\s+'([^']+)'",
    re.DOTALL | re.IGNORECASE,
)


def bundled_sql() -> str:
    """The text of the bundled install file."""
    path = resources.files("conveyor").joinpath("sql", "conveyor.sql")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SchemaError(f"the bundled install file is missing ({path})") from None


def bundled_version() -> str:
    """The schema version the bundled install file installs."""
    versions = _VERSION.findall(bundled_sql())
    if not versions:
        raise SchemaError("the bundled install file defines no conveyor.schema_version()")
    version: str = versions[-1]
    return version


def installed_version(conn: psycopg.Connection[Any]) -> str | None:
    """The installed schema's version, or None when there is no conveyor schema."""
    row = conn.execute(sql.SCHEMA_EXISTS).fetchone()
    if not row or not row[0]:
        return None
    row = conn.execute(sql.SCHEMA_VERSION_EXISTS).fetchone()
    if not row or not row[0]:
        return "unknown"
    row = conn.execute(sql.SCHEMA_VERSION).fetchone()
    assert row is not None
    version: str = row[0]
    return version


def migrate(database_url: str) -> str:
    """Bring the database's schema to the bundled version.

    Returns ``"installed"`` or ``"up to date"``; raises
    :class:`~conveyor.SchemaError` when another version is installed.
    """
    wanted = bundled_version()
    with psycopg.connect(database_url, autocommit=True) as conn:
        current = installed_version(conn)
        if current == wanted:
            return "up to date"
        if current is not None:
            raise SchemaError(
                f"the database has conveyor schema {current}, this package installs {wanted}; "
                "upgrade it with `sqitch deploy` from the conveyor repository"
            )
        # The file holds one BEGIN ... COMMIT block per change, as sqitch
        # deploys them; sent as one simple-protocol script.
        conn.execute(bundled_sql().encode())
        if installed_version(conn) != wanted:
            raise SchemaError("the install file ran but schema_version() does not match")
        return "installed"
