"""Helpers shared by the Python test modules: wait for a condition, read one
value, enqueue jobs with SQL, and read conveyor's job locks.

Job locks are read from pg_locks by another session, not through
conveyor.held_job_ids(), so that the code under test does not check itself.
A job's lock is the two-key advisory lock (CONV # (id >> 32), id & 0xFFFFFFFF)
(docs/reference/protocol.md, "Advisory-lock keys").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

#: 1129270870, "CONV" in ASCII: the first key of the lock of every job id
#: below 2**32.
CONV = 0x434F4E56


def wait_for(
    condition: Callable[[], Any], timeout: float = 10.0, what: str = "", interval: float = 0.01
) -> Any:
    """Poll ``condition`` until it returns something truthy, and return that;
    fail (AssertionError) after ``timeout`` seconds, naming ``what``. (The
    order of polling_support's wait_for, which this one replaces.)"""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)


def scalar(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    """The first column of the query's one row."""
    row = conn.execute(query, params).fetchone()
    assert row is not None, query
    return row[0]


def backend_alive(observer: psycopg.Connection[Any], pid: int) -> bool:
    """Whether backend ``pid`` is still in pg_stat_activity. A backend
    releases its locks before it leaves it."""
    return bool(scalar(observer, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]))


def _sql_value(value: Any) -> Any:
    return Jsonb(value) if isinstance(value, list | dict) else value


def enqueue(
    conn: psycopg.Connection[Any], job_class: str = "Job", args: Any = None, **params: Any
) -> int:
    """conveyor.enqueue(job_class, args, name => value, ...) with only the
    arguments given; a list or dict (``args``, ``data``) is sent as jsonb."""
    if args is not None:
        params = {"args": args, **params}
    named = "".join(f", {name} => %({name})s" for name in params)
    return int(
        scalar(
            conn,
            f"SELECT id FROM conveyor.enqueue(%(job_class)s{named})",
            {"job_class": job_class, **{k: _sql_value(v) for k, v in params.items()}},
        )
    )


def enqueue_many(
    conn: psycopg.Connection[Any],
    jobs: int | list[dict[str, Any]],
    job_class: str = "Bulk",
    **fields: Any,
) -> list[int]:
    """conveyor.enqueue_many of these job objects, or of ``jobs`` jobs of
    ``job_class`` with args [0], [1], ... and ``fields``; the ids in order."""
    if isinstance(jobs, int):
        jobs = [{"job_class": job_class, "args": [i], **fields} for i in range(jobs)]
    rows = conn.execute("SELECT * FROM conveyor.enqueue_many(%s)", [Jsonb(jobs)]).fetchall()
    return [int(r[0]) for r in rows]


def lock_key(job_id: int) -> tuple[int, int]:
    """The two int4 keys of a job's advisory lock."""
    key1 = CONV ^ (job_id >> 32)
    key2 = job_id & 0xFFFFFFFF
    if key2 >= 2**31:
        key2 -= 2**32
    return key1, key2


#: (pid, key1, key2) of every granted two-key advisory lock in the current
#: database: conveyor's job locks.
JOB_LOCKS = """
    SELECT pid, classid::bigint, objid::bigint FROM pg_locks
     WHERE locktype = 'advisory' AND objsubid = 2 AND granted
       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
"""


def job_ids_locked(rows: list[tuple[Any, ...]]) -> set[tuple[int, int]]:
    """(pid, job id) of the rows of JOB_LOCKS."""
    return {(pid, ((classid ^ CONV) << 32) | objid) for pid, classid, objid in rows}


def all_job_locks(observer: psycopg.Connection[Any]) -> set[tuple[int, int]]:
    """(pid, job id) of every job lock in this database."""
    return job_ids_locked(observer.execute(JOB_LOCKS).fetchall())


def locks_of(observer: psycopg.Connection[Any], pid: int) -> set[int]:
    """Ids of the jobs whose lock backend ``pid`` holds."""
    return {job for holder, job in all_job_locks(observer) if holder == pid}


def locks_held(observer: psycopg.Connection[Any], pid: int | None = None) -> int:
    """How many job locks backend ``pid`` holds (None: all sessions)."""
    return sum(1 for holder, _ in all_job_locks(observer) if pid is None or holder == pid)
