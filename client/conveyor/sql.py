"""Every SQL statement conveyor sends, in one place.

The statements only call the functions of the documented SQL contract
(``docs/reference/protocol.md``). Parameters are always cast explicitly so
that PostgreSQL resolves the function whatever type psycopg picks for a
Python value (a small int is sent as int2, a list of them as int2[]).
Literals written into a statement (``enqueue_every``) are left uncast: a
literal has no type of its own, the function's parameter gives it one.
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


#: ``conveyor.enqueue``'s parameters in the function's order, each but the
#: last four (``enqueue_every`` gives those NULL, their default).
_ENQUEUE_ORDER = {"job_class": "%s::text", "args": "%s::jsonb", **_ENQUEUE_OPTIONS}
_ENQUEUE_EVERY = tuple(_ENQUEUE_ORDER)[:7]
assert _ENQUEUE_EVERY[-1] == "maximum_retry_count"

#: ``enqueue_every``'s run_at for a job that runs at once: run_at's default.
NOW = _sql.SQL("now()")


def enqueue_every(values: dict[str, _sql.Composable | None]) -> _sql.Composed:
    """``SELECT (conveyor.enqueue(...)).id`` with every parameter given, by
    position, for a caller that sends the same kind of job many times
    without prepared statements (Django's task backend): the server then
    parses and plans the call every time, and a call that leaves no
    parameter to its default skips expanding the defaults (in parse) and
    folding them (in plan), and a literal is cheaper to plan than a
    parameter (docs/performance.md).

    ``values`` has job_class, args, queue, priority, run_at, data and
    maximum_retry_count: a literal (``psycopg.sql.Literal``, left uncast:
    the function's parameter gives its type, which costs the parser less
    than a cast), :data:`NOW`, or None for a parameter (``%s``, cast). The
    last four parameters are NULL, their default."""
    if set(values) != set(_ENQUEUE_EVERY):
        raise ValueError(f"enqueue_every needs exactly {_ENQUEUE_EVERY}, not {sorted(values)}")
    parts = [
        _sql.SQL(_ENQUEUE_ORDER[name]) if values[name] is None else values[name]
        for name in _ENQUEUE_EVERY
    ]
    return _sql.SQL("SELECT (conveyor.enqueue({}, NULL, NULL, NULL, NULL)).id").format(
        _sql.SQL(", ").join(parts)
    )


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
_LOCK_JOBS = "SELECT {} FROM conveyor.lock_jobs(%s::text[], %s::integer, %s::integer, %s::bigint[])"
_LOCK_JOBS_BY_ID = "SELECT {} FROM conveyor.lock_jobs_by_id(%s::bigint[], %s::text[], %s::bigint[])"
LOCK_JOBS = _LOCK_JOBS.format(_COLUMNS)
LOCK_JOBS_BY_ID = _LOCK_JOBS_BY_ID.format(_COLUMNS)

DESTROY_JOBS = "SELECT conveyor.destroy_jobs(%s::bigint[], %s::bigint[])"
FINISH_JOBS = "SELECT conveyor.finish_jobs(%s::bigint[], %s::bigint[])"
#: finish_jobs with the kept jobs' results (a JSON array, one per id, or NULL),
#: when each attempt started, and the worker (host:pid).
FINISH_JOBS_KEPT = (
    "SELECT conveyor.finish_jobs(%s::bigint[], %s::bigint[], %s::jsonb, %s::timestamptz[],"
    " %s::text)"
)
EXPIRE_JOBS = "SELECT conveyor.expire_jobs(%s::bigint[], %s::bigint[])"
UNLOCK_JOBS = "SELECT conveyor.unlock_jobs(%s::bigint[], %s::bigint[])"
#: The last two: when the attempt started and the worker (host:pid), for the
#: error history.
RETRY_JOB = (
    "SELECT id FROM conveyor.retry_job("
    "%s::bigint, %s::text, %s::text, %s::double precision, %s::boolean, %s::timestamptz, %s::text)"
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
FINISH_JOB_WITH_RESULT = "SELECT conveyor.finish_job(%s::bigint, %s::jsonb)"
#: One cleanup batch (see cleanup.py): finished_before, expired_before, batch_size.
CLEANUP_BATCH = "SELECT conveyor.cleanup(%s::interval, %s::interval, %s::integer, max_batches => 1)"

# --- index upkeep (conveyor.index_upkeep) ---------------------------------------

#: The indexes to rebuild and the leftovers to drop, largest first.
INDEX_BLOAT = (
    "SELECT index_name, size_bytes, invalid"
    " FROM conveyor.index_bloat(%s::bigint, %s::double precision)"
    " ORDER BY invalid DESC, size_bytes DESC"
)
#: The session's lock_timeout (a rebuild's waits give up after it).
SET_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', %s, false)"
#: An index's size now (None when it is gone).
INDEX_SIZE = (
    "SELECT pg_relation_size(c.oid) FROM pg_class AS c"
    " WHERE c.relnamespace = 'conveyor'::regnamespace AND c.relname = %s"
)


def reindex_concurrently(index_name: str) -> _sql.Composed:
    """``REINDEX INDEX CONCURRENTLY conveyor.<index>`` (a name from the catalog)."""
    return _sql.SQL("REINDEX INDEX CONCURRENTLY {}").format(_sql.Identifier("conveyor", index_name))


def drop_index_concurrently(index_name: str) -> _sql.Composed:
    """``DROP INDEX CONCURRENTLY IF EXISTS conveyor.<index>``."""
    return _sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(
        _sql.Identifier("conveyor", index_name)
    )


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
#: Whether the schema has report_locker (the change locker_buffer): a worker
#: on an older schema does not report its buffer.
CAN_REPORT_LOCKER = (
    "SELECT coalesce(has_function_privilege("
    "to_regprocedure('conveyor.report_locker(integer,integer)'), 'EXECUTE'), false)"
)
#: The locker's buffer size and maximum, for operators (conveyor.lockers).
REPORT_LOCKER = "SELECT conveyor.report_locker(%s::integer, %s::integer)"
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


# --- managing jobs: `conveyor jobs` and `conveyor top` (job-history functions) -------

#: One page of jobs, newest first (keyset: rows with id < before_id).
LIST_JOBS = (
    "SELECT * FROM conveyor.list_jobs(state => %s::text, queue => %s::text,"
    " job_class => %s::text, search => %s::text, before_id => %s::bigint, max_rows => %s::integer)"
)
#: One job with its state, from the one definition of state (jobs_view).
SHOW_JOB = "SELECT * FROM conveyor.jobs_view WHERE id = %s::bigint"
RETRY_NOW = "SELECT conveyor.retry_now(%s::bigint)"
DISCARD_JOB = "SELECT conveyor.discard_job(%s::bigint, %s::text)"
#: run_at computed by the server's clock, so `--in 10m` means ten minutes of its time.
RESCHEDULE_JOB_AT = "SELECT conveyor.reschedule_job(%s::bigint, %s::timestamptz)"
RESCHEDULE_JOB_IN = (
    "SELECT conveyor.reschedule_job(%s::bigint, now() + %s::double precision * interval '1 second')"
)
_WHERE = (
    "state => %s::text, queue => %s::text, job_class => %s::text, error_like => %s::text,"
    " since => %s::timestamptz"
)
RETRY_JOBS_WHERE = f"SELECT conveyor.retry_jobs_where({_WHERE})"
DISCARD_JOBS_WHERE = f"SELECT conveyor.discard_jobs_where({_WHERE}, reason => %s::text)"
#: A time `--since` gives as an age: now() minus that many seconds, by the server's clock.
SECONDS_AGO = "SELECT now() - %s::double precision * interval '1 second'"

#: `conveyor top`: per queue, the unresolved jobs by state (jobs_view's one
#: definition), and how long the oldest ready one has waited. The filter on
#: finished_at/expired_at lets the planner read only the unresolved rows
#: through jobs_ready_idx, however many finished jobs are kept.
TOP_QUEUES = """
SELECT queue,
       count(*) FILTER (WHERE state = 'ready') AS ready,
       count(*) FILTER (WHERE state = 'scheduled') AS scheduled,
       count(*) FILTER (WHERE state = 'running') AS running,
       count(*) FILTER (WHERE state = 'retrying') AS retrying,
       count(*) FILTER (WHERE state NOT IN ('ready', 'scheduled', 'running', 'retrying')) AS paused,
       count(*) FILTER (WHERE error_count > 0) AS errored,
       extract(epoch FROM now() - min(run_at) FILTER (WHERE state = 'ready'))::float8
         AS oldest_ready_seconds
  FROM conveyor.jobs_view
 WHERE finished_at IS NULL AND expired_at IS NULL
 GROUP BY queue
 ORDER BY queue
"""
#: `conveyor top`: the registered lockers (one per worker process) and how
#: many job locks each one's session holds: its buffer plus its running jobs.
TOP_LOCKERS = """
SELECT l.hostname, l.process_id, l.pid AS backend_pid, l.queues,
       cardinality(l.worker_priorities) AS worker_threads,
       (SELECT count(*) FROM pg_catalog.pg_locks AS k
         WHERE k.pid = l.pid AND k.locktype = 'advisory' AND k.objsubid = 2 AND k.granted
           AND k.database = (SELECT oid FROM pg_catalog.pg_database
                              WHERE datname = pg_catalog.current_database())) AS jobs_held,
       extract(epoch FROM now() - l.started_at)::float8 AS up_seconds,
       l.buffer_size, l.maximum_buffer_size
  FROM conveyor.lockers AS l
 WHERE EXISTS (SELECT FROM pg_catalog.pg_stat_activity AS a WHERE a.pid = l.pid)
 ORDER BY l.hostname, l.process_id, l.pid
"""
#: `conveyor top`: the table's cumulative row counters. Every job is inserted
#: once and resolved (finished, retried, expired: one UPDATE; destroyed: one
#: DELETE) once per attempt, so their rates of change are the jobs enqueued
#: and worked per second, without reading the table.
TOP_COUNTERS = """
SELECT clock_timestamp() AS at, n_tup_ins AS inserted, n_tup_upd + n_tup_del AS resolved
  FROM pg_catalog.pg_stat_user_tables
 WHERE relid = 'conveyor.jobs'::regclass
"""


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
