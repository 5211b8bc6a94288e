"""Fixtures for the tests that need the support modules of this folder
(tests/conftest.py holds the database fixtures every test uses)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chaos_support import WorkerProcess, workers_cleanup
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
