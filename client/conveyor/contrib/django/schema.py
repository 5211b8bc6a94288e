"""conveyor's schema in a Django project: the database URL of a
``DATABASES`` alias, and :func:`conveyor.migrate` on it, run by the app's
migration and after every ``manage.py migrate`` (so an upgraded package
upgrades the schema with no step of its own)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connections
from psycopg import pq
from psycopg.conninfo import make_conninfo

from ...migrations import MigrationResult, migrate

__all__ = ["conveyor_aliases", "database_url", "migrate_alias"]

_LIBPQ_KEYWORDS = frozenset(
    d.keyword.decode() for d in pq.Conninfo.get_defaults() if d.keyword is not None
)


def database_url(alias: str) -> str:
    """A libpq connection string for the ``DATABASES`` alias: what Django
    connects with (NAME, USER, PASSWORD, HOST, PORT, and the OPTIONS that are
    libpq parameters: ``options`` with a search path, ``sslmode``...)."""
    params: dict[str, Any] = connections[alias].get_connection_params()
    kept = {
        key: value
        for key, value in params.items()
        if key in _LIBPQ_KEYWORDS and value not in (None, "") and isinstance(value, str | int)
    }
    return make_conninfo("", **kept)


def conveyor_aliases() -> set[str]:
    """The DATABASES aliases the ConveyorBackend entries of TASKS use."""
    from .backend import DEFAULT_OPTIONS

    aliases = set()
    for params in getattr(settings, "TASKS", {}).values():
        if params.get("BACKEND") == "conveyor.contrib.django.ConveyorBackend":
            options = params.get("OPTIONS") or {}
            aliases.add(options.get("database", DEFAULT_OPTIONS["database"]))
    return aliases


def migrate_alias(alias: str) -> MigrationResult | None:
    """Install or upgrade conveyor's schema on the alias's database if a
    ConveyorBackend uses it (None: none does)."""
    if alias not in conveyor_aliases():
        return None
    return migrate(database_url(alias))
