"""A conveyor job, read from ``conveyor.jobs_view``, as a Django
``TaskResult``: the one place that maps conveyor's states, priorities,
error history and attempts onto the tasks framework's terms.

conveyor's priorities are lower-first and start at 0 (default 100); Django's
are -100..100, higher first (default 0). A task's priority ``p`` is stored as
``100 - p``: Django's default lands on conveyor's default, Django's highest
(100) on 0, its lowest (-100) on 200, and the order is kept exactly.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, NamedTuple

from django.utils.module_loading import import_string

from .compat import Task, TaskError, TaskResult, TaskResultStatus

__all__ = [
    "RESULT_QUERY",
    "START_QUERY",
    "JobRow",
    "conveyor_priority",
    "django_priority",
    "exception_class_path",
    "json_value",
    "task_result",
]

#: conveyor's priority for Django's default priority (0): conveyor's own default.
PRIORITY_OFFSET = 100


def conveyor_priority(priority: int) -> int:
    """Django's priority (-100..100, higher first) as conveyor's (lower first)."""
    return PRIORITY_OFFSET - priority


def django_priority(priority: int) -> int:
    """conveyor's priority as Django's, clamped to Django's range (a job
    changed by hand may hold a priority Django cannot express)."""
    return max(-100, min(100, PRIORITY_OFFSET - priority))


# state: the one definition of a job's state (conveyor.jobs_view).
RESULT_QUERY = (
    "SELECT id, job_class, queue, priority, run_at, args, data, state, result, errors,"
    " error_count, created_at, finished_at, expired_at, attempted_at, attempted_by"
    " FROM conveyor.jobs_view WHERE id = %s"
)

# The same columns from start_attempt, which records the attempt a worker
# starts (when, and which worker) so that every reader of the job sees it.
# The job is running: this worker holds its lock.
START_QUERY = (
    "SELECT id, job_class, queue, priority, run_at, args, data, 'running', result, errors,"
    " error_count, created_at, finished_at, expired_at, attempted_at, attempted_by"
    " FROM conveyor.start_attempt(%s::bigint, %s::timestamptz, %s::text)"
)


class JobRow(NamedTuple):
    """A row of :data:`RESULT_QUERY`."""

    id: int
    job_class: str
    queue: str
    priority: int
    run_at: datetime
    args: Any
    data: Any
    state: str
    result: Any
    errors: Any
    error_count: int
    created_at: datetime
    finished_at: datetime | None
    expired_at: datetime | None
    attempted_at: datetime | None
    attempted_by: str | None


def json_value(value: Any) -> Any:
    # Django's connections load jsonb as text (its JSONField decodes it);
    # a plain psycopg connection gives Python values.
    return json.loads(value) if isinstance(value, str | bytes) else value


#: conveyor's states (jobs_view.state) as Django's. Unknown states (a later
#: conveyor may add some, such as paused) are waiting: READY.
_STATUS = {
    "finished": TaskResultStatus.SUCCESSFUL,
    "expired": TaskResultStatus.FAILED,
    "running": TaskResultStatus.RUNNING,
}


def exception_class_path(backtrace: str | None, message: str | None) -> str:
    """The dotted path of the exception class an error entry records: its
    traceback's last line is ``module.Class: text`` (Python leaves out the
    module for builtins, so a bare name is ``builtins.Name``)."""
    lines = [line for line in (backtrace or message or "").splitlines() if line.strip()]
    if not lines:
        return "builtins.Exception"
    name = lines[-1].partition(":")[0].strip()
    if not name or " " in name:
        return "builtins.Exception"
    return name if "." in name else f"builtins.{name}"


def task_errors(errors: list[dict[str, Any]]) -> list[TaskError]:
    return [
        TaskError(
            exception_class_path=exception_class_path(e.get("backtrace"), e.get("message")),
            traceback=e.get("backtrace") or e.get("message") or "",
        )
        for e in errors
    ]


def attempt_started(row: JobRow, errors: list[dict[str, Any]]) -> bool:
    """Whether the attempt of a job that is locked (state running) has
    started: its worker recorded it (start_attempt) after the last error.
    A job locked in a worker's buffer, not started yet, is running for
    conveyor but waiting (READY) for Django."""
    if row.attempted_at is None:
        return False
    last_error = errors[-1].get("at") if errors and row.error_count else None
    if not last_error:
        return True
    return row.attempted_at > datetime.fromisoformat(last_error)


def worker_ids(row: JobRow, errors: list[dict[str, Any]], running_on: str | None) -> list[str]:
    """The workers of the attempts, oldest first: those that failed (the
    error history), the one whose attempt finished the job, and the one
    running it now (``running_on``). A worker that is not known is ``""``."""
    # Only the newest entries of the history are kept: older attempts are
    # known by count (error_count), not by worker.
    ids = [""] * max(0, row.error_count - len(errors))
    ids += [e.get("worker") or "" for e in errors]
    if row.state == "finished":
        ids.append(row.attempted_by or "")
    if running_on is not None:
        ids.append(running_on)
    return ids


def load_task(path: str, row: JobRow) -> Task:
    """The task a job runs, with the options it was enqueued with."""
    found = import_string(path)
    if not isinstance(found, Task):
        raise TypeError(f"{path} is not a task (a function decorated with @task)")
    changes: dict[str, Any] = {
        "queue_name": row.queue,
        "priority": django_priority(row.priority),
    }
    return found.using(**changes)


def task_result(
    row: JobRow, task: Task, backend_alias: str, *, running_on: str | None = None
) -> TaskResult:
    """The TaskResult of a job row; ``running_on`` is the worker id of the
    attempt running it now (the worker's own view while it runs the task;
    other readers find it in the row, as start_attempt recorded it)."""
    data = json_value(row.data) or {}
    errors = list(json_value(row.errors) or [])
    status = _STATUS.get(row.state, TaskResultStatus.READY)
    if running_on is None and status == TaskResultStatus.RUNNING:
        # Another process's view: the worker that started the attempt.
        if attempt_started(row, errors):
            running_on = row.attempted_by or ""
        else:
            status = TaskResultStatus.READY
    if running_on is not None:
        status = TaskResultStatus.RUNNING
    # The latest attempt's start: the running attempt's while one runs
    # (start_attempt records it), else the one that was resolved last.
    started_at = row.attempted_at
    result = TaskResult(
        task=task,
        id=str(row.id),
        status=status,
        enqueued_at=row.created_at,
        started_at=started_at,
        finished_at=row.finished_at or row.expired_at,
        last_attempted_at=row.attempted_at,
        args=list(json_value(row.args) or []),
        kwargs=dict(data.get("kwargs") or {}),
        backend=backend_alias,
        errors=task_errors(errors),
        worker_ids=worker_ids(row, errors, running_on),
    )
    if status == TaskResultStatus.SUCCESSFUL:
        object.__setattr__(result, "_return_value", json_value(row.result))
    return result
