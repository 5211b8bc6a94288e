"""Enqueueing from asyncio code: :func:`enqueue` and :func:`enqueue_many` on a
:class:`psycopg.AsyncConnection` (or a SQLAlchemy ``AsyncSession`` /
``AsyncConnection`` on the psycopg dialect), in its current transaction::

    async with await psycopg.AsyncConnection.connect(url) as aconn:
        await conveyor.aio.enqueue(aconn, SendWelcomeEmail, 42, queue="mail")

The options, their defaults and the errors are those of
:func:`conveyor.enqueue` and :func:`conveyor.enqueue_many`; the statements
are the same. Under :func:`conveyor.run_synchronously`, a job is run at
once on the caller's event loop (``async def run`` is awaited), and its
:meth:`~conveyor.Job.aconnection` is the enqueuing connection in a savepoint.

``async def run`` jobs themselves run in any ``conveyor worker`` (see the
asyncio how-to): this module is only the enqueuing side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from . import enqueueing
from .connections import AsyncConnectable
from .job import Job
from .job_enqueue import aenqueue_job, aenqueue_jobs, job_class_and_name

__all__ = ["enqueue", "enqueue_many"]


async def enqueue(
    conn: AsyncConnectable,
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
    """Enqueue one job in ``conn``'s current transaction; return its id (None
    when it ran synchronously). As :func:`conveyor.enqueue`, awaited."""
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
    return await aenqueue_job(conn, cls, name, args, options)


async def enqueue_many(conn: AsyncConnectable, jobs: Iterable[Mapping[str, Any]]) -> list[int]:
    """Enqueue many jobs in one statement in ``conn``'s current transaction;
    the new ids in input order. As :func:`conveyor.enqueue_many`, awaited."""
    return await aenqueue_jobs(conn, jobs)
