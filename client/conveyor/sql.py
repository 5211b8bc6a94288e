"""Every SQL statement conveyor sends, in one place.

The statements only call the functions of the documented SQL contract
(``docs/reference/protocol.md``). Parameters are always cast explicitly so
that PostgreSQL resolves the function whatever type psycopg picks for a
Python value (a small int is sent as int2, a list of them as int2[]).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from psycopg import sql as _sql

__all__ = ["SQLMiddleware"]

#: ``middleware(sql, params, proceed)`` wraps one statement: it must call
#: ``proceed()`` (which runs the statement and returns its result) and return
#: that result. Middleware sees every statement the worker sends.
SQLMiddleware = Callable[[str, Sequence[Any], Callable[[], Any]], Any]


# --- enqueue ------------------------------------------------------------------

_ENQUEUE_OPTIONS = {
    "queue": "%s::text",
    "priority": "%s::integer",
    "run_at": "%s::timestamptz",
    "data": "%s::jsonb",
    "maximum_retry_count": "%s::integer",
    "unique_key": "%s::text",
    "concurrency_key": "%s::text",
    "labels": "%s::text[]",
    "batch_id": "%s::bigint",
}
_enqueue_cache: dict[tuple[str, ...], str] = {}


def enqueue(options: Sequence[str]) -> str:
    """``SELECT (conveyor.enqueue(...)).id`` passing only the given options by
    name, so that the SQL defaults apply to the others.

    The field of the function's result, not ``SELECT id FROM conveyor.enqueue(...)``:
    a function in FROM is a table scan that copies the row type's descriptor
    and stores the row in a tuplestore on every call, a sizeable share of the
    call's cost. The function still runs once per statement.
    """
    key = tuple(options)
    text = _enqueue_cache.get(key)
    if text is None:
        named = "".join(f", {name} => {_ENQUEUE_OPTIONS[name]}" for name in key)
        text = f"SELECT (conveyor.enqueue(%s::text, %s::jsonb{named})).id"
        _enqueue_cache[key] = text
    return text


ENQUEUE_MANY = "SELECT id FROM conveyor.enqueue_many(%s::jsonb) AS e(id)"

# --- the worker's statements ------------------------------------------------

#: Columns read for a locked job, in this order. The first three are the
#: buffer's sort key, so a row tuple sorts by urgency as it is.
JOB_COLUMNS = (
    "priority",
    "run_at",
    "id",
    "job_class",
    "queue",
    "args",
    "data",
    "error_count",
    "maximum_retry_count",
)
# args and data come as text: the worker thread parses them, so a value
# Python cannot load (nested too deeply) is that job's error, not the locker's.
_COLUMNS = ", ".join(f"{c}::text" if c in ("args", "data") else c for c in JOB_COLUMNS)

# The locker passes the ids its session holds as the last argument (`held`):
# it keeps count, and that spares every call a read of pg_locks, which costs
# a few hundred microseconds whatever the batch size. Id arrays go as array
# literals (see ids()).
LOCK_JOBS = (
    f"SELECT {_COLUMNS} FROM conveyor.lock_jobs(%s::text[], %s::integer, %s::integer, %s::bigint[])"
)
LOCK_JOBS_BY_ID = (
    f"SELECT {_COLUMNS} FROM conveyor.lock_jobs_by_id(%s::bigint[], %s::text[], %s::bigint[])"
)

DESTROY_JOBS = "SELECT conveyor.destroy_jobs(%s::bigint[], %s::bigint[])"
FINISH_JOBS = "SELECT conveyor.finish_jobs(%s::bigint[], %s::bigint[])"
EXPIRE_JOBS = "SELECT conveyor.expire_jobs(%s::bigint[], %s::bigint[])"
UNLOCK_JOBS = "SELECT conveyor.unlock_jobs(%s::bigint[], %s::bigint[])"
RETRY_JOB = (
    "SELECT id FROM conveyor.retry_job("
    "%s::bigint, %s::text, %s::text, %s::double precision, %s::boolean)"
)


def ids(values: Iterable[int]) -> str:
    """``{1,2,3}``: job ids as a PostgreSQL array literal, for a ``%s::bigint[]``
    parameter. psycopg's list adapter costs about a microsecond per element
    in Python, a third of a millisecond per locker cycle of 100 jobs (the ids
    and the held ids); this costs a tenth of that. Only for ints: ``str`` of
    an int cannot hold a quote or a brace."""
    return "{" + ",".join(map(str, values)) + "}"


DESTROY_JOB = "SELECT conveyor.destroy_job(%s::bigint)"
FINISH_JOB = "SELECT conveyor.finish_job(%s::bigint)"
EXPIRE_JOB = "SELECT conveyor.expire_job(%s::bigint)"

REGISTER_LOCKER = (
    "SELECT conveyor.register_locker(%s::text[], %s::integer[], %s::text, %s::integer, %s::boolean)"
)
UNREGISTER_LOCKER = "SELECT conveyor.unregister_locker()"
UNLISTEN_ALL = "UNLISTEN *"
#: Resets a pooled connection between jobs: DISCARD ALL but for prepared
#: statements, which psycopg keeps track of (and which stay valid).
RESET_SESSION = "CLOSE ALL; RESET ALL; UNLISTEN *; SELECT pg_advisory_unlock_all(); DISCARD TEMP"
#: The locker's own resolutions need not wait for the WAL flush: losing the
#: last ones in a server crash only means those jobs run again (at least once).
ASYNC_COMMIT = "SET synchronous_commit = off"

# --- recurring jobs, from the locker ------------------------------------------------

#: Whether this session may turn due schedules into jobs (the functions exist,
#: as in a schema older than them they would not, and are executable).
CAN_ENQUEUE_SCHEDULES = (
    "SELECT coalesce(has_function_privilege(to_regprocedure('conveyor.enqueue_due_schedules()'),"
    " 'EXECUTE') AND has_function_privilege(to_regprocedure('conveyor.next_schedule_at()'),"
    " 'EXECUTE'), false)"
)
#: Enqueue the due occurrences; the number of jobs.
ENQUEUE_DUE_SCHEDULES = "SELECT count(*) FROM conveyor.enqueue_due_schedules()"
#: Seconds until the next occurrence falls due, by the server's clock (NULL:
#: no enabled schedule). A statement of its own after ENQUEUE_DUE_SCHEDULES,
#: so that it sees the next_run_at that one moved.
NEXT_SCHEDULE_IN = (
    "SELECT extract(epoch FROM conveyor.next_schedule_at() - clock_timestamp())::float8"
)


def listen(channel: str) -> _sql.Composed:
    """``LISTEN "<channel>"``."""
    return _sql.SQL("LISTEN {}").format(_sql.Identifier(channel))


# --- inspection and schema ----------------------------------------------------

# `conveyor stats` names the "working" columns for what they count: jobs some
# session holds the lock of, those waiting in a worker's buffer included
# (job_stats keeps Que's column names).
JOB_STATS = (
    "SELECT job_class, count, count_working AS count_locked, count_errored,"
    " highest_error_count, oldest_run_at FROM conveyor.job_stats()"
)
QUEUE_STATS = (
    "SELECT queue, ready, scheduled, working AS locked, errored, expired, finished,"
    " oldest_ready_age FROM conveyor.queue_stats()"
)
SCHEMA_EXISTS = "SELECT to_regnamespace('conveyor') IS NOT NULL"
SCHEMA_VERSION = "SELECT conveyor.schema_version()"
SCHEMA_VERSION_EXISTS = "SELECT to_regprocedure('conveyor.schema_version()') IS NOT NULL"
