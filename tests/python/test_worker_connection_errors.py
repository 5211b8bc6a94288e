"""A worker tells a mistake from an outage: a URL or login
that retrying cannot fix exits non-zero with one line; an unreachable server
is retried (backoff capped at 1 s, as cli.md says) until SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from test_cli import one_line_error

import conveyor

CLI_MD = Path(__file__).resolve().parents[2] / "docs" / "reference" / "cli.md"
NOBODY_LISTENS = "postgresql://conveyor@127.0.0.1:1/conveyor?connect_timeout=1"


def _worker(url: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "worker", "--database-url", url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.fixture
def no_connect_role(db_url: str) -> Iterator[str]:
    """A login role without CONNECT on the test database."""
    role = f"conveyor_no_connect_{os.getpid()}"
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        admin.execute(
            sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(
                sql.Identifier(admin.info.dbname)
            )
        )
    yield make_conninfo(db_url, user=role)
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"user": "conveyor_nobody_xyz"}, 'role "conveyor_nobody_xyz" does not exist'),
        ({"dbname": "conveyor_nowhere_xyz"}, 'database "conveyor_nowhere_xyz" does not exist'),
    ],
)
def test_an_unknown_role_or_database_exits_with_one_line(
    db_url: str, change: dict[str, str], message: str
) -> None:
    started = time.monotonic()
    result = _worker(make_conninfo(db_url, **change))
    assert result.returncode == 1, result.stdout + result.stderr
    line = one_line_error(result)
    assert message in line and "not retrying" in line
    assert time.monotonic() - started < 15
    events = [json.loads(line)["event"] for line in result.stdout.splitlines()]
    assert "database_unreachable" not in events
    assert "locker_failed" in events


def test_no_connect_privilege_exits_with_one_line(no_connect_role: str) -> None:
    result = _worker(no_connect_role)
    assert result.returncode == 1
    assert "permission denied for database" in one_line_error(result)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "invalid database URL"),
        ("postgresql://conveyor@localhost/conveyor?no_such_option=1", "invalid database URL"),
        ("postgresql://conveyor@localhost:99999999/conveyor", "invalid port number"),
    ],
)
def test_an_invalid_url_exits_with_one_line(url: str, message: str) -> None:
    result = _worker(url)
    assert result.returncode == 1
    line = one_line_error(result)
    assert message in line and "schema" not in line


def test_in_process_start_raises_and_leaves_no_thread(db_url: str) -> None:
    before = set(threading.enumerate())
    worker = conveyor.Worker(make_conninfo(db_url, user="conveyor_nobody_xyz"), worker_count=1)
    with pytest.raises(conveyor.ConveyorError, match="not retrying"):
        worker.start()
    assert set(threading.enumerate()) - before == set()


def _retry_delays_until_sigterm(url: str, error: str, count: int) -> list[float]:
    """Run a worker on ``url`` until it has logged ``count`` retries whose
    error says ``error``; SIGTERM must then stop it cleanly."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "--database-url", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    delays: list[float] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        while len(delays) < count:
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, delays
            event: dict[str, Any] = json.loads(line)  # not a TTY: JSON by default
            if event["event"] == "database_unreachable":
                assert error in event["error"]
                delays.append(event["retry_in"])
        assert proc.poll() is None, "the worker gave up on an outage"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    return delays


def test_too_many_connections_is_an_outage(db_url: str) -> None:
    role = f"conveyor_no_slots_{os.getpid()}"
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN CONNECTION LIMIT 0").format(sql.Identifier(role))
        )
    try:
        delays = _retry_delays_until_sigterm(
            make_conninfo(db_url, user=role), "too many connections for role", 2
        )
    finally:
        with psycopg.connect(db_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    assert delays == [0.1, 0.2]


def test_an_outage_is_retried_with_backoff_capped_at_one_second_until_sigterm() -> None:
    delays = _retry_delays_until_sigterm(NOBODY_LISTENS, "Connection refused", 6)
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    # What cli.md says about it is what the code does.
    docs = " ".join(CLI_MD.read_text().split())
    assert re.search(
        r"keeps trying \(with backoff up to 1 s: 0\.1, 0\.2, 0\.4, 0\.8, then every second\)", docs
    )
