"""`conveyor worker --django-settings MODULE [--django-backend ALIAS]`: the
project's tasks run by conveyor's own command, without manage.py -- Django
set up once in the worker process, a fresh Django connection per task."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django_support import wait_finished

pytestmark = pytest.mark.usefixtures("django_db_url")

PROJECT = Path(__file__).resolve().parent / "project"
#: The console script, as users run it (not `python -m`, which would put the
#: current directory on sys.path by itself).
CONVEYOR = str(Path(sys.executable).with_name("conveyor"))


def cli_env(database_url: str) -> dict[str, str]:
    """The project's environment without DJANGO_SETTINGS_MODULE, and without
    the project on PYTHONPATH: --django-settings and the current directory
    must be enough."""
    env = dict(os.environ)
    for name in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CONVEYOR_DATABASE_URL"):
        env.pop(name, None)
    env["CONVEYOR_DJANGO_DATABASE"] = database_url
    return env


def conveyor(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CONVEYOR, *args],
        cwd=PROJECT,
        env=cli_env(database_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_django_settings_runs_the_tasks_a_connection_each(
    django_db_url: str, start_worker: Any
) -> None:
    from shop.tasks import connection_pid

    results = [connection_pid.enqueue() for _ in range(3)]
    worker = start_worker(
        "--django-settings",
        "djproject.settings",
        "-q",
        "cli",
        "-w",
        "1",
        command=[CONVEYOR, "worker"],
        env=cli_env(django_db_url),
    )
    done = [wait_finished(connection_pid, r.id) for r in results]
    me = f"{socket.gethostname()}:{worker.process.pid}"
    assert [d.worker_ids for d in done] == [[me]] * 3
    pids = [d.return_value for d in done]
    assert len(set(pids)) == 3  # close_old_connections after each task


def test_django_backend_picks_the_tasks_entry_and_its_database(
    django_db_url: str, start_worker: Any
) -> None:
    """--django-backend other: TASKS['other'], whose database alias has its
    own search path; the worker connects with it (no --database-url)."""
    from shop.tasks import search_path

    result = search_path.using(queue_name="other-solo").enqueue()
    worker = start_worker(
        "--django-settings",
        "djproject.settings",
        "--django-backend",
        "other",
        "-q",
        "other-solo",
        command=[CONVEYOR, "worker"],
        env=cli_env(django_db_url),
    )
    done = wait_finished(search_path, result.id)
    assert done.return_value == "shop_schema"
    assert done.worker_ids == [f"{socket.gethostname()}:{worker.process.pid}"]


def test_django_options_are_checked(django_db_url: str) -> None:
    shown = conveyor(django_db_url, "worker", "--help")
    assert "--django-settings" in shown.stdout and "--django-backend" in shown.stdout
    nope = conveyor(
        django_db_url,
        "worker",
        "--django-settings",
        "djproject.settings",
        "--django-backend",
        "nope",
    )
    assert nope.returncode == 1 and "TASKS['nope']" in nope.stderr, nope.stderr
    missing = conveyor(django_db_url, "worker", "--django-settings", "djproject.nosuch")
    assert missing.returncode == 1, missing.stderr
    assert "cannot import the Django settings djproject.nosuch" in missing.stderr
    alone = conveyor(django_db_url, "worker", "--django-backend", "other")
    assert alone.returncode == 2 and "needs --django-settings" in alone.stderr
