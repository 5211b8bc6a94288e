"""Plans that stay right for the life of a session.

A worker's locker keeps one session for days. PL/pgSQL caches the plans of
the statements inside conveyor's functions; a plan made while the jobs table
was tiny (a sequential scan is the cheapest way to read one page) would be
kept when the table has grown to a large backlog, until something invalidates
it (an ANALYZE, which may never come when autovacuum is off). So the hot
functions must never read the jobs table sequentially, whatever the size it
had when their plans were made: they probe the primary key or walk the ready
index.

The scans a call made are read from pg_stat_xact_user_tables before and
after it, in one transaction: it counts the calling session's scans not yet
reported to the statistics system, nested function calls included.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from db_support import enqueue_many

HOT_CALLS = [
    ("lock_jobs", "SELECT id FROM conveyor.lock_jobs(max_jobs => 3)"),
    ("lock_jobs_by_id", "SELECT id FROM conveyor.lock_jobs_by_id(%(some)s)"),
    ("destroy_jobs", "SELECT conveyor.destroy_jobs(%(some)s)"),
    ("finish_jobs", "SELECT conveyor.finish_jobs(%(some)s)"),
    ("expire_jobs", "SELECT conveyor.expire_jobs(%(some)s)"),
    ("unlock_jobs", "SELECT conveyor.unlock_jobs(%(some)s)"),
    ("retry_job", "SELECT id FROM conveyor.retry_job(%(one)s)"),
    ("destroy_job", "SELECT conveyor.destroy_job(%(one)s)"),
]


def reads(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """(sequential scans, rows read by any scan) of conveyor.jobs so far."""
    row = conn.execute(
        "SELECT seq_scan, seq_tup_read + coalesce(idx_tup_fetch, 0)"
        " FROM pg_stat_xact_user_tables WHERE relid = 'conveyor.jobs'::regclass"
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def call_all(
    session: psycopg.Connection[Any], feeder: psycopg.Connection[Any]
) -> dict[str, tuple[int, int]]:
    """Each hot call once, in its own transaction: the sequential scans each
    made and the rows it read."""
    scans: dict[str, tuple[int, int]] = {}
    for name, statement in HOT_CALLS:
        ids = enqueue_many(feeder, 3, job_class="Plan")
        before = reads(session)
        session.execute(statement, {"some": ids, "one": ids[0]}).fetchall()
        after = reads(session)
        scans[name] = (after[0] - before[0], after[1] - before[1])
        session.rollback()  # keeps the table as it was; the session's locks stay
        session.execute("SELECT pg_advisory_unlock_all()")
        session.commit()
    return scans


def test_no_hot_function_reads_the_jobs_table_sequentially_even_after_it_grew(
    connect: Any,
) -> None:
    feeder = connect()
    session = connect(autocommit=False)
    # Many calls while the table holds a few rows: PL/pgSQL settles on its
    # cached plans (generic plans after five custom ones).
    for _ in range(8):
        call_all(session, feeder)
    # Now a backlog, without an ANALYZE to invalidate those plans.
    feeder.execute(
        "INSERT INTO conveyor.jobs (job_class, args)"
        " SELECT 'Plan', jsonb_build_array(g) FROM generate_series(1, 50000) AS g"
    )
    scans = call_all(session, feeder)
    # No sequential scan, and a handful of rows read (not the whole backlog
    # along some index either).
    assert {name: seq for name, (seq, _) in scans.items() if seq} == {}
    assert {name: rows for name, (_, rows) in scans.items() if rows > 100} == {}


# --- docs/operations.md's clean-up of old resolved jobs ---------------------------------

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def cleanup_statement() -> str:
    """The DELETE of old finished and expired jobs that operations.md gives."""
    blocks = re.findall(r"```sql\n(.*?)```", OPERATIONS.read_text(), flags=re.DOTALL)
    [statement] = [b for b in blocks if "DELETE FROM conveyor.jobs" in b]
    return statement.strip().rstrip(";")


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def test_the_documented_cleanup_uses_the_resolved_index(conn: psycopg.Connection[Any]) -> None:
    """A backlog of ready jobs and many resolved ones, old and recent: the
    statement finds the old ones through jobs_resolved_idx, deletes by
    primary key, reads the table sequentially nowhere, and deletes exactly
    the old resolved jobs, in batches."""
    conn.execute(
        "INSERT INTO conveyor.jobs (job_class, args, finished_at, expired_at)"
        " SELECT 'Plan', jsonb_build_array(g),"
        "        CASE WHEN g % 4 = 1 THEN now() - interval '40 days'"
        "             WHEN g % 4 = 2 THEN now() - interval '1 day' END,"
        "        CASE WHEN g % 4 = 3 THEN now() - interval '60 days' END"
        "   FROM generate_series(1, 40000) AS g"
    )
    conn.execute("ANALYZE conveyor.jobs")
    statement = cleanup_statement()
    row = conn.execute(f"EXPLAIN (FORMAT JSON) {statement}").fetchone()
    assert row is not None
    nodes = list(plan_nodes(row[0][0]["Plan"]))
    node_types = [node["Node Type"] for node in nodes]
    assert "Seq Scan" not in node_types, node_types
    assert "jobs_resolved_idx" in {node.get("Index Name") for node in nodes}, nodes
    deleted = []
    while count := conn.execute(statement).rowcount:
        deleted.append(count)
    assert deleted == [5000, 5000, 5000, 5000]  # 10,000 finished + 10,000 expired, all old
    remaining = conn.execute(
        "SELECT count(*) FILTER (WHERE finished_at IS NULL AND expired_at IS NULL),"
        " count(*) FILTER (WHERE finished_at > now() - interval '2 days'), count(*)"
        " FROM conveyor.jobs"
    ).fetchone()
    assert remaining == (10000, 10000, 20000)
