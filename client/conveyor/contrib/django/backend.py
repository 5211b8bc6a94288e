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
from psycopg.sql import Literal

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
        self._fixed: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}
        # The last enqueue's cursor, used again while its psycopg connection
        # is the one Django's connection has (a connection serves one thread).
        self._cursor: ServerCursor[Any] | None = None

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
        db = self._connection()
        db.ensure_connection()
        db.validate_no_broken_transaction()
        conn = db.connection
        statement, params = self._enqueue_query(task, args, kwargs, conn)
        job_id = self._insert(db, conn, statement, params)
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
        self, task: Task, args: list[Any], kwargs: dict[str, Any], conn: Any
    ) -> tuple[str, list[Any]]:
        """``conveyor.enqueue``'s statement and parameters for the task: the
        job :func:`conveyor.enqueue` would insert, with every parameter of
        the function given (``sql.enqueue_every``) and what depends only on
        the task written into the statement, worked out once per task and
        kind of call (an enqueue is a few hundred microseconds, the server's
        parse and plan of an unprepared call about a fifth of it; see
        docs/performance.md). The parameters are the arguments' JSON, then
        run_at if the task has one, then data if it holds keyword arguments.
        ``conn`` (psycopg's) quotes the constants."""
        key = (
            task.module_path,
            task.queue_name,
            task.priority,
            task.run_after is None,
            not kwargs,
        )
        fixed = self._fixed.get(key)
        if fixed is None:
            data = {"task": task.module_path, "backend": self.alias}
            statement = sql.enqueue_every(
                {
                    "job_class": Literal(DjangoTask.job_class),
                    "args": None,
                    "queue": Literal(task.queue_name),
                    "priority": Literal(conveyor_priority(task.priority)),
                    "run_at": sql.NOW if task.run_after is None else None,
                    "data": None if kwargs else Literal(enqueueing.dumps(data, "data")),
                    "maximum_retry_count": Literal(self.max_retries),
                }
            )
            fixed = (statement.as_string(conn), data)
            self._fixed[key] = fixed
        statement_text, data = fixed
        params = [enqueueing.dumps(args, "args")]
        if task.run_after is not None:
            params.append(task.run_after)
        if kwargs:
            params.append(enqueueing.dumps({**data, "kwargs": kwargs}, "kwargs"))
        return statement_text, params

    def _insert(self, db: Any, conn: Any, statement: str, params: list[Any]) -> int:
        """Run the enqueue statement on ``conn``, the psycopg connection
        under Django's ``db`` (in its transaction), with Django's error
        translation (its cursors' ``wrap_database_errors``).

        On a cursor of psycopg's own (server-side binding), not Django's
        (client-side binding by default, which psycopg never prepares): the
        statement is then handled as ``conveyor.enqueue`` handles it on a
        plain connection, prepared once it has run the connection's
        ``prepare_threshold`` times (Django's default None, for
        transaction-mode poolers, never prepares it). Django's cursor
        wrapper is left out: it costs more CPU than the statement itself,
        and so are its ``execute_wrapper`` hooks and its DEBUG query log.
        One cursor per psycopg connection, kept for the next enqueue."""
        cursor = self._cursor
        if cursor is None or cursor.connection is not conn:
            cursor = self._cursor = ServerCursor(conn)
        try:
            row = cursor.execute(statement, params).fetchone()
        except Exception:
            with db.wrap_database_errors:
                raise
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
