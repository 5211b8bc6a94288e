"""Helpers shared by the worker test modules: wait for a condition, read one value."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy (and return it), or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.01)


def scalar(conn: psycopg.Connection[Any], query: str, params: Any = ()) -> Any:
    """The first column of the query's one row."""
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]
