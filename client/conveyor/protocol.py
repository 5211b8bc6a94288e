"""What the locker, the buffer and the worker threads hand each other.

A :class:`LockedJob` goes from the locker through the buffer to a worker
thread; a :class:`Resolution` comes back the same way and tells the locker
which statement releases the job (Que's ``Metajob`` and result queue).

Both are NamedTuples: fields by name, the speed and size of a tuple, and a
``LockedJob`` sorts by urgency as it is, (priority, run_at, id) being its
first three fields.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, NamedTuple

from psycopg.rows import RowMaker

__all__: list[str] = []


class LockedJob(NamedTuple):
    """A job the locker's session holds the advisory lock of, as the worker
    reads it (``sql.JOB_COLUMNS``, in this order)."""

    priority: int
    run_at: datetime
    id: int
    job_class: str
    queue: str
    #: JSON text: the worker thread loads it, so a value Python cannot load
    #: is that job's error, not the locker's.
    args: str
    #: JSON text, as ``args``.
    data: str
    error_count: int
    maximum_retry_count: int


def locked_job_row(cursor: Any) -> RowMaker[LockedJob]:
    """A psycopg row factory: rows of ``sql.LOCK_JOBS`` as :class:`LockedJob`
    (positional, as cheap as a tuple: the columns are selected in order)."""
    return LockedJob._make


class Action(enum.Enum):
    """What the locker does with a job a worker is done with."""

    DESTROY = "destroy"
    FINISH = "finish"
    EXPIRE = "expire"
    #: Record the error and schedule the next run (or expire past the limit).
    RETRY = "retry"
    #: The job resolved itself on its own connection: only release the lock.
    UNLOCK = "unlock"


class Resolution(NamedTuple):
    """A worked job's outcome. ``message``, ``backtrace`` and ``delay``
    (seconds, None for the SQL backoff) are a retry's."""

    action: Action
    #: None for a job run synchronously (it has no row).
    job_id: int | None
    message: str | None = None
    backtrace: str | None = None
    delay: float | None = None


class AnnouncedJob(NamedTuple):
    """A job a notification announced to this locker: enough to decide
    whether to lock it (by id) before reading its row."""

    priority: int
    id: int
