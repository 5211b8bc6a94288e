"""A lock or release call that fails leaves the session holding exactly what
it held before the call.

Each test has the session hold some jobs first, makes a call fail part-way
(statement_timeout, pg_cancel_backend from another session, a full lock
table), and then reads pg_locks from another session: the same jobs, no
more, no fewer, and the rows unchanged.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from chaos_support import Cluster
from psycopg import errors
from psycopg.pq import TransactionStatus
from test_sql_locking import enqueue_many, lock, locks_of

Connect = Callable[..., psycopg.Connection[Any]]

BACKLOG = 5_000


def job_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def worker(connect: Connect) -> psycopg.Connection[Any]:
    """The session under test, holding 7 jobs of a 5,000-job backlog."""
    conn = connect()
    enqueue_many(conn, BACKLOG)
    assert len(lock(conn, max_jobs=7)) == 7
    return conn


def test_statement_timeout_in_lock_jobs_releases_what_it_took(
    worker: psycopg.Connection[Any], conn: psycopg.Connection[Any]
) -> None:
    before = locks_of(conn, worker.info.backend_pid)
    # SET LOCAL: the timeout ends with the failed transaction, so no later
    # statement (not even a RESET) can be cancelled by it.
    with pytest.raises(errors.QueryCanceled), worker.transaction():
        worker.execute("SET LOCAL statement_timeout = '5ms'")
        worker.execute(
            "SELECT count(*) FROM conveyor.lock_jobs(max_jobs => %s)", [BACKLOG]
        )
    assert locks_of(conn, worker.info.backend_pid) == before
    # The session works on normally: the next call locks new jobs.
    assert len(lock(worker, max_jobs=3)) == 3
    assert len(locks_of(conn, worker.info.backend_pid)) == 10


def test_statement_timeout_in_lock_jobs_by_id_releases_what_it_took(
    worker: psycopg.Connection[Any], conn: psycopg.Connection[Any]
) -> None:
    before = locks_of(conn, worker.info.backend_pid)
    with pytest.raises(errors.QueryCanceled), worker.transaction():
        worker.execute("SET LOCAL statement_timeout = '3ms'")
        worker.execute(
            "SELECT count(*) FROM conveyor.lock_jobs_by_id("
            "(SELECT array_agg(id) FROM conveyor.jobs), queues => '{default}')"
        )
    assert locks_of(conn, worker.info.backend_pid) == before


def cancel_when_running(
    observer: psycopg.Connection[Any], pid: int, stop: threading.Event
) -> None:
    """Cancel backend pid's statement as soon as it runs a lock_jobs call."""
    while not stop.is_set():
        row = observer.execute(
            "SELECT state = 'active' AND query LIKE %s FROM pg_stat_activity WHERE pid = %s",
            ["%lock_jobs(max_jobs%", pid],
        ).fetchone()
        if row and row[0]:
            observer.execute("SELECT pg_cancel_backend(%s)", [pid])
            return


@pytest.mark.timeout(120)
def test_pg_cancel_backend_during_lock_jobs_releases_what_it_took(
    worker: psycopg.Connection[Any], connect: Connect
) -> None:
    observer = connect()
    canceller = connect()
    pid = worker.info.backend_pid
    before = locks_of(observer, pid)
    # The cancel lands at some point of the call, or after it: try until one
    # lands inside it.
    for _ in range(50):
        stop = threading.Event()
        thread = threading.Thread(
            target=cancel_when_running, args=(canceller, pid, stop)
        )
        thread.start()
        try:
            rows = worker.execute(
                "SELECT id FROM conveyor.lock_jobs(max_jobs => %s)", [BACKLOG]
            ).fetchall()
        except errors.QueryCanceled:
            assert locks_of(observer, pid) == before
            return
        finally:
            stop.set()
            thread.join()
        # Too late: the call succeeded. Give its jobs back and try again.
        worker.execute(
            "SELECT conveyor.unlock_jobs(%s::bigint[])", [[r[0] for r in rows]]
        )
        assert locks_of(observer, pid) == before
    pytest.fail("no cancel landed inside lock_jobs in 50 tries")


def unlock_lines(conn: psycopg.Connection[Any]) -> range:
    """The lines of release_job_locks' body where the session locks are
    released (the loop a cancel must land in to test the take-back)."""
    row = conn.execute(
        "SELECT prosrc FROM pg_proc WHERE oid = "
        "'conveyor.release_job_locks(bigint[], bigint[])'::regprocedure"
    ).fetchone()
    assert row is not None
    lines = row[0].splitlines()
    first = next(
        n for n, line in enumerate(lines, 1) if "FOREACH v_job IN ARRAY v_mine" in line
    )
    last = next(
        n for n, line in enumerate(lines, 1) if n > first and "END LOOP" in line
    )
    return range(first, last + 1)


def release_line(conn: psycopg.Connection[Any]) -> int:
    """The line of resolve_jobs' body that calls release_job_locks."""
    row = conn.execute(
        "SELECT prosrc FROM pg_proc WHERE oid = "
        "'conveyor.resolve_jobs(text, bigint[], bigint[])'::regprocedure"
    ).fetchone()
    assert row is not None
    return next(
        n
        for n, line in enumerate(row[0].splitlines(), 1)
        if "release_job_locks" in line
    )


def after_the_release(context: str, unlocking: range, release_call: int) -> bool:
    """Whether a cancel with this error context may have landed after the
    session locks were all released: anywhere but release_job_locks up to the
    end of its unlock loop, or resolve_jobs up to its call of it (a cancel
    in the wrapper around resolve_jobs may be before or after it ran)."""
    release = re.search(
        r"function conveyor\.release_job_locks\(bigint\[\],bigint\[\]\) line (\d+)",
        context,
    )
    if release:
        return int(release.group(1)) >= unlocking.stop
    resolve = re.search(
        r"function conveyor\.resolve_jobs\(text,bigint\[\],bigint\[\]\) line (\d+)",
        context,
    )
    return resolve is None or int(resolve.group(1)) > release_call


@pytest.mark.timeout(300)
def test_destroy_jobs_cancelled_part_way_keeps_its_locks(
    worker: psycopg.Connection[Any], conn: psycopg.Connection[Any]
) -> None:
    """statement_timeout lands in every phase of a 5,000-job destroy_jobs --
    the DELETE, the transaction-level lock tries, the release of the session
    locks -- and each time the rows and the session's locks are as before.
    The timeout is searched for until one lands in the release itself."""
    pid = worker.info.backend_pid
    worker.execute("SELECT count(*) FROM conveyor.lock_jobs(max_jobs => %s)", [BACKLOG])
    before = locks_of(conn, pid)
    assert len(before) == BACKLOG
    target = unlock_lines(conn)
    release_call = release_line(conn)
    where_re = re.compile(
        r"function conveyor\.release_job_locks\(bigint\[\],bigint\[\]\) line (\d+)"
    )
    low, high = 1.0, 200.0
    phases: list[str] = []
    for _ in range(60):
        timeout = (low + high) / 2
        try:
            with worker.transaction():
                worker.execute(f"SET LOCAL statement_timeout = '{timeout:.2f}ms'")
                worker.execute(
                    "SELECT count(*) FROM conveyor.destroy_jobs("
                    "(SELECT array_agg(id) FROM conveyor.jobs))"
                )
        except (errors.QueryCanceled, errors.InFailedSqlTransaction) as error:
            # InFailedSqlTransaction: the timeout landed after destroy_jobs had
            # sent its result (at the statement's end), so the COMMIT found the
            # transaction aborted. It has no context: after the release.
            if worker.info.transaction_status == TransactionStatus.INERROR:
                worker.rollback()
            assert job_count(conn) == BACKLOG
            context = error.diag.context or ""
            if after_the_release(context, target, release_call):
                # Outside the part of the call that promises the take-back:
                # either before anything was released (aim later), or once
                # every lock was released (returning the ids, or the caller's
                # statement still running): the documented window
                # (protocol.md, "When a call fails"), rows kept and locks
                # gone. Then take them back and aim earlier.
                now = locks_of(conn, pid)
                assert now in (before, set()), context
                if now == before:
                    low = timeout
                    continue
                worker.execute(
                    "SELECT count(*) FROM conveyor.lock_jobs_by_id(%s::bigint[])",
                    [sorted(before)],
                )
                assert locks_of(conn, pid) == before
                phases.append(f"{timeout:.2f}ms:after the release")
                high = timeout
                continue
            assert locks_of(conn, pid) == before, (
                f"locks changed (timeout {timeout} ms, at {context!r})"
            )
            match = where_re.search(error.diag.context or "")
            line = int(match.group(1)) if match else 0
            phases.append(f"{timeout:.2f}ms:line {line}")
            if line in target:
                return
            if line < target.start:  # too early: the DELETE or the lock tries
                low = timeout
            else:
                high = timeout
            continue
        # Too late: everything was destroyed. Put it back and aim earlier.
        assert locks_of(conn, pid) == set()
        high = timeout
        enqueue_many(conn, BACKLOG)
        worker.execute(
            "SELECT count(*) FROM conveyor.lock_jobs(max_jobs => %s)", [BACKLOG]
        )
        before = locks_of(conn, pid)
        if high - low < 0.05:
            low, high = max(1.0, low - 20), high + 20
    pytest.fail(f"no timeout landed in the release of the locks: {phases}")


# --- a full lock table ---------------------------------------------------------


@pytest.fixture(scope="module")
def small_lock_table() -> Iterator[Cluster]:
    """A cluster whose shared lock table holds a few hundred locks:
    max_locks_per_transaction * (max_connections + background slots)."""
    made = Cluster({"max_locks_per_transaction": "10", "max_connections": "20"})
    try:
        yield made
    finally:
        made.stop()


@pytest.mark.timeout(120)
def test_out_of_shared_memory_in_lock_jobs_releases_what_it_took(
    small_lock_table: Cluster,
) -> None:
    url = small_lock_table.create_database("full_lock_table")
    with (
        psycopg.connect(url, autocommit=True) as worker,
        psycopg.connect(url, autocommit=True) as observer,
    ):
        enqueue_many(worker, 3_000)
        assert len(lock(worker, max_jobs=7)) == 7
        before = locks_of(observer, worker.info.backend_pid)
        with pytest.raises(errors.OutOfMemory) as raised:
            worker.execute("SELECT count(*) FROM conveyor.lock_jobs(max_jobs => 3000)")
        assert "lock table is full" in str(raised.value)
        assert "max_locks_per_transaction" in (raised.value.diag.message_hint or "")
        assert locks_of(observer, worker.info.backend_pid) == before
        # The lock table has room again: other sessions can lock.
        assert len(lock(observer, max_jobs=5)) == 5
