"""Inspect and manage jobs from Python: a thin client of the SQL functions
``conveyor.list_jobs``, ``retry_now``, ``discard_job``, ``reschedule_job``,
``retry_jobs_where`` and ``discard_jobs_where`` and of the view
``conveyor.jobs_view`` (docs/reference/sql.md). ``conveyor jobs`` is built on it.

The policy (which state allows what, what "running" means) is the SQL's; this
module adds none. Its errors are the SQL's, as :class:`JobActionError` with
the SQLSTATE kept, so a caller can tell "no such job" from "a worker holds it".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from . import sql
from .errors import ConveyorError

__all__ = [
    "JobActionError",
    "JobFilter",
    "discard_job",
    "discard_jobs_where",
    "get_job",
    "list_jobs",
    "reschedule_job",
    "retry_jobs_where",
    "retry_now",
]

#: What each SQLSTATE the management functions raise means, in a few words.
REASONS = {
    "P0002": "no such job",
    "55006": "a worker holds it now",
    "55000": "its state does not allow this",
    "42501": "permission denied (needs the conveyor_admin role or the schema owner)",
}


class JobActionError(ConveyorError):
    """The database refused an action on a job: ``sqlstate`` says why
    (``P0002`` no such job, ``55006`` a worker holds it, ``55000`` its state
    does not allow it, ``42501`` the role may not)."""

    def __init__(self, job_id: int | None, sqlstate: str | None, message: str) -> None:
        super().__init__(message)
        self.job_id = job_id
        self.sqlstate = sqlstate


def _refused(job_id: int | None, error: psycopg.Error) -> JobActionError:
    text = (error.diag.message_primary or str(error)).strip().splitlines()[0]
    return JobActionError(job_id, error.sqlstate, text)


@dataclass(frozen=True)
class JobFilter:
    """The filter of a bulk action (``retry_jobs_where``/``discard_jobs_where``):
    None matches anything. ``error_like`` is an ILIKE pattern on
    last_error_message; ``since`` keeps jobs created at or after it."""

    state: str | None = None
    queue: str | None = None
    job_class: str | None = None
    error_like: str | None = None
    since: datetime | None = None

    def is_empty(self) -> bool:
        return all(value is None for value in self._params())

    def _params(self) -> tuple[Any, ...]:
        return (self.state, self.queue, self.job_class, self.error_like, self.since)

    def describe(self) -> str:
        names = ("state", "queue", "class", "error like", "since")
        parts = [f"{n} {v}" for n, v in zip(names, self._params(), strict=True) if v is not None]
        return ", ".join(parts)


def list_jobs(
    conn: psycopg.Connection[Any],
    *,
    state: str | None = None,
    queue: str | None = None,
    job_class: str | None = None,
    search: str | None = None,
    before_id: int | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """One page of ``conveyor.list_jobs``, newest first: rows of jobs_view as
    dicts. The next page: ``before_id`` = the last row's id."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(sql.LIST_JOBS, (state, queue, job_class, search, before_id, limit))
        return cursor.fetchall()


def get_job(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any] | None:
    """The job's row in jobs_view (every column, its state), or None."""
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(sql.SHOW_JOB, (job_id,))
        return cursor.fetchone()


def _one(conn: psycopg.Connection[Any], job_id: int | None, query: str, params: Any) -> Any:
    try:
        row = conn.execute(query, params).fetchone()
    except (
        psycopg.errors.NoDataFound,
        psycopg.errors.ObjectInUse,
        psycopg.errors.ObjectNotInPrerequisiteState,
        psycopg.errors.InsufficientPrivilege,
    ) as error:
        raise _refused(job_id, error) from None
    assert row is not None
    return row[0]


def retry_now(conn: psycopg.Connection[Any], job_id: int) -> str:
    """Make a scheduled, retrying or expired job ready now; its new state."""
    return str(_one(conn, job_id, sql.RETRY_NOW, (job_id,)))


def discard_job(
    conn: psycopg.Connection[Any], job_id: int, reason: str = "discarded by an operator"
) -> str:
    """Expire a job no worker holds, recording ``reason``; its new state."""
    return str(_one(conn, job_id, sql.DISCARD_JOB, (job_id, reason)))


def reschedule_job(
    conn: psycopg.Connection[Any],
    job_id: int,
    *,
    run_at: datetime | None = None,
    in_seconds: float | None = None,
) -> str:
    """Move an unresolved job that no worker holds to ``run_at``, or to
    ``in_seconds`` from now by the server's clock; its new state."""
    if (run_at is None) == (in_seconds is None):
        raise ValueError("give exactly one of run_at and in_seconds")
    if run_at is not None:
        return str(_one(conn, job_id, sql.RESCHEDULE_JOB_AT, (job_id, run_at)))
    return str(_one(conn, job_id, sql.RESCHEDULE_JOB_IN, (job_id, in_seconds)))


def retry_jobs_where(conn: psycopg.Connection[Any], where: JobFilter) -> int:
    """Make every matching job (not running) ready now; how many changed."""
    return int(_one(conn, None, sql.RETRY_JOBS_WHERE, where._params()))


def discard_jobs_where(
    conn: psycopg.Connection[Any], where: JobFilter, reason: str = "discarded by an operator"
) -> int:
    """Expire every matching job (not running); how many changed."""
    return int(_one(conn, None, sql.DISCARD_JOBS_WHERE, (*where._params(), reason)))


def seconds_ago(conn: psycopg.Connection[Any], seconds: float) -> datetime:
    """The server's now() minus ``seconds``."""
    row = conn.execute(sql.SECONDS_AGO, (seconds,)).fetchone()
    assert row is not None
    value: datetime = row[0]
    return value
