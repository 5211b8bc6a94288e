"""``ConveyorBackend``: Django's tasks framework on conveyor.

``TASKS = {"default": {"BACKEND": "conveyor.contrib.django.ConveyorBackend",
"QUEUES": ["default", "mail"], "OPTIONS": {"database": "default",
"max_retries": 0}}}``. A task is enqueued as one conveyor job of the class
:class:`~conveyor.contrib.django.job.DjangoTask` through Django's own
connection of the ``database`` alias, in the caller's transaction: inside
``transaction.atomic()`` it is rolled back with it and visible to workers
once it commits. ``python manage.py conveyor_worker`` runs it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import connections
from django.utils import timezone
from psycopg import Cursor as ServerCursor

from ... import enqueueing, sql
from .compat import (
    BaseTaskBackend,
    InvalidTaskBackend,
    Task,
    TaskResult,
    TaskResultDoesNotExist,
    TaskResultStatus,
    task_enqueued,
)
from .job import DjangoTask
from .results import (
    RESULT_QUERY,
    START_QUERY,
    JobRow,
    conveyor_priority,
    json_value,
    load_task,
    task_result,
)

__all__ = ["ConveyorBackend"]

#: OPTIONS the backend knows, with their defaults.
DEFAULT_OPTIONS: dict[str, Any] = {
    # The DATABASES alias whose connection enqueues (and whose database the
    # worker and the migration use).
    "database": "default",
    # Errors a task may raise before it FAILS (Django's tasks fail at the
    # first error; a retried task is READY again, its errors listed).
    "max_retries": 0,
}


class ConveyorBackend(BaseTaskBackend):
    """A Django task backend that enqueues conveyor jobs (see the module docs)."""

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        unknown = set(self.options) - set(DEFAULT_OPTIONS)
        if unknown:
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]: unknown OPTIONS {sorted(unknown)} for "
                f"conveyor.contrib.django.ConveyorBackend (known: {sorted(DEFAULT_OPTIONS)})"
            )
        options = {**DEFAULT_OPTIONS, **self.options}
        self.database: str = options["database"]
        retries = options["max_retries"]
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise InvalidTaskBackend(
                f"TASKS[{alias!r}]: OPTIONS['max_retries'] must be an integer >= 0, not {retries!r}"
            )
        self.max_retries: int = retries
        # What an enqueue sends that depends only on the task, by (path,
        # queue, priority, no run_after): data, its JSON, statement, options.
        self._fixed: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def _connection(self) -> Any:
        try:
            return connections[self.database]
        except Exception as error:  # django.utils.connection.ConnectionDoesNotExist
            raise ImproperlyConfigured(
                f"TASKS[{self.alias!r}]: OPTIONS['database'] is {self.database!r}, "
                "which is not in DATABASES"
            ) from error

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        """Insert the task as a conveyor job in the current transaction of the
        ``database`` alias's connection; its TaskResult (status READY)."""
        self.validate_task(task)
        args, kwargs = list(args), dict(kwargs)
        statement, params = self._enqueue_query(task, args, kwargs)
        job_id = self._insert(statement, params)
        result = TaskResult(
            task=task,
            id=str(job_id),
            status=TaskResultStatus.READY,
            enqueued_at=timezone.now(),
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        task_enqueued.send(type(self), task_result=result)
        return result

    def _enqueue_query(
        self, task: Task, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[str, list[Any]]:
        """``conveyor.enqueue``'s statement and parameters for the task: what
        :func:`conveyor.enqueue` would send (``enqueueing.options``), with
        the parts that depend only on the task worked out once per task
        (an enqueue is a few hundred microseconds; see docs/performance.md)."""
        key = (task.module_path, task.queue_name, task.priority, task.run_after is None)
        fixed = self._fixed.get(key)
        if fixed is None:
            data = {"task": task.module_path, "backend": self.alias}
            options = enqueueing.options(
                None,
                queue=task.queue_name,
                priority=conveyor_priority(task.priority),
                run_at=task.run_after,
                data=data,
                maximum_retry_count=self.max_retries,
                kwargs=None,
            )
            names = tuple(options)
            fixed = (data, enqueueing.dumps(data, "data"), sql.enqueue(names), names, options)
            self._fixed[key] = fixed
        data, data_json, statement, names, options = fixed
        params = [DjangoTask.job_class, enqueueing.dumps(args, "args")]
        for name in names:
            if name == "data":
                params.append(
                    enqueueing.dumps({**data, "kwargs": kwargs}, "kwargs") if kwargs else data_json
                )
            elif name == "run_at":
                params.append(task.run_after)
            else:
                params.append(options[name])
        return statement, params

    def _insert(self, statement: str, params: list[Any]) -> int:
        """Run the enqueue statement on the psycopg connection under Django's
        (in its transaction), with Django's checks and error translation.

        On a cursor of psycopg's own (server-side binding), not Django's
        (client-side binding by default, which psycopg never prepares): the
        statement is then handled as ``conveyor.enqueue`` handles it on a
        plain connection, prepared once it has run the connection's
        ``prepare_threshold`` times (Django's default None, for
        transaction-mode poolers, never prepares it). Parsing and planning
        the call is about a quarter of an enqueue's time (see
        docs/performance.md). Django's cursor wrapper is left out: it costs
        more CPU than the statement itself, and so are its
        ``execute_wrapper`` hooks and its DEBUG query log."""
        db = self._connection()
        db.ensure_connection()
        db.validate_no_broken_transaction()
        with db.wrap_database_errors:
            row = ServerCursor(db.connection).execute(statement, params).fetchone()
        assert row is not None  # enqueue returns one row or raises
        return int(row[0])

    def get_result(self, result_id: str) -> TaskResult:
        """The task's result as conveyor's ``jobs_view`` has it now: the job
        must still exist (finished jobs are kept until ``conveyor.cleanup``)."""
        row = self.job_row(result_id)
        return task_result(row, load_task(_data(row)["task"], row), self.alias)

    def job_row(self, result_id: str) -> JobRow:
        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        with self._connection().cursor() as cursor:
            cursor.execute(RESULT_QUERY, (job_id,))
            found = cursor.fetchone()
        return self._job_row(result_id, found)

    def start_attempt(self, job_id: int, started_at: datetime | None, worker: str) -> JobRow:
        """Record in the job that ``worker`` started an attempt at
        ``started_at`` (None: the server's now()), committed at once in
        autocommit, so that get_result in other processes sees the running
        attempt; the job's row."""
        with self._connection().cursor() as cursor:
            cursor.execute(START_QUERY, (job_id, started_at, worker))
            found = cursor.fetchone()
        return self._job_row(str(job_id), found)

    def _job_row(self, result_id: str, found: Any) -> JobRow:
        if found is None:
            raise TaskResultDoesNotExist(result_id)
        row = JobRow(*found)
        if row.job_class != DjangoTask.job_class:
            raise TaskResultDoesNotExist(f"{result_id} is a conveyor job, not a Django task")
        return row


def _data(row: JobRow) -> dict[str, Any]:
    data: dict[str, Any] = json_value(row.data) or {}
    return data
