"""Every statement the dashboard sends, and the small functions that run
them. The dashboard is a client of the SQL API: it reads conveyor.jobs_view
(the one definition of a job's state), conveyor.list_jobs, the schedules,
lockers, pauses and batches, and changes jobs only through the management
functions (retry_now, discard_job, reschedule_job, destroy_job)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

__all__ = [
    "ACTIONS",
    "ActionOutcome",
    "JobFilter",
    "Overview",
    "actions_for",
    "apply_action",
    "filter_ids",
    "get_batch",
    "get_job",
    "list_batches",
    "list_jobs",
    "list_pauses",
    "list_processes",
    "overview",
    "set_paused",
    "throughput",
]

Row = dict[str, Any]

#: The states of conveyor.jobs_view, in the order the pages show them.
#: Unknown states (a newer schema) are shown after these, as they come.
STATES = ("ready", "scheduled", "retrying", "paused", "running", "finished", "expired")

_COUNTS = """
SELECT v.queue, v.state, count(*) AS jobs,
       now() - min(v.run_at) FILTER (WHERE v.state = 'ready') AS oldest_ready_age
  FROM conveyor.jobs_view AS v
 GROUP BY v.queue, v.state
 ORDER BY v.queue, v.state
"""

# Per minute over the last hour: jobs finished (kept rows only: a job
# destroyed when it succeeds leaves nothing to count) and errors recorded
# (entries of the errors history). Both halves reach only the rows that can
# hold such an event: resolved rows through jobs_resolved_idx (resolved in
# the last hour), unresolved ones through jobs_ready_idx's predicate.
_THROUGHPUT = """
WITH bounds AS (
  SELECT date_trunc('minute', now()) - interval '59 minutes' AS since
), minutes AS (
  SELECT generate_series(b.since, b.since + interval '59 minutes', interval '1 minute') AS minute
    FROM bounds AS b
), recent AS (
  SELECT j.finished_at, j.errors
    FROM conveyor.jobs AS j, bounds AS b
   WHERE coalesce(j.finished_at, j.expired_at) >= b.since
  UNION ALL
  SELECT NULL, j.errors
    FROM conveyor.jobs AS j
   WHERE j.finished_at IS NULL AND j.expired_at IS NULL AND j.error_count > 0
), worked AS (
  SELECT date_trunc('minute', r.finished_at) AS minute, count(*) AS n
    FROM recent AS r
   WHERE r.finished_at IS NOT NULL
   GROUP BY 1
), errored AS (
  SELECT date_trunc('minute', (e.entry ->> 'at')::timestamptz) AS minute, count(*) AS n
    FROM recent AS r, jsonb_array_elements(r.errors) AS e(entry), bounds AS b
   WHERE jsonb_typeof(r.errors) = 'array' AND (e.entry ->> 'at')::timestamptz >= b.since
   GROUP BY 1
)
SELECT m.minute, coalesce(w.n, 0) AS worked, coalesce(x.n, 0) AS errored
  FROM minutes AS m
  LEFT JOIN worked AS w ON w.minute = m.minute
  LEFT JOIN errored AS x ON x.minute = m.minute
 ORDER BY m.minute
"""

# The jobs page's query: list_jobs's filters (the same LIKE escaping of the
# search text), plus the labels (every label given: labels @> ARRAY[...]) and
# the batch, which jobs_view does not carry, read from conveyor.jobs by id.
# Newest first with the keyset before_id, as list_jobs, so a page costs the
# same at any depth. The keyset is on both sides of the join: the planner does
# not carry an inequality across j.id = v.id, and without it the scan of
# conveyor.jobs for the merge join starts at the newest row, not at the page
# (a page 500,000 rows deep: 160 ms instead of a few).
_JOBS_PAGE = """
SELECT v.*, j.labels, j.batch_id
  FROM conveyor.jobs_view AS v
  JOIN conveyor.jobs AS j ON j.id = v.id
 WHERE (%(state)s::text IS NULL OR v.state = %(state)s::text)
   AND (%(queue)s::text IS NULL OR v.queue = %(queue)s::text)
   AND (%(job_class)s::text IS NULL OR v.job_class = %(job_class)s::text)
   AND (%(labels)s::text[] IS NULL OR j.labels @> %(labels)s::text[])
   AND (%(batch_id)s::bigint IS NULL OR j.batch_id = %(batch_id)s::bigint)
   AND (%(before_id)s::bigint IS NULL
        OR (v.id < %(before_id)s::bigint AND j.id < %(before_id)s::bigint))
   AND (%(pattern)s::text IS NULL
        OR v.job_class ILIKE %(pattern)s::text
        OR v.args::text ILIKE %(pattern)s::text
        OR v.data::text ILIKE %(pattern)s::text
        OR v.last_error_message ILIKE %(pattern)s::text)
 ORDER BY v.id DESC
 LIMIT %(max_rows)s
"""
_GET_JOB = """
SELECT v.*, j.labels, j.batch_id
  FROM conveyor.jobs_view AS v
  JOIN conveyor.jobs AS j ON j.id = v.id
 WHERE v.id = %s
"""

# Batches, newest first by keyset, each with its counts by state from
# batch_stats (one call per batch shown: it probes the partial index of the
# batch's unresolved jobs) and its callbacks: the job class each would
# enqueue and the id of the job it enqueued once it fired.
_BATCHES = """
SELECT s.*, b.properties,
       b.on_finish ->> 'job_class' AS on_finish_class, b.on_finish_job_id,
       b.on_success ->> 'job_class' AS on_success_class, b.on_success_job_id,
       b.on_discard ->> 'job_class' AS on_discard_class, b.on_discard_job_id
  FROM (SELECT * FROM conveyor.batches AS x
         WHERE (%(before_id)s::bigint IS NULL OR x.id < %(before_id)s::bigint)
           AND (%(batch_id)s::bigint IS NULL OR x.id = %(batch_id)s::bigint)
         ORDER BY x.id DESC
         LIMIT %(max_rows)s) AS b
  CROSS JOIN LATERAL conveyor.batch_stats(b.id) AS s
 ORDER BY b.id DESC
"""

# The jobs each locker session holds locked (its buffer and the jobs its
# workers run): read from pg_locks, as job_lock_id decodes the keys. The
# buffer's size is the locker's own last report (report_locker, every few
# seconds while it changes; NULL from a worker that does not report).
_PROCESSES = """
SELECT l.pid AS backend_pid, l.hostname, l.process_id, l.queues, l.worker_priorities,
       cardinality(l.worker_priorities) AS workers, l.listening, l.started_at,
       l.buffer_size, l.maximum_buffer_size, l.reported_at,
       coalesce(held.ids, '{}') AS locked_ids
  FROM conveyor.lockers AS l
  LEFT JOIN LATERAL (
    SELECT array_agg(k.id ORDER BY k.id) AS ids
      FROM pg_catalog.pg_locks AS p,
           LATERAL (SELECT conveyor.job_lock_id(p.classid, p.objid) AS id) AS k
     WHERE p.locktype = 'advisory' AND p.objsubid = 2 AND p.granted AND p.pid = l.pid
       AND p.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
       AND k.id IS NOT NULL
  ) AS held ON true
 ORDER BY l.started_at, l.pid
"""

_PAUSES = (
    "SELECT id, queue, job_class, label, paused_at FROM conveyor.pauses ORDER BY paused_at, id"
)
_PAUSE = "SELECT conveyor.pause(queue => %(queue)s, job_class => %(job_class)s, label => %(label)s)"
_RESUME = (
    "SELECT conveyor.resume(queue => %(queue)s, job_class => %(job_class)s, label => %(label)s)"
)

_ACTION_SQL = {
    "retry": "SELECT conveyor.retry_now(%(id)s)",
    "discard": "SELECT conveyor.discard_job(%(id)s, %(reason)s)",
    "reschedule": "SELECT conveyor.reschedule_job(%(id)s, %(run_at)s)",
    "destroy": "SELECT CASE WHEN conveyor.destroy_job(%(id)s) THEN 'destroyed' END",
}
#: The actions on jobs, with the label of their button.
ACTIONS = {
    "retry": "Retry now",
    "discard": "Discard",
    "reschedule": "Reschedule",
    "destroy": "Destroy",
}

#: The actions each state allows (the database has the last word: it
#: refuses with a reason, which the page shows). destroy_job deletes only
#: unresolved jobs; a running job is left to its worker.
_ALLOWED = {
    "ready": ("retry", "discard", "reschedule", "destroy"),
    "scheduled": ("retry", "discard", "reschedule", "destroy"),
    "retrying": ("retry", "discard", "reschedule", "destroy"),
    # A paused job stays paused whatever run_at says; an operator may still
    # discard or destroy it, or set when it runs once resumed.
    "paused": ("retry", "discard", "reschedule", "destroy"),
    "expired": ("retry",),
    "finished": (),
    "running": (),
}


def actions_for(state: str) -> dict[str, str]:
    """The actions offered on a job in ``state`` (an unknown state: all)."""
    allowed = _ALLOWED.get(state, tuple(ACTIONS))
    return {key: label for key, label in ACTIONS.items() if key in allowed}


#: How many jobs one click on "every job matching the filter" changes at most.
FILTER_ACTION_LIMIT = 1000


@dataclass(frozen=True)
class JobFilter:
    """The filters of the jobs page (None: any)."""

    state: str | None = None
    queue: str | None = None
    job_class: str | None = None
    search: str | None = None
    #: Labels separated by commas: jobs carrying every one of them.
    label: str | None = None
    #: A batch id (digits): the jobs of that batch.
    batch: str | None = None

    def params(self) -> dict[str, str | None]:
        return {
            "state": self.state,
            "queue": self.queue,
            "job_class": self.job_class,
            "search": self.search,
            "label": self.label,
            "batch": self.batch,
        }

    def labels(self) -> list[str] | None:
        labels = [part.strip() for part in (self.label or "").split(",") if part.strip()]
        return labels or None

    def sql_params(self) -> dict[str, Any]:
        """The parameters of _JOBS_PAGE (a batch that is not a number matches nothing)."""
        batch_id = None
        if self.batch is not None:
            batch_id = int(self.batch) if self.batch.isdigit() else -1
        return {
            "state": self.state,
            "queue": self.queue,
            "job_class": self.job_class,
            "labels": self.labels(),
            "batch_id": batch_id,
            "pattern": _like_substring(self.search) if self.search else None,
        }

    def is_empty(self) -> bool:
        return not any(self.params().values())

    def describe(self) -> str:
        parts = [f"{k.replace('_', ' ')} {v!r}" for k, v in self.params().items() if v]
        return ", ".join(parts) if parts else "no filter (every job)"


@dataclass
class Overview:
    """The numbers of the overview page."""

    states: list[str]
    queues: list[str]
    counts: dict[tuple[str, str], int]
    totals: dict[str, int]
    oldest_ready_age: dict[str, timedelta]

    def oldest_overall(self) -> timedelta | None:
        return max(self.oldest_ready_age.values(), default=None)


@dataclass
class ActionOutcome:
    """What an action did: ids changed, and ids refused with the reason."""

    done: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)


def overview(conn: psycopg.Connection[Any]) -> Overview:
    rows = conn.execute(_COUNTS).fetchall()
    counts: dict[tuple[str, str], int] = {}
    totals: dict[str, int] = {}
    oldest: dict[str, timedelta] = {}
    for queue, state, jobs, age in rows:
        counts[queue, state] = jobs
        totals[state] = totals.get(state, 0) + jobs
        if age is not None:
            oldest[queue] = age
    seen = {state for _, state in counts}
    states = [s for s in STATES if s in seen or s in ("ready", "running")]
    states += sorted(seen - set(STATES))
    queues = sorted({queue for queue, _ in counts})
    return Overview(states, queues, counts, totals, oldest)


def throughput(conn: psycopg.Connection[Any]) -> list[tuple[datetime, int, int]]:
    """(minute, jobs finished, errors recorded) for each of the last 60 minutes."""
    return [(m, w, e) for m, w, e in conn.execute(_THROUGHPUT).fetchall()]


def _like_substring(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its wildcards escaped (as list_jobs)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def list_jobs(
    conn: psycopg.Connection[Any], where: JobFilter, before_id: int | None, max_rows: int
) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cursor:
        params = {**where.sql_params(), "before_id": before_id, "max_rows": max_rows}
        return cursor.execute(_JOBS_PAGE, params).fetchall()


def filter_ids(conn: psycopg.Connection[Any], where: JobFilter, limit: int) -> list[int]:
    """The ids of the newest ``limit`` jobs matching ``where``."""
    return [row["id"] for row in list_jobs(conn, where, None, limit)]


def get_job(conn: psycopg.Connection[Any], job_id: int) -> Row | None:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(_GET_JOB, (job_id,)).fetchone()


def list_batches(conn: psycopg.Connection[Any], before_id: int | None, max_rows: int) -> list[Row]:
    params = {"before_id": before_id, "batch_id": None, "max_rows": max_rows}
    with conn.cursor(row_factory=dict_row) as cursor:
        return [_with_progress(row) for row in cursor.execute(_BATCHES, params).fetchall()]


def get_batch(conn: psycopg.Connection[Any], batch_id: int) -> Row | None:
    params = {"before_id": None, "batch_id": batch_id, "max_rows": 1}
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(_BATCHES, params).fetchone()
    return _with_progress(row) if row is not None else None


#: The parts of a batch's progress bar, in the order drawn: the resolved
#: ones first, so the bar fills from the left as the batch advances.
BATCH_PARTS = ("finished", "destroyed", "expired", "running", "retrying", "scheduled", "ready")


def _with_progress(row: Row) -> Row:
    """Adds ``progress``: (part, jobs, start %, width %) of each non-empty part
    of the bar, and ``done_percent``: the resolved share of the total."""
    total = row["total"] or 0
    parts, start = [], 0.0
    for part in BATCH_PARTS:
        count = row[part] or 0
        if count and total:
            width = 100.0 * count / total
            parts.append((part, count, round(start, 3), round(width, 3)))
            start += width
    resolved = (row["finished"] or 0) + (row["destroyed"] or 0) + (row["expired"] or 0)
    row["progress"] = parts
    row["done_percent"] = int(100 * resolved / total) if total else 0
    return row


def list_processes(conn: psycopg.Connection[Any]) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(_PROCESSES).fetchall()


def apply_action(
    conn: psycopg.Connection[Any],
    action: str,
    ids: list[int],
    *,
    run_at: datetime | None = None,
    reason: str = "discarded from the dashboard",
) -> ActionOutcome:
    """Apply ``action`` to each job, each in its own transaction (``conn`` is
    in autocommit mode), so a job that refuses (running, already finished...)
    does not undo the others: it is reported with the database's reason."""
    statement = _ACTION_SQL[action]
    outcome = ActionOutcome()
    for job_id in ids:
        try:
            row = conn.execute(statement, {"id": job_id, "run_at": run_at, "reason": reason})
            result = row.fetchone()
        except (psycopg.errors.NoDataFound, psycopg.errors.ObjectInUse) as error:
            outcome.refused.append((job_id, _reason(error)))
            continue
        except psycopg.errors.ObjectNotInPrerequisiteState as error:
            outcome.refused.append((job_id, _reason(error)))
            continue
        if action == "destroy" and (result is None or result[0] is None):
            outcome.refused.append((job_id, "not destroyed: no such unresolved job"))
        else:
            outcome.done.append(job_id)
    return outcome


def _reason(error: psycopg.Error) -> str:
    diag = error.diag
    return f"{diag.message_primary or error} ({diag.sqlstate})"


def list_pauses(conn: psycopg.Connection[Any]) -> list[Row]:
    with conn.cursor(row_factory=dict_row) as cursor:
        return cursor.execute(_PAUSES).fetchall()


def set_paused(
    conn: psycopg.Connection[Any],
    paused: bool,
    *,
    queue: str | None,
    job_class: str | None,
    label: str | None,
) -> bool:
    """conveyor.pause or conveyor.resume; False when nothing changed."""
    params = {"queue": queue, "job_class": job_class, "label": label}
    row = conn.execute(_PAUSE if paused else _RESUME, params).fetchone()
    return bool(row and row[0])
