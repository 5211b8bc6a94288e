"""`conveyor worker` as real processes: exactly-once with three workers,
SIGKILL mid-job, SIGTERM and the second signal, the shutdown timeout."""

from __future__ import annotations

import functools
import signal
import textwrap
from collections.abc import Callable
from typing import Any

import conveyor
import psycopg
import pytest
from chaos_support import WorkerSubprocess
from db_support import backend_alive, locks_held, scalar, wait_for

JOBS_MODULE = textwrap.dedent(
    """
    import os
    import time

    import conveyor


    class ExactlyOnce(conveyor.Job):
        def run(self, value):
            with self.connection() as conn:
                conn.execute("INSERT INTO results (value, pid) VALUES (%s, %s)",
                             (value, os.getpid()))
                self.destroy(conn=conn)


    class Slow(conveyor.Job):
        '''Sleeps on its first run only, then records its result.'''

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


@pytest.fixture
def spawn(spawn_worker: Callable[..., WorkerSubprocess]) -> Callable[..., WorkerSubprocess]:
    """Start `conveyor worker` on this module's jobs (--poll-interval 0.5)."""
    return functools.partial(spawn_worker, JOBS_MODULE, "--poll-interval", "0.5")


@pytest.fixture
def tables(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute("CREATE TABLE results (value bigint NOT NULL, pid int NOT NULL)")
    conn.execute("CREATE TABLE starts (job_id bigint NOT NULL, pid int NOT NULL)")
    return conn


def registered(conn: psycopg.Connection[Any], process_id: int) -> int | None:
    """The locker session's backend pid of a worker process, once registered."""
    row = conn.execute(
        "SELECT pid FROM conveyor.lockers WHERE process_id = %s", (process_id,)
    ).fetchone()
    return int(row[0]) if row else None


@pytest.mark.slow
def test_three_workers_work_5000_jobs_exactly_once(
    tables: psycopg.Connection[Any], spawn: Callable[..., WorkerSubprocess]
) -> None:
    conn = tables
    workers = [spawn("-w", "4") for _ in range(3)]
    for worker in workers:
        wait_for(lambda w=worker: registered(conn, w.popen.pid), what="registration")
    # Enqueued while the workers run, in batches, so NOTIFY and polling both
    # hand out jobs to all three.
    for start in range(0, 5000, 500):
        conveyor.enqueue_many(
            conn, [{"job_class": "ExactlyOnce", "args": [i]} for i in range(start, start + 500)]
        )
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM conveyor.jobs") == 0,
        timeout=90,
        what="all jobs worked",
    )
    for worker in workers:
        worker.popen.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.popen.wait(15) == 0, worker.output()
    assert scalar(conn, "SELECT count(*) FROM results") == 5000
    assert scalar(conn, "SELECT count(DISTINCT value) FROM results") == 5000
    assert scalar(conn, "SELECT count(DISTINCT pid) FROM results") >= 2
    assert "Traceback" not in "".join(w.output() for w in workers)


def test_sigkill_mid_job_frees_the_job_at_once_and_it_runs_again(
    tables: psycopg.Connection[Any], spawn: Callable[..., WorkerSubprocess]
) -> None:
    conn = tables
    job_id = conveyor.enqueue(conn, "Slow", 60)
    victim = spawn("-w", "1")
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM starts") == 1, what="the job started")
    pid = registered(conn, victim.popen.pid)
    assert pid is not None and locks_held(conn, pid) == 1
    victim.popen.kill()
    victim.popen.wait(5)
    # PostgreSQL ends the session and releases the lock: once the locker's
    # backend is gone, the job is free -- no lease to run out first.
    wait_for(lambda: not backend_alive(conn, pid), what="the locker's backend to exit")
    assert locks_held(conn) == 0
    assert scalar(conn, "SELECT error_count FROM conveyor.jobs WHERE id = %s", (job_id,)) == 0
    rescuer = spawn("-w", "1")
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM results") == 1, what="the second run")
    assert scalar(conn, "SELECT count(*) FROM starts") == 2
    assert scalar(conn, "SELECT count(*) FROM conveyor.jobs") == 0
    # The dead worker's registry row was pruned by the new registration.
    assert scalar(conn, "SELECT count(*) FROM conveyor.lockers") == 1
    rescuer.popen.send_signal(signal.SIGTERM)
    assert rescuer.popen.wait(10) == 0


def test_sigterm_unlocks_the_buffer_at_once_finishes_running_jobs_and_exits_0(
    tables: psycopg.Connection[Any], spawn: Callable[..., WorkerSubprocess]
) -> None:
    conn = tables
    conveyor.enqueue_many(conn, [{"job_class": "Slow", "args": [1.5]} for _ in range(6)])
    worker = spawn("-w", "1", "--maximum-buffer-size", "3", "--shutdown-timeout", "20")
    pid = wait_for(lambda: registered(conn, worker.popen.pid))
    wait_for(lambda: locks_held(conn, pid) == 4, what="1 running + 3 buffered")
    worker.popen.send_signal(signal.SIGTERM)
    wait_for(lambda: locks_held(conn, pid) == 1, what="the buffer unlocked")
    # At once: before the running job has finished.
    assert scalar(conn, "SELECT count(*) FROM results") == 0
    assert worker.popen.poll() is None  # the running job is still going
    assert worker.popen.wait(10) == 0, worker.output()
    assert scalar(conn, "SELECT count(*) FROM results") == 1  # it finished
    assert scalar(conn, "SELECT count(*) FROM conveyor.jobs") == 5
    assert scalar(conn, "SELECT count(*) FROM conveyor.lockers") == 0
    assert '"event": "signal_received"' in worker.output()


def test_a_second_signal_exits_at_once(
    tables: psycopg.Connection[Any], spawn: Callable[..., WorkerSubprocess]
) -> None:
    conn = tables
    conveyor.enqueue(conn, "Slow", 60)
    worker = spawn("-w", "1")
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM starts") == 1)
    worker.popen.send_signal(signal.SIGTERM)
    wait_for(lambda: b"worker_stopping" in worker.log.read_bytes(), what="shutdown begun")
    worker.popen.send_signal(signal.SIGINT)
    assert worker.popen.wait(3) == 128 + signal.SIGINT
    assert scalar(conn, "SELECT count(*) FROM results") == 0


def test_the_shutdown_timeout_abandons_a_job_which_is_then_free(
    tables: psycopg.Connection[Any], spawn: Callable[..., WorkerSubprocess]
) -> None:
    conn = tables
    conveyor.enqueue(conn, "Slow", 60)
    worker = spawn("-w", "1", "--shutdown-timeout", "0.3")
    wait_for(lambda: scalar(conn, "SELECT count(*) FROM starts") == 1)
    pid = registered(conn, worker.popen.pid)
    assert pid is not None
    worker.popen.send_signal(signal.SIGTERM)
    assert worker.popen.wait(10) == 1
    assert '"event": "shutdown_timeout"' in worker.output()
    assert scalar(conn, "SELECT count(*) FROM results") == 0, "abandoned, not finished"
    # The process is gone; its sessions end with it and free the job.
    wait_for(lambda: not backend_alive(conn, pid), what="the locker's backend to exit")
    assert locks_held(conn) == 0
