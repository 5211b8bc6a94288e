"""The Django suite: the project in tests/django_backend/project on a database of
its own (installed by `manage.py migrate`, as users install it), and real
`manage.py conveyor_worker` processes.

Runs on Django 5.2 + django-tasks (.venv, Python 3.11) and on Django 6
(.venv-django6, Python 3.12): scripts/test runs both.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

PROJECT = Path(__file__).resolve().parent / "project"
DJANGO_DB = f"conveyor_django_{os.getpid()}"


def with_dbname(url: str, dbname: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme in ("postgres", "postgresql"):
        return urllib.parse.urlunsplit(
            parts._replace(path="/" + urllib.parse.quote(dbname))
        )
    return make_conninfo(url, dbname=dbname)


def recreate(admin_url: str, dbname: str, *, drop_only: bool = False) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        name = sql.Identifier(dbname)
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        if not drop_only:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(name))


def project_env(database_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CONVEYOR_DJANGO_DATABASE"] = database_url
    env["DJANGO_SETTINGS_MODULE"] = "djproject.settings"
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT), env.get("PYTHONPATH", "")])
    return env


def manage(
    database_url: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python manage.py ARGS` in a subprocess, on ``database_url``."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=project_env(database_url),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def django_db_url(admin_url: str) -> Iterator[str]:
    """The project's database, made by `manage.py migrate` (conveyor's schema
    from the app's migration), with Django set up in this process on it."""
    recreate(admin_url, DJANGO_DB)
    url = with_dbname(admin_url, DJANGO_DB)
    done = manage(url, "migrate", "--no-input")
    assert done.returncode == 0, done.stdout + done.stderr
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA shop_schema")
        conn.execute(
            "CREATE TABLE shop_log (id bigserial PRIMARY KEY, event text NOT NULL,"
            " what text NOT NULL)"
        )
    os.environ.update({k: v for k, v in project_env(url).items() if k != "PYTHONPATH"})
    sys.path.insert(0, str(PROJECT))
    import django

    django.setup()
    yield url
    from django.db import connections

    connections.close_all()
    recreate(admin_url, DJANGO_DB, drop_only=True)


class WorkerProcess:
    """A `manage.py conveyor_worker` subprocess."""

    def __init__(
        self,
        database_url: str,
        *args: str,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.log_path = (
            Path(os.environ.get("TMPDIR", "/tmp"))
            / f"conveyor-django-{os.getpid()}-{time.monotonic_ns()}.log"
        )
        self._log = self.log_path.open("w")
        if command is None:
            command = [sys.executable, "manage.py", "conveyor_worker"]
        self.process = subprocess.Popen(
            [*command, "--log-format", "json", *args],
            cwd=PROJECT,
            env=project_env(database_url) if env is None else env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def output(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._log.close()
        return code


@pytest.fixture
def start_worker(django_db_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: start a worker with these `conveyor worker` options; each is
    stopped (SIGTERM) after the test and must exit cleanly."""
    started: list[WorkerProcess] = []

    def _start(*args: str, **options: Any) -> WorkerProcess:
        worker = WorkerProcess(django_db_url, *args, **options)
        started.append(worker)
        return worker

    yield _start
    for worker in started:
        code = worker.stop()
        assert code == 0, f"worker exited with {code}:\n{worker.output()}"
        worker.log_path.unlink()


@pytest.fixture(scope="session")
def session_worker(django_db_url: str) -> Iterator[WorkerProcess]:
    """One worker for the tests that only need tasks to run: the queues of
    both backends, short polls (retries and deferred tasks)."""
    worker = WorkerProcess(
        django_db_url,
        "-q",
        "default",
        "-q",
        "mail",
        "-q",
        "other",
        "--poll-interval",
        "0.2",
    )
    yield worker
    code = worker.stop()
    assert code == 0, f"worker exited with {code}:\n{worker.output()}"
    worker.log_path.unlink()
