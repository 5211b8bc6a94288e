"""conveyor behind a real PgBouncer (see pgbouncer_support): the two-pool
setup of docs/operations.md, tested.

- Applications enqueue through transaction pooling, with psycopg's automatic
  prepared statements turned off (PgBouncer 1.18, Debian 12's, does not
  track them; what happens otherwise is tested too).
- The worker works through a session-mode pool, notifications included.
- ``--connection-url`` puts the locker on a direct session while job code's
  pool goes through transaction pooling: jobs are worked exactly once.
- A worker whose locker would go through transaction pooling refuses to
  start, with one line.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgbouncer_support import PgBouncer
from db_support import scalar, wait_for

import conveyor

REFUSAL = "the locker's connection goes through a transaction-mode pooler"


@pytest.fixture
def pgbouncer(db_url: str) -> Iterator[PgBouncer]:
    """PgBouncer in front of this test's database: ``transaction_url`` and
    ``session_url`` are its two pools."""
    bouncer = PgBouncer(db_url)
    bouncer.start()
    yield bouncer
    bouncer.close()


@pytest.fixture
def results(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """A direct connection to the test's database, with a results table."""
    conn.execute("CREATE TABLE results (value bigint NOT NULL, pid int NOT NULL DEFAULT 0)")
    return conn


def pooled(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """An application's connection through the pooler: no automatic
    server-side prepared statements, which PgBouncer 1.18 cannot route."""
    kwargs.setdefault("prepare_threshold", None)
    return psycopg.connect(url, **kwargs)


# --- enqueueing through transaction pooling -----------------------------------------


def test_enqueue_and_enqueue_many_through_transaction_pooling(
    pgbouncer: PgBouncer, results: psycopg.Connection[Any]
) -> None:
    """Four application connections take turns, so their transactions run on
    whichever server connection PgBouncer hands them; each statement runs
    more often than psycopg's default prepare threshold (5)."""
    apps = [pooled(pgbouncer.transaction_url) for _ in range(4)]
    try:
        backends: set[int] = set()
        for round_ in range(8):
            for number, app in enumerate(apps):
                value = round_ * 10 + number
                with app.transaction():  # the job and the data it belongs to, together
                    app.execute("INSERT INTO results (value) VALUES (%s)", (value,))
                    conveyor.enqueue(app, "Py", value, queue="mail", priority=10)
                    backends.add(scalar(app, "SELECT pg_backend_pid()"))
                with app.transaction():
                    conveyor.enqueue_many(
                        app,
                        [{"job_class": "PyMany", "args": [value, i]} for i in range(5)],
                    )
                app.execute(  # autocommit off: its own transaction, committed below
                    "SELECT conveyor.enqueue('Raw', jsonb_build_array(%s::int), queue => 'raw')",
                    (value,),
                )
                app.execute(
                    "SELECT count(*) FROM conveyor.enqueue_many(%s::jsonb)",
                    ('[{"job_class": "RawMany"}, {"job_class": "RawMany", "args": [2]}]',),
                )
                app.commit()
                with app.transaction():  # rolled back: neither the data nor the job
                    app.execute("INSERT INTO results (value) VALUES (-1)")
                    conveyor.enqueue(app, "RolledBack")
                    raise psycopg.Rollback()
    finally:
        for app in apps:
            app.close()

    counts = dict(
        results.execute("SELECT job_class, count(*) FROM conveyor.jobs GROUP BY 1").fetchall()
    )
    assert counts == {"Py": 32, "PyMany": 160, "Raw": 32, "RawMany": 64}
    assert scalar(results, "SELECT count(*) FROM results") == 32
    assert scalar(results, "SELECT count(*) FROM results WHERE value < 0") == 0
    assert (
        scalar(
            results,
            "SELECT count(*) FROM conveyor.jobs WHERE job_class = 'Py'"
            " AND queue = 'mail' AND priority = 10",
        )
        == 32
    )
    # The point of the pooler: the clients did not each keep a server session.
    assert len(backends) < len(apps), backends


def test_psycopg_default_prepared_statements_break_under_transaction_pooling(
    pgbouncer: PgBouncer,
) -> None:
    """What users must know: psycopg 3 prepares a statement on its 6th
    execution (``prepare_threshold = 5``) under a name of its own
    (``_pg3_0``...). PgBouncer 1.18 in transaction mode passes that to a
    server connection which other clients use too: the next client to
    prepare under the same name gets ``DuplicatePreparedStatement``, and one
    whose statement lands on another server connection would get
    ``InvalidSqlStatementName``. prepare_threshold=None avoids both (the
    test above)."""
    apps = [psycopg.connect(pgbouncer.transaction_url, autocommit=True) for _ in range(2)]
    try:
        with pytest.raises(
            (
                psycopg.errors.DuplicatePreparedStatement,
                psycopg.errors.InvalidSqlStatementName,
            )
        ):
            for round_ in range(10):
                for app in apps:
                    conveyor.enqueue(app, "Py", round_)
        assert round_ == 5, "the first execution after the threshold fails"
    finally:
        for app in apps:
            app.close()


# --- the worker through the session pool -----------------------------------------------

done: list[tuple[int, float]] = []


class PgbRecord(conveyor.Job):
    """Writes its value and destroys itself in one transaction."""

    def run(self, value: int) -> None:
        with self.connection() as conn:
            conn.execute("INSERT INTO results (value) VALUES (%s)", (value,))
            self.destroy(conn=conn)
        done.append((value, time.monotonic()))


def test_the_worker_works_through_the_session_pool_notifications_included(
    pgbouncer: PgBouncer, results: psycopg.Connection[Any]
) -> None:
    done.clear()
    app = pooled(pgbouncer.transaction_url, autocommit=True)
    try:
        conveyor.enqueue_many(app, [{"job_class": PgbRecord, "args": [i]} for i in range(50)])
        # A long poll interval: a job enqueued later reaches the idle worker
        # only through LISTEN/NOTIFY, which needs the session PgBouncer keeps.
        worker = conveyor.Worker(pgbouncer.session_url, poll_interval=60.0, worker_count=2)
        with worker:
            assert worker.connected
            wait_for(lambda: len(done) == 50, timeout=30, what="the backlog worked")
            time.sleep(0.3)  # idle: the buffer is empty and the next poll is a minute away
            enqueued = time.monotonic()
            conveyor.enqueue(app, PgbRecord, 1000)
            wait_for(lambda: len(done) == 51, timeout=5, what="the notified job worked")
            latency = done[-1][1] - enqueued
    finally:
        app.close()
    assert latency < 2.0, f"the notified job took {latency:.3f}s"
    assert scalar(results, "SELECT count(*) FROM conveyor.jobs") == 0
    assert scalar(results, "SELECT count(DISTINCT value) FROM results") == 51
    assert scalar(results, "SELECT count(*) FROM results") == 51


# --- --connection-url: the locker direct, job code through transaction pooling -------------

JOBS_MODULE = textwrap.dedent(
    """
    import os
    import time

    import conveyor


    class PgbExactlyOnce(conveyor.Job):
        def run(self, value):
            with self.connection() as conn:
                conn.execute("INSERT INTO results (value, pid) VALUES (%s, %s)",
                             (value, os.getpid()))
                self.destroy(conn=conn)


    class PgbSlowOnce(conveyor.Job):
        # Sleeps on its first run, then records its result.

        def run(self, seconds):
            with self.connection() as conn:
                conn.execute("INSERT INTO starts (job_id, pid) VALUES (%s, %s)",
                             (self.id, os.getpid()))
                attempts = conn.execute("SELECT count(*) FROM starts WHERE job_id = %s",
                                        (self.id,)).fetchone()[0]
            if attempts == 1:
                time.sleep(seconds)
            with self.connection() as conn:
                conn.execute("INSERT INTO results (value, pid) VALUES (%s, %s)",
                             (self.id, os.getpid()))
                self.destroy(conn=conn)
    """
)


class Process:
    def __init__(self, popen: subprocess.Popen[str], out: Path, err: Path) -> None:
        self.popen = popen
        self.out = out
        self.err = err

    def output(self) -> str:
        return self.out.read_text() + self.err.read_text()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start ``python -m conveyor worker jobs.py ARGS...``; killed at teardown."""
    (tmp_path / "jobs.py").write_text(JOBS_MODULE)
    procs: list[Process] = []
    handles: list[Any] = []

    def _spawn(*args: str) -> Process:
        out = tmp_path / f"worker-{len(procs)}.out"
        err = tmp_path / f"worker-{len(procs)}.err"
        handles.extend([out.open("w"), err.open("w")])
        popen = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "worker", "jobs.py", *args],
            stdout=handles[-2],
            stderr=handles[-1],
            cwd=tmp_path,
            text=True,
        )
        procs.append(Process(popen, out, err))
        return procs[-1]

    yield _spawn
    for proc in procs:
        if proc.popen.poll() is None:
            proc.popen.kill()
        proc.popen.wait(10)
    for handle in handles:
        handle.close()


@pytest.mark.slow
def test_connection_url_direct_with_the_job_pool_through_transaction_pooling_works_exactly_once(
    pgbouncer: PgBouncer,
    results: psycopg.Connection[Any],
    db_url: str,
    spawn: Callable[..., Process],
) -> None:
    count = 1000
    workers = [
        spawn(
            "--database-url",
            pgbouncer.transaction_url,
            "--connection-url",
            db_url,
            "--worker-count",
            "3",
            "--poll-interval",
            "0.5",
        )
        for _ in range(2)
    ]
    wait_for(
        lambda: scalar(results, "SELECT count(*) FROM conveyor.lockers") == 2,
        timeout=20,
        what="both workers registered",
    )
    app = pooled(pgbouncer.transaction_url, autocommit=True)
    try:
        for start in range(0, count, 100):
            conveyor.enqueue_many(
                app,
                [{"job_class": "PgbExactlyOnce", "args": [i]} for i in range(start, start + 100)],
            )
    finally:
        app.close()
    wait_for(
        lambda: scalar(results, "SELECT count(*) FROM conveyor.jobs") == 0,
        timeout=120,
        what="every job worked",
    )
    for worker in workers:
        worker.popen.terminate()
    for worker in workers:
        assert worker.popen.wait(20) == 0, worker.output()
    assert scalar(results, "SELECT count(*) FROM results") == count
    assert scalar(results, "SELECT count(DISTINCT value) FROM results") == count
    assert scalar(results, "SELECT count(DISTINCT pid) FROM results") == 2
    logs = "".join(worker.output() for worker in workers)
    assert "Traceback" not in logs
    assert '"job_errored"' not in logs and "prepared statement" not in logs, logs[-3000:]


def test_sigkill_through_the_session_pool_frees_the_job_at_once(
    pgbouncer: PgBouncer, results: psycopg.Connection[Any], spawn: Callable[..., Process]
) -> None:
    """A killed worker's locks go with its session even behind PgBouncer:
    the client's disconnection makes PgBouncer reset the server session
    (server_reset_query, DISCARD ALL by default), which releases the session's
    advisory locks and LISTENs."""
    results.execute("CREATE TABLE starts (job_id bigint NOT NULL, pid int NOT NULL)")
    session = ["--database-url", pgbouncer.session_url, "--poll-interval", "0.5"]
    victim = spawn(*session)
    job_id = conveyor.enqueue(results, "PgbSlowOnce", 60)
    wait_for(
        lambda: scalar(results, "SELECT count(*) FROM starts") == 1, timeout=20, what="job start"
    )
    assert scalar(results, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 1
    victim.popen.kill()
    victim.popen.wait(10)
    killed = time.monotonic()
    wait_for(
        lambda: scalar(results, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0,
        timeout=5,
        what="the killed worker's lock released",
    )
    freed = time.monotonic() - killed
    spawn(*session)
    wait_for(
        lambda: scalar(results, "SELECT count(*) FROM results") == 1,
        timeout=20,
        what="the job run again",
    )
    assert scalar(results, "SELECT value FROM results") == job_id
    assert freed < 2.0, f"the lock was released {freed:.2f}s after the kill"


# --- refusing a transaction-mode pool for the locker -------------------------------------------


@pytest.mark.parametrize("how", ["database-url", "connection-url"])
def test_the_worker_refuses_a_transaction_mode_pool_for_its_locker_with_one_line(
    pgbouncer: PgBouncer,
    results: psycopg.Connection[Any],
    db_url: str,
    spawn: Callable[..., Process],
    how: str,
) -> None:
    args = (
        ["--database-url", pgbouncer.transaction_url]
        if how == "database-url"
        else ["--database-url", db_url, "--connection-url", pgbouncer.transaction_url]
    )
    worker = spawn(*args)
    assert worker.popen.wait(30) == 1, worker.output()
    stderr = worker.err.read_text().splitlines()
    assert len(stderr) == 1 and REFUSAL in stderr[0], stderr
    assert "Traceback" not in worker.output()
    assert scalar(results, "SELECT count(*) FROM conveyor.lockers") == 0


def test_worker_start_raises_for_a_transaction_mode_pool_and_accepts_a_session_pool(
    pgbouncer: PgBouncer, results: psycopg.Connection[Any]
) -> None:
    before = set(threading.enumerate())
    refused = conveyor.Worker(pgbouncer.transaction_url, worker_count=1)
    with pytest.raises(conveyor.ConveyorError, match=REFUSAL):
        refused.start()
    assert not (set(threading.enumerate()) - before), "threads left behind"
    with conveyor.Worker(pgbouncer.session_url, worker_count=1) as accepted:
        assert accepted.connected
        assert scalar(results, "SELECT count(*) FROM conveyor.lockers") == 1
