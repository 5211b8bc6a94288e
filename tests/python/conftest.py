"""Fixtures for the tests that need the support modules of this folder
(tests/conftest.py holds the database fixtures every test uses)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from chaos_support import WorkerProcess, WorkerSubprocess, workers_cleanup
from security_support import MakeRole, login_roles


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """A list for the test's `conveyor worker` subprocesses (WorkerProcess);
    those still running at teardown are killed, all are reaped."""
    with workers_cleanup() as made:
        yield made


@pytest.fixture
def login_role(admin_url: str, db_url: str) -> Iterator[MakeRole]:
    """LOGIN roles made for this test (see security_support.login_roles)."""
    with login_roles(admin_url, db_url) as make:
        yield make


@pytest.fixture
def spawn_worker(db_url: str, tmp_path: Path) -> Iterator[Callable[..., WorkerSubprocess]]:
    """Factory: ``spawn_worker(JOBS_SOURCE, *options)`` writes the job module
    to ``jobs.py`` and starts ``python -m conveyor worker jobs.py
    --database-url db_url *options``; processes still running at teardown are
    killed, all are reaped."""
    jobs = tmp_path / "jobs.py"
    made: list[WorkerSubprocess] = []

    def _spawn(jobs_source: str, *options: str) -> WorkerSubprocess:
        jobs.write_text(jobs_source)
        log = tmp_path / f"worker-{len(made)}.log"
        handle = log.open("wb")
        command = [sys.executable, "-m", "conveyor", "worker", str(jobs)]
        popen = subprocess.Popen(
            [*command, "--database-url", db_url, *options],
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
        made.append(WorkerSubprocess(popen, log, handle))
        return made[-1]

    yield _spawn
    for proc in made:
        if proc.popen.poll() is None:
            proc.popen.kill()
        proc.popen.wait(10)
        proc.handle.close()
