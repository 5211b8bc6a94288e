"""The job-history SQL (deploy/job_history.sql) where pgTAP cannot reach:
a job another session holds (55006, state running, skipped by the bulk
forms), cleanup's plan on a large table (the index, never a sequential
scan), and the roles, through real LOGIN roles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from db_support import enqueue, scalar
from psycopg import errors

Connect = Callable[..., psycopg.Connection[Any]]


def hold(conn: psycopg.Connection[Any], job_id: int) -> None:
    """Take the job's lock in ``conn``'s session, as a worker does."""
    locked = conn.execute(
        "SELECT id FROM conveyor.lock_jobs_by_id(ARRAY[%s]::bigint[], ARRAY['hist_sql'])",
        [job_id],
    ).fetchall()
    assert locked == [(job_id,)]


def test_a_job_a_worker_holds_is_running_and_refused(
    conn: psycopg.Connection[Any], connect: Connect
) -> None:
    job_id = enqueue(conn, "HistSqlJob", queue="hist_sql")
    worker = connect()
    hold(worker, job_id)
    pid = worker.info.backend_pid
    assert conn.execute(
        "SELECT state, locked_by FROM conveyor.jobs_view WHERE id = %s", [job_id]
    ).fetchone() == ("running", pid)
    for call in (
        "SELECT conveyor.retry_now(%s)",
        "SELECT conveyor.discard_job(%s)",
        "SELECT conveyor.reschedule_job(%s, now() + interval '1 hour')",
    ):
        with pytest.raises(errors.ObjectInUse) as caught:
            conn.execute(call, [job_id])
        assert caught.value.sqlstate == "55006"
        assert f"is being worked (its lock is held by pid {pid})" in str(caught.value)
    assert scalar(conn, "SELECT conveyor.discard_jobs_where(queue => 'hist_sql')") == 0
    assert (
        scalar(conn, "SELECT expired_at FROM conveyor.jobs WHERE id = %s", [job_id])
        is None
    )
    # Released (destroyed by the worker): the management functions see no job.
    worker.execute("SELECT conveyor.destroy_jobs(ARRAY[%s]::bigint[])", [job_id])
    with pytest.raises(errors.NoDataFound):
        conn.execute("SELECT conveyor.retry_now(%s)", [job_id])


def test_a_changed_job_cannot_be_locked_before_the_change_commits(
    conn: psycopg.Connection[Any], connect: Connect
) -> None:
    """retry_now holds the job's lock for its transaction: a worker polling
    meanwhile does not take it, and takes it once the change is committed."""
    job_id = enqueue(conn, "HistSqlJob", queue="hist_sql", run_at="2100-01-01")
    admin = connect(autocommit=False)
    assert scalar(admin, "SELECT conveyor.retry_now(%s)", [job_id]) == "ready"
    worker = connect()
    assert (
        worker.execute(
            "SELECT id FROM conveyor.lock_jobs(ARRAY['hist_sql'])"
        ).fetchall()
        == []
    )
    admin.commit()
    assert worker.execute(
        "SELECT id FROM conveyor.lock_jobs(ARRAY['hist_sql'])"
    ).fetchall() == [(job_id,)]


def plan_of_cleanup(conn: psycopg.Connection[Any]) -> str:
    """The plans of the statements cleanup() ran, as auto_explain logs them
    (at NOTICE, to this client)."""
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    conn.execute("LOAD 'auto_explain'")
    conn.execute("SET auto_explain.log_min_duration = 0")
    conn.execute("SET auto_explain.log_nested_statements = on")
    conn.execute("SET auto_explain.log_level = notice")
    deleted = scalar(
        conn, "SELECT conveyor.cleanup(batch_size => 500, max_batches => 1)"
    )
    conn.execute("RESET auto_explain.log_min_duration")
    assert deleted == 500
    return "\n".join(notices)


def test_cleanup_walks_the_index_in_batches_on_a_large_table(
    conn: psycopg.Connection[Any],
) -> None:
    # 20,000 unresolved jobs and 20,000 finished ones, 10,000 of them 20 days ago.
    conn.execute(
        "INSERT INTO conveyor.jobs (job_class, queue, args)"
        " SELECT 'HistSqlBulk', 'hist_sql_bulk', jsonb_build_array(g)"
        " FROM generate_series(1, 40000) AS g"
    )
    conn.execute(
        "UPDATE conveyor.jobs SET finished_at = now() - make_interval(days => (id % 4)::integer * 10)"
        " WHERE id % 2 = 0"
    )
    conn.execute("ANALYZE conveyor.jobs")
    unresolved = scalar(
        conn, "SELECT count(*) FROM conveyor.jobs WHERE finished_at IS NULL"
    )
    plans = plan_of_cleanup(conn)
    assert "jobs_resolved_idx" in plans, plans
    assert "Seq Scan on jobs" not in plans, plans
    # The rest, in batches; nothing unresolved is touched.
    assert scalar(conn, "SELECT conveyor.cleanup(batch_size => 700)") == 10000 - 500
    assert (
        scalar(conn, "SELECT count(*) FROM conveyor.jobs WHERE finished_at IS NULL")
        == unresolved
    )
    assert scalar(
        conn, "SELECT min(finished_at) > now() - interval '14 days' FROM conveyor.jobs"
    )


def test_the_roles(login_role: Any, conn: psycopg.Connection[Any]) -> None:
    job_id = enqueue(conn, "HistSqlJob", queue="hist_sql", run_at="2100-01-01")
    conn.execute("UPDATE conveyor.jobs SET expired_at = now() WHERE id = %s", [job_id])
    _, as_admin = login_role("conveyor_admin")
    admin = as_admin()
    assert scalar(admin, "SELECT conveyor.retry_now(%s)", [job_id]) == "ready"
    assert (
        scalar(admin, "SELECT count(*) FROM conveyor.list_jobs(queue => 'hist_sql')")
        == 1
    )
    assert (
        scalar(admin, "SELECT conveyor.discard_job(%s, 'by the admin')", [job_id])
        == "expired"
    )
    assert scalar(admin, "SELECT conveyor.retry_jobs_where(queue => 'hist_sql')") == 1
    assert scalar(admin, "SELECT conveyor.cleanup()") == 0
    assert admin.execute("SELECT * FROM conveyor.queue_stats()").fetchall()
    assert scalar(admin, "SELECT count(*) FROM conveyor.lockers") == 0
    with pytest.raises(errors.InsufficientPrivilege):
        admin.execute("SELECT conveyor.enqueue('HistSqlJob')")
    with pytest.raises(errors.InsufficientPrivilege):
        admin.execute("SELECT * FROM conveyor.lock_jobs()")

    for role in ("conveyor_enqueuer", "conveyor_worker"):
        _, as_role = login_role(role)
        other = as_role()
        for call in (
            f"SELECT conveyor.retry_now({job_id})",
            f"SELECT conveyor.discard_job({job_id})",
            f"SELECT conveyor.reschedule_job({job_id}, now())",
            "SELECT conveyor.retry_jobs_where()",
            "SELECT conveyor.discard_jobs_where()",
            "SELECT * FROM conveyor.list_jobs()",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                other.execute(call)
    _, as_enqueuer = login_role("conveyor_enqueuer")
    enqueuer = as_enqueuer()
    for call in ("SELECT conveyor.cleanup()", "SELECT * FROM conveyor.jobs_view"):
        with pytest.raises(errors.InsufficientPrivilege):
            enqueuer.execute(call)
    _, as_worker = login_role("conveyor_worker")
    assert scalar(as_worker(), "SELECT conveyor.cleanup()") == 0
