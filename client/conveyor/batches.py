"""Batches from Python: group jobs, and have callback jobs enqueued when they
are done.

The batch lives in SQL (``conveyor.batches``, ``conveyor.create_batch``,
``conveyor.close_batch``, ``conveyor.batch_stats``) and its callbacks are
fired by triggers on ``conveyor.jobs`` in whichever transaction resolves the
last job, so any worker in any language fires them. This module is a thin
client::

    class ReportReady(conveyor.Job):
        def run(self) -> None:
            event = conveyor.batches.batch_event(self)   # id, event, properties
            ...

    with conveyor.batch(conn, on_finish=ReportReady, properties={"report": 7}) as b:
        for page in pages:
            RenderPage.enqueue(page, conn=conn, batch_id=b.id)
    # closed here: ReportReady is enqueued once every RenderPage is resolved

A batch is open until it is closed; ``batch()`` closes it when the block ends
without an exception. Semantics (exactly once, what "resolved" means, which
callback fires when): docs/how-to/batches.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from .connections import Connectable, psycopg_connection
from .job import Job

__all__ = [
    "Batch",
    "BatchEvent",
    "BatchStats",
    "Callback",
    "batch",
    "batch_event",
    "batch_stats",
    "callback",
    "close_batch",
    "create_batch",
]

_CREATE = """\
SELECT conveyor.create_batch(%(description)s, on_finish => %(on_finish)s,
                             on_success => %(on_success)s, on_discard => %(on_discard)s,
                             properties => %(properties)s)"""
_CLOSE = "SELECT conveyor.close_batch(%s)"
_STATS = "SELECT * FROM conveyor.batch_stats(%s)"

#: A callback as the Python API takes it: a Job subclass (its class
#: attributes give queue, priority and maximum_retry_count), a job class
#: name, or a full description (see :func:`callback`).
Callback = type[Job] | str | Mapping[str, Any]


def callback(
    job_class: type[Job] | str,
    *args: Any,
    queue: str | None = None,
    priority: int | None = None,
    data: Mapping[str, Any] | None = None,
    maximum_retry_count: int | None = None,
) -> dict[str, Any]:
    """A callback job description with arguments, for ``on_finish`` and its
    siblings: ``callback(Notify, "ops@example.com", queue="mail")``. Options
    left None take the job class's attributes, then the SQL defaults."""
    if isinstance(job_class, str):
        description: dict[str, Any] = {"job_class": job_class}
    elif isinstance(job_class, type) and issubclass(job_class, Job):
        description = {"job_class": job_class.job_class}
        queue = job_class.queue if queue is None else queue
        priority = job_class.priority if priority is None else priority
        if maximum_retry_count is None:
            maximum_retry_count = job_class.maximum_retry_count
    else:
        raise TypeError(
            f"a callback's job_class must be a str or a Job subclass, not {job_class!r}"
        )
    given = {
        "args": list(args) if args else None,
        "queue": queue,
        "priority": priority,
        "data": dict(data) if data else None,
        "maximum_retry_count": maximum_retry_count,
    }
    description.update((key, value) for key, value in given.items() if value is not None)
    return description


def _callback_json(value: Callback | None) -> Jsonb | None:
    if value is None:
        return None
    if isinstance(value, (str, type)):
        return Jsonb(callback(value))
    if isinstance(value, Mapping):
        described = dict(value)
        job_class = described.get("job_class")
        if isinstance(job_class, type) and issubclass(job_class, Job):
            described["job_class"] = job_class.job_class
        return Jsonb(described)
    raise TypeError(
        f"a callback must be a Job subclass, a job class name or a mapping, not {value!r}"
    )


@dataclass(frozen=True)
class Batch:
    """An open batch: enqueue jobs into it with ``batch_id=batch.id``."""

    id: int
    conn: psycopg.Connection[Any]

    def close(self) -> bool:
        """``conveyor.close_batch``: True when this call closed it."""
        return close_batch(self.conn, self.id)

    def stats(self) -> BatchStats:
        """``conveyor.batch_stats`` of this batch."""
        return batch_stats(self.conn, self.id)


@dataclass(frozen=True)
class BatchStats:
    """A row of ``conveyor.batch_stats``: the batch, then its jobs by state."""

    batch_id: int
    description: str | None
    properties: dict[str, Any]
    created_at: datetime
    closed_at: datetime | None
    finished_at: datetime | None
    discarded_at: datetime | None
    ready: int
    scheduled: int
    retrying: int
    running: int
    finished: int
    expired: int
    destroyed: int
    total: int


@dataclass(frozen=True)
class BatchEvent:
    """What a callback job learns of its batch (its ``data["batch"]``)."""

    id: int
    event: str  # "finish", "success" or "discard"
    description: str | None
    properties: dict[str, Any]


def create_batch(
    conn: Connectable,
    *,
    description: str | None = None,
    on_finish: Callback | None = None,
    on_success: Callback | None = None,
    on_discard: Callback | None = None,
    properties: Mapping[str, Any] | None = None,
) -> Batch:
    """``conveyor.create_batch`` in ``conn``'s transaction: a new open batch.

    ``on_finish`` is enqueued once when the batch is closed and all its jobs
    are resolved (finished, expired or destroyed); ``on_success`` at the same
    moment if none expired; ``on_discard`` once, when the first job expires.
    A bad callback raises here (the SQLSTATE of enqueue's checks)."""
    pg = psycopg_connection(conn)
    row = pg.execute(
        _CREATE,
        {
            "description": description,
            "on_finish": _callback_json(on_finish),
            "on_success": _callback_json(on_success),
            "on_discard": _callback_json(on_discard),
            "properties": Jsonb(dict(properties or {})),
        },
    ).fetchone()
    assert row is not None
    return Batch(row[0], pg)


def close_batch(conn: Connectable, batch_id: int) -> bool:
    """``conveyor.close_batch``: no job may join the batch any more; its
    callbacks fire once all its jobs are resolved (at once if they are).
    True when this call closed it, False when it was closed already."""
    row = psycopg_connection(conn).execute(_CLOSE, (batch_id,)).fetchone()
    assert row is not None
    closed: bool = row[0]
    return closed


def batch_stats(conn: Connectable, batch_id: int) -> BatchStats:
    """``conveyor.batch_stats``: the batch and its jobs counted by state."""
    with psycopg_connection(conn).cursor(row_factory=class_row(BatchStats)) as cursor:
        stats = cursor.execute(_STATS, (batch_id,)).fetchone()
    assert stats is not None
    return stats


@contextmanager
def batch(
    conn: Connectable,
    *,
    description: str | None = None,
    on_finish: Callback | None = None,
    on_success: Callback | None = None,
    on_discard: Callback | None = None,
    properties: Mapping[str, Any] | None = None,
) -> Iterator[Batch]:
    """Create a batch, yield it, and close it when the block ends::

        with conveyor.batch(conn, on_finish=Notify) as b:
            Work.enqueue(1, conn=conn, batch_id=b.id)

    Everything runs in ``conn``'s transaction (autocommit: each statement
    commits). An exception in the block leaves the batch open and
    propagates: in a transaction the rollback takes the batch away with its
    jobs; in autocommit, close it yourself once the batch is complete, or its
    on_finish never fires."""
    created = create_batch(
        conn,
        description=description,
        on_finish=on_finish,
        on_success=on_success,
        on_discard=on_discard,
        properties=properties,
    )
    yield created
    created.close()


def batch_event(job: Job) -> BatchEvent | None:
    """The batch that enqueued ``job`` (run by a worker) as its callback, or
    None when ``job`` is no batch callback."""
    data = job.attrs.get("data") or {}
    found = data.get("batch") if isinstance(data, Mapping) else None
    if not isinstance(found, Mapping) or "id" not in found:
        return None
    return BatchEvent(
        id=int(found["id"]),
        event=str(found.get("event")),
        description=found.get("description"),
        properties=dict(found.get("properties") or {}),
    )
