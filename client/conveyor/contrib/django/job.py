"""The conveyor job class that runs Django tasks in ``conveyor worker``.

Every task the backend enqueues is a job of this one class: its ``args`` are
the task's positional arguments, ``data.kwargs`` its keyword arguments,
``data.task`` the task's dotted path and ``data.backend`` the ``TASKS``
alias. The job is kept when it ends (finished with what the task returned,
or expired with its errors), so ``get_result`` can report it; ``conveyor
cleanup`` deletes old ones.
"""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from typing import Any

from django.db import close_old_connections
from psycopg.types.json import Jsonb

from ...errors import format_error
from ...job import Job
from ...protocol import Action, Resolution
from .compat import (
    TaskContext,
    TaskResult,
    normalize_json,
    task_backends,
    task_finished,
    task_started,
)
from .results import load_task, task_result

__all__ = ["DjangoTask", "worker_id"]

# The job-history functions (finish_jobs, retry_job) with the attempt: when
# it started and which worker made it, so get_result can list the attempts.
FINISH_WITH_RESULT = (
    "SELECT conveyor.finish_jobs(ARRAY[%s::bigint], results => jsonb_build_array(%s::jsonb),"
    " attempted_at => ARRAY[%s::timestamptz], attempted_by => %s::text)"
)
RETRY_WITH_ATTEMPT = (
    "SELECT id FROM conveyor.retry_job(%s::bigint, %s::text, %s::text, %s::double precision,"
    " attempted_at => %s::timestamptz, attempted_by => %s::text)"
)


def worker_id() -> str:
    """This worker process, as conveyor's history names it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class DjangoTask(Job):
    """Runs one Django task (see the module docs). Django's database
    connections are checked with ``close_old_connections()`` before and
    after each task, as Django does around a request."""

    job_class = "conveyor.contrib.django.job.DjangoTask"

    _backend: Any = None
    _started_at: datetime | None = None

    def run(self, *args: Any, **kwargs: Any) -> Any:
        self._started_at = datetime.now(UTC)  # until the database dates it
        close_old_connections()
        try:
            backend = task_backends[self._data.get("backend", "default")]
            self._backend = backend
            # The server's clock: the one that dates the error history, which
            # get_result compares the attempt's start with.
            row = backend.start_attempt(self.id, None, worker_id())
            self._started_at = row.attempted_at or self._started_at
            task = load_task(self._data["task"], row)
            running = task_result(row, task, backend.alias, running_on=worker_id())
            task_started.send(type(backend), task_result=running)
            if task.takes_context:
                value = task.call(TaskContext(task_result=running), *args, **kwargs)
            else:
                value = task.call(*args, **kwargs)
            value = normalize_json(value)
            self._finish(value)
            self._send_finished(backend)
            return value
        finally:
            close_old_connections()

    def _finish(self, value: Any) -> None:
        """Finish (keep) the job with the task's return value, committed
        before ``task_finished`` is sent, so its receivers read it."""
        with self.connection() as conn:
            conn.execute(FINISH_WITH_RESULT, (self.id, Jsonb(value), self._started_at, worker_id()))
        self._resolution = Resolution(Action.UNLOCK, self.id)

    def _send_finished(self, backend: Any) -> TaskResult:
        result: TaskResult = backend.get_result(str(self.id))
        if result.is_finished:
            task_finished.send(type(backend), task_result=result)
        return result

    def handle_error(self, error: BaseException) -> bool:
        """Record the error in the job's history with this attempt, and retry
        the job (up to the backend's ``max_retries``: the SQL expires it
        past the job's maximum_retry_count) -- the task FAILED then, and
        ``task_finished`` is sent."""
        message, backtrace = format_error(error)
        close_old_connections()
        try:
            with self.connection() as conn:
                conn.execute(
                    RETRY_WITH_ATTEMPT,
                    (
                        self.id,
                        message,
                        backtrace,
                        self._default_retry_delay(),
                        self._started_at,
                        worker_id(),
                    ),
                )
            self._resolution = Resolution(Action.UNLOCK, self.id)
            if self._backend is not None:
                self._send_finished(self._backend)
        finally:
            close_old_connections()
        return True
