"""The pieces of enqueueing that need no job class: options, JSON, the two
INSERT statements, and the synchronous-mode switch.

:meth:`conveyor.Job.enqueue` owns the logic and builds on these, as Que's
``Job.enqueue`` does; :func:`conveyor.enqueue` (in :mod:`conveyor.client`)
is a thin front for a job class given by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

import psycopg

from . import sql

__all__ = ["run_synchronously"]

#: Keys a job of ``enqueue_many`` may have.
JOB_KEYS = frozenset(
    (
        "job_class",
        "args",
        "kwargs",
        "queue",
        "priority",
        "run_at",
        "data",
        "maximum_retry_count",
        "unique_key",
        "concurrency_key",
        "labels",
        "batch_id",
    )
)

_run_synchronously = False


@contextmanager
def run_synchronously(enabled: bool = True) -> Iterator[None]:
    """Within the block, enqueueing a job runs it at once in the calling
    thread instead of inserting it (Que's ``run_synchronously``), for tests::

        with conveyor.run_synchronously():
            SendWelcomeEmail.enqueue(42, conn=conn)   # runs now

    Jobs with a ``run_at`` are still inserted. Arguments go through a JSON
    round trip as they would through the database, the job gets the
    enqueuing connection from :meth:`Job.connection`, its resolution helpers
    do nothing (it has no row), and an error it raises propagates to the
    caller. The setting is process-wide; a ``Job`` subclass can also set
    ``run_synchronously = True``.
    """
    global _run_synchronously
    previous = _run_synchronously
    _run_synchronously = enabled
    try:
        yield
    finally:
        _run_synchronously = previous


class Defaults(Protocol):
    """The class attributes of a job class that give enqueue defaults."""

    queue: str | None
    priority: int | None
    maximum_retry_count: int | None
    run_synchronously: bool

    @property
    def unique_key(self) -> str | Callable[..., str | None] | None: ...

    @property
    def concurrency_key(self) -> str | Callable[..., str | None] | None: ...

    labels: Sequence[str] | None


def options(
    defaults: Defaults | None,
    *,
    queue: str | None,
    priority: int | None,
    run_at: datetime | None,
    data: Mapping[str, Any] | None,
    maximum_retry_count: int | None,
    kwargs: Mapping[str, Any] | None,
    unique_key: str | None = None,
    concurrency_key: str | None = None,
    labels: Sequence[str] | None = None,
    batch_id: int | None = None,
    args: Sequence[Any] = (),
) -> dict[str, Any]:
    """The options to send, by SQL parameter name: those given, else the
    class's defaults; the others are left out so the SQL defaults apply.
    A class's ``unique_key`` or ``concurrency_key`` that is callable is
    called with the job's ``args`` and ``kwargs``."""
    if defaults is not None:
        queue = defaults.queue if queue is None else queue
        priority = defaults.priority if priority is None else priority
        if maximum_retry_count is None:
            maximum_retry_count = defaults.maximum_retry_count
        if unique_key is None:
            unique_key = default_key(defaults, "unique_key", args, kwargs)
        if concurrency_key is None:
            concurrency_key = default_key(defaults, "concurrency_key", args, kwargs)
        if labels is None:
            labels = defaults.labels
    if kwargs:
        data = {**(data or {}), "kwargs": dict(kwargs)}
    given = {
        "queue": queue,
        "priority": priority,
        "run_at": run_at,
        "data": data,
        "maximum_retry_count": maximum_retry_count,
        "unique_key": unique_key,
        "concurrency_key": concurrency_key,
        # a str is a Sequence too: one label, not one per character
        "labels": None if labels is None else [labels] if isinstance(labels, str) else list(labels),
        "batch_id": batch_id,
    }
    return {name: value for name, value in given.items() if value is not None}


def default_key(
    defaults: Defaults, attribute: str, args: Sequence[Any], kwargs: Mapping[str, Any] | None
) -> str | None:
    """The class's ``unique_key`` or ``concurrency_key`` (``attribute``) for a
    job with these arguments: the attribute's string, or what its callable
    returns."""
    key = getattr(defaults, attribute, None)
    if key is None or isinstance(key, str):
        return key
    value = key(*args, **(kwargs or {}))
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{attribute} must return a str or None, not {type(value).__name__}")
    return value


def synchronous(defaults: Defaults | None, options: Mapping[str, Any]) -> bool:
    """Whether a job with these options runs now instead of being inserted."""
    if "run_at" in options:
        return False
    return _run_synchronously or (defaults is not None and defaults.run_synchronously)


#: json.dumps(value, separators=...) builds a new encoder on every call; one
#: shared encoder (stateless between calls, so thread-safe) does the same work.
_encode_json = json.JSONEncoder(separators=(",", ":")).encode


def dumps(value: Any, what: str) -> str:
    """``value`` as compact JSON; TypeError naming ``what`` if it is not JSON."""
    try:
        return _encode_json(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{what} must be JSON-serializable: {error}") from None
    except RecursionError:
        raise TypeError(f"{what} must be JSON-serializable: nested too deeply") from None


def insert_job_query(name: str, args: Any, options: dict[str, Any]) -> tuple[str, list[Any]]:
    """The statement and parameters that ``conveyor.enqueue`` one job (for
    callers that run it on their own cursor, such as Django's)."""
    if "data" in options:
        options["data"] = dumps(dict(options["data"]), "data")
    return sql.enqueue(tuple(options)), [name, dumps(args, "args"), *options.values()]


def insert_job(
    conn: psycopg.Connection[Any], name: str, args: Any, options: dict[str, Any]
) -> int | None:
    """``conveyor.enqueue`` one job; its id (None: its enqueue_limit is full)."""
    statement, params = insert_job_query(name, args, options)
    row = conn.execute(statement, params).fetchone()
    assert row is not None
    job_id: int | None = row[0]
    return job_id


async def ainsert_job(
    conn: psycopg.AsyncConnection[Any], name: str, args: Any, options: dict[str, Any]
) -> int:
    """:func:`insert_job` on an async connection."""
    statement, params = insert_job_query(name, args, options)
    row = await (await conn.execute(statement, params)).fetchone()
    assert row is not None
    job_id: int = row[0]
    return job_id


def job_spec(name: str, args: list[Any], options: dict[str, Any]) -> dict[str, Any]:
    """One job of an ``enqueue_many`` payload."""
    if "run_at" in options:
        options["run_at"] = options["run_at"].isoformat()
    return {"job_class": name, "args": args, **options}


def insert_jobs(conn: psycopg.Connection[Any], specs: list[dict[str, Any]]) -> list[int]:
    """``conveyor.enqueue_many`` the jobs; their ids in order."""
    if not specs:
        return []
    rows = conn.execute(sql.ENQUEUE_MANY, (dumps(specs, "jobs"),)).fetchall()
    return [row[0] for row in rows]


async def ainsert_jobs(
    conn: psycopg.AsyncConnection[Any], specs: list[dict[str, Any]]
) -> list[int]:
    """:func:`insert_jobs` on an async connection."""
    if not specs:
        return []
    rows = await (await conn.execute(sql.ENQUEUE_MANY, (dumps(specs, "jobs"),))).fetchall()
    return [row[0] for row in rows]
