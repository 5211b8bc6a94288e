"""The job limits have one home, conveyor.job_limit(); the Python worker cuts
error messages and backtraces to the same lengths before it sends them (so a
long traceback keeps its end, the useful part, rather than retry_job's cut of
its start). Its constants must agree with the schema."""

from __future__ import annotations

from typing import Any

import psycopg

from conveyor import errors


def test_python_error_limits_are_the_schemas(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute(
        "SELECT conveyor.job_limit('last_error_message'), conveyor.job_limit('last_error_backtrace')"
    ).fetchone()
    assert row == (errors.MAX_MESSAGE, errors.MAX_BACKTRACE)
