"""What the locker, the buffer and the worker threads hand each other.

A :class:`LockedJob` goes from the locker through the buffer to a worker
thread; a :class:`Resolution` comes back the same way and tells the locker
which statement releases the job (Que's ``Metajob`` and result queue).

Both are NamedTuples: fields by name, the speed and size of a tuple, and a
``LockedJob`` sorts by urgency as it is, (priority, run_at, id) being its
first three fields.
"""

from __future__ import annotations

import contextlib
import enum
import json
from collections.abc import Sequence
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
    """A worked job's outcome. ``message``, ``backtrace``, ``delay``
    (seconds, None for the SQL backoff) and ``expire`` are a retry's."""

    action: Action
    #: None for a job run synchronously (it has no row).
    job_id: int | None
    message: str | None = None
    backtrace: str | None = None
    delay: float | None = None
    #: A retry that gives up: the error is recorded and the job expired
    #: (``expire()`` from ``handle_error``).
    expire: bool = False
    #: A kept job's result: the JSON text of what ``run`` returned (FINISH).
    result: str | None = None
    #: When the attempt started (``time.time()``), for ``attempted_at`` and
    #: the error history (FINISH and RETRY; None: not said).
    started_at: float | None = None


class AnnouncedJob(NamedTuple):
    """A job a notification announced to this locker: enough to decide
    whether to lock it (by id) before reading its row."""

    priority: int
    id: int


_MAX_ID = 2**63 - 1
#: A wake_in beyond a day is not a throttle window this worker waits for.
_MAX_WAKE_IN = 86_400.0


class Notification(NamedTuple):
    """A NOTIFY payload the insert trigger sends a locker (see
    ``docs/reference/protocol.md``): ``{"jobs": [{"id", "priority", ...}],
    "more": bool}``, where ``more`` means that more jobs were ready than the
    payload lists (the locker should poll). ``lock_jobs`` adds ``"wake_in":
    seconds`` when a throttle held jobs back: poll again then."""

    jobs: list[AnnouncedJob]
    more: bool
    wake_in: float | None = None

    @classmethod
    def parse(cls, payload: str) -> Notification:
        """Raises (ValueError, TypeError, KeyError...) for anything else: a
        NOTIFY can come from anyone allowed to send one."""
        message = json.loads(payload)
        jobs = [
            AnnouncedJob(int(job["priority"]), int(job["id"])) for job in message.get("jobs") or []
        ]
        if not all(0 < job.id <= _MAX_ID for job in jobs):
            raise ValueError("job id out of range")
        wake_in = message.get("wake_in")
        if wake_in is not None:
            wake_in = float(wake_in)
            if not 0 <= wake_in < _MAX_WAKE_IN:  # also NaN
                raise ValueError("wake_in out of range")
        return cls(jobs, bool(message.get("more")), wake_in)


# --- the locker's statements: one cycle's round trip ---------------------------------


class StatementKind(enum.Enum):
    """What a statement of a cycle does, and so what its result is."""

    #: Resolves or releases jobs (destroy/finish/expire/unlock, retry): no rows.
    RESOLVE = "resolve"
    #: ``lock_jobs_by_id`` of announced jobs: the locked rows.
    LOCK_BY_ID = "lock_by_id"
    #: ``lock_jobs``, a poll: the locked rows, counted for the poller.
    POLL = "poll"
    #: ``enqueue_due_schedules`` and ``next_schedule_at``: plain rows.
    SCHEDULES = "schedules"


class Statement(NamedTuple):
    query: str
    params: Sequence[Any]
    kind: StatementKind


class Resolutions(NamedTuple):
    """The statements that resolve a cycle's results, and what they release."""

    statements: list[Statement]
    released: list[int]
    #: Whether they include unlock_jobs.
    unlocking: bool


class Locks(NamedTuple):
    """A cycle's lock statements (by id first, then polls) and their plan."""

    statements: list[Statement]
    requests: list[tuple[int, int | None]]
    full: bool
    by_id: int
    now: float


NO_LOCKS = Locks([], [], False, 0, 0.0)


# --- for error notifiers and Job.attrs ---------------------------------------------


def job_row_dict(row: LockedJob | None, error_count: int | None = None) -> dict[str, Any]:
    """A job row as the dict error notifiers and ``Job.attrs`` get."""
    if row is None:
        return {}
    result = row._asdict()
    for key in ("args", "data"):
        with contextlib.suppress(Exception):  # keep the text if it does not load
            result[key] = json.loads(str(result[key]))
    if error_count is not None:
        result["error_count"] = error_count
    return result
