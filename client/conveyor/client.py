"""Enqueueing jobs from Python, and the synchronous mode for tests.

Thin fronts: :class:`~conveyor.Job` owns enqueueing (as in Que, where
``Que.enqueue`` hands over to ``Job.enqueue``); these take the job class by
name as well as by class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from . import enqueueing
from .connections import Connectable
from .enqueueing import run_synchronously
from .job import Job
from .job_enqueue import enqueue_job, enqueue_jobs, job_class_and_name

__all__ = ["enqueue", "enqueue_many", "run_synchronously"]


def enqueue(
    conn: Connectable,
    job_class: str | type[Job],
    *args: Any,
    queue: str | None = None,
    priority: int | None = None,
    run_at: datetime | None = None,
    data: Mapping[str, Any] | None = None,
    maximum_retry_count: int | None = None,
    kwargs: Mapping[str, Any] | None = None,
    unique_key: str | None = None,
    concurrency_key: str | None = None,
    labels: Sequence[str] | None = None,
    batch_id: int | None = None,
) -> int | None:
    """Enqueue one job in ``conn``'s current transaction; return its id.

    ``conn`` is a :class:`psycopg.Connection`, or a SQLAlchemy 2 ``Session``
    or ``Connection`` on the psycopg dialect (``postgresql+psycopg://``):
    the job is inserted in that session's transaction, begun if it was not,
    and commits or rolls back with it. A psycopg2 connection is a
    :class:`TypeError`. The async forms go to :func:`conveyor.aio.enqueue`.

    ``job_class`` is a :class:`Job` subclass (whose class attributes give the
    defaults) or any name a worker knows, such as a dotted path. ``args``
    must be JSON-serializable. ``kwargs`` are passed to ``run`` as keyword
    arguments (stored in ``data["kwargs"]``). Options left None take the SQL
    defaults (queue ``'default'``, priority 100, run_at now, data ``{}``,
    maximum_retry_count 15). Like any write, the job exists once the
    transaction commits, and never if it rolls back. Returns None when the job
    ran synchronously (see :func:`run_synchronously`).

    ``unique_key`` (or the job class's ``unique_key``): while an unresolved
    job (ready, scheduled, running or awaiting a retry) has this key, nothing
    is inserted and that job's id is returned; once it is finished, expired
    or destroyed the key is free again. Race-free: an enqueue of a key that
    another transaction is inserting waits for that transaction to end.

    ``concurrency_key`` (or the class's): the key whose limits and throttle
    apply (docs/how-to/concurrency-limits.md); ``labels`` (or the class's):
    labels to pause or filter stats by; ``batch_id``: the batch the job
    belongs to.

    Errors: :class:`psycopg.errors.DataException` subclasses for rejected
    fields (see the protocol reference), :class:`TypeError` for arguments that
    are not JSON.
    """
    cls, name = job_class_and_name(job_class)
    options = enqueueing.options(
        cls,
        queue=queue,
        priority=priority,
        run_at=run_at,
        data=data,
        maximum_retry_count=maximum_retry_count,
        kwargs=kwargs,
        unique_key=unique_key,
        concurrency_key=concurrency_key,
        labels=labels,
        batch_id=batch_id,
        args=args,
    )
    return enqueue_job(conn, cls, name, args, options)


def enqueue_many(conn: Connectable, jobs: Iterable[Mapping[str, Any]]) -> list[int]:
    """Enqueue many jobs in one statement in ``conn``'s current transaction.

    Each job is a mapping with ``job_class`` (a name or a Job subclass) and
    optionally ``args``, ``kwargs``, ``queue``, ``priority``, ``run_at``,
    ``data``, ``maximum_retry_count``, ``unique_key``, ``concurrency_key``,
    ``labels`` and ``batch_id``. Returns the ids in
    input order: a job whose key an unresolved job holds returns that job's
    id, and of jobs with the same key in one call the first is inserted and
    the later ones return its id.
    Either every job is inserted or an error is raised. In synchronous mode,
    jobs without ``run_at`` run at once and only the others are inserted.
    """
    return enqueue_jobs(conn, jobs)
