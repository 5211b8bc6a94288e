"""Helpers of the migrate and upgrade tests: empty databases, installs by
psql, the conveyor CLI as a process."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parents[2]
RELEASED = sorted((ROOT / "sql" / "released").glob("conveyor-*.sql"))

_numbers = itertools.count(1)


@pytest.fixture
def empty_db(admin_url: str) -> Iterator[Callable[[], str]]:
    """Factory: each call creates an empty database (no conveyor schema) and
    returns its conninfo; all are dropped after the test."""
    made: list[str] = []

    def _empty_db() -> str:
        name = f"conveyor_migrate_{os.getpid()}_{next(_numbers)}"
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        made.append(name)
        return make_conninfo(admin_url, dbname=name)

    yield _empty_db
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for name in made:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def psql_file(conninfo: str, path: Path) -> None:
    result = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(path), "--dbname", conninfo],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def conveyor_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def scalar(conninfo: str, query: str, params: object = None) -> object:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
        return None if row is None else row[0]
