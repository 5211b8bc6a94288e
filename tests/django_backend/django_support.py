"""Helpers of the Django suite's tests."""

from __future__ import annotations

import time
from typing import Any


def wait_finished(task: Any, result_id: str, timeout: float = 60) -> Any:
    """The task's result once it is finished (SUCCESSFUL or FAILED)."""
    deadline = time.monotonic() + timeout
    while True:
        result = task.get_result(result_id)
        if result.is_finished:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"task {result_id} not finished after {timeout} s: {result.status}"
            )
        time.sleep(0.05)


def log_rows(event: str | None = None) -> list[tuple[str, str]]:
    from django.db import connection

    with connection.cursor() as cursor:
        if event is None:
            cursor.execute("SELECT event, what FROM shop_log ORDER BY id")
        else:
            cursor.execute(
                "SELECT event, what FROM shop_log WHERE event = %s ORDER BY id", [event]
            )
        return list(cursor.fetchall())


def wait_log(event: str, result_id: str, timeout: float = 30) -> list[str]:
    """The shop_log rows of ``event`` for the task, once there is one (a
    receiver in the worker writes it after the result is stored)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [what for _, what in log_rows(event) if what.startswith(f"{result_id} ")]
        if rows:
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(
                f"no {event} row for task {result_id} after {timeout} s"
            )
        time.sleep(0.05)
