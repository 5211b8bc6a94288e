"""Flow control with real concurrent sessions and worker processes:
perform_limit across 3 workers (never more than the limit running, by
recorded start/end times), its recovery when a worker holding a slot is
SIGKILLed, enqueue_limit under 8 concurrent enqueuers, and pause/resume with
a running worker woken by resume's NOTIFY."""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from chaos_support import WorkerSubprocess
from db_support import wait_for

Connect = Callable[..., psycopg.Connection[Any]]
Spawn = Callable[..., WorkerSubprocess]

# Each run records its start and end (database clock) in flow_runs; a job
# given a second argument sleeps that long only on its first run.
JOBS = """
import os
import time
import conveyor

class FlowLimitsRecorded(conveyor.Job):
    def run(self, seconds, first_run_seconds=None):
        with self.connection() as conn:
            runs = conn.execute(
                "INSERT INTO flow_runs (job_id, worker) VALUES (%s, %s) RETURNING"
                " (SELECT count(*) FROM flow_runs WHERE job_id = %s)",
                (self.id, os.getpid(), self.id),
            ).fetchone()[0]
        time.sleep(first_run_seconds if first_run_seconds is not None and runs == 0 else seconds)
        with self.connection() as conn:
            conn.execute(
                "UPDATE flow_runs SET ended = clock_timestamp() WHERE job_id = %s AND ended IS NULL",
                (self.id,),
            )
"""

RUNS_TABLE = """
CREATE TABLE flow_runs (
  job_id bigint NOT NULL,
  worker integer NOT NULL,
  started timestamptz NOT NULL DEFAULT clock_timestamp(),
  ended timestamptz
)"""


def enqueue(
    conn: psycopg.Connection[Any], args: list[Any], key: str | None, **options: Any
) -> int | None:
    named = "".join(f", {name} => %s" for name in options)
    row = conn.execute(
        f"SELECT (conveyor.enqueue('FlowLimitsRecorded', %s::jsonb, concurrency_key => %s{named})).id",
        [psycopg.types.json.Jsonb(args), key, *options.values()],
    ).fetchone()
    assert row is not None
    return row[0]


def scalar(conn: psycopg.Connection[Any], query: str, params: Any = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def worker_options(poll: str = "0.2") -> list[str]:
    return ["-w", "2", "--poll-interval", poll, "--log-level", "info"]


@pytest.mark.slow
def test_perform_limit_2_under_3_workers_never_runs_3(
    conn: psycopg.Connection[Any], spawn_worker: Spawn
) -> None:
    conn.execute(RUNS_TABLE)
    conn.execute(
        "SELECT conveyor.set_concurrency_limit('flow.perform', perform_limit => 2)"
    )
    ids = [enqueue(conn, [0.4], "flow.perform") for _ in range(12)]
    # An unlimited job behind them all is not held up by them.
    free = enqueue(conn, [0], None, priority=200)
    # One thread and no buffer each: a worker locks only the job it runs, so
    # two running at once means two workers shared the key's slots.
    unbuffered = ["-w", "1", "--minimum-buffer-size", "0", "--maximum-buffer-size", "0"]
    workers = [
        spawn_worker(JOBS, *unbuffered, "--poll-interval", "0.2") for _ in range(3)
    ]
    wait_for(
        lambda: (
            scalar(conn, "SELECT count(*) FROM flow_runs WHERE ended IS NOT NULL") == 13
        ),
        timeout=120,
        what="all 13 jobs to run",
    )
    # A run records its end just before its worker destroys the job.
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM conveyor.jobs") == 0,
        timeout=30,
        what="every job to be destroyed",
    )
    assert (
        scalar(
            conn,
            "SELECT count(DISTINCT job_id) FROM flow_runs WHERE job_id = ANY(%s)",
            (ids,),
        )
        == 12
    )
    limited = conn.execute(
        "SELECT started, ended FROM flow_runs WHERE job_id <> %s ORDER BY started",
        (free,),
    ).fetchall()
    peak = max(sum(1 for s, e in limited if s <= start < e) for start, _ in limited)
    assert peak <= 2, f"{peak} jobs of the key ran at once"
    # The limit is a limit, not a queue of one: two did run together, and
    # the key's jobs were shared out among the workers.
    assert peak == 2
    assert (
        scalar(
            conn,
            "SELECT count(DISTINCT worker) FROM flow_runs WHERE job_id <> %s",
            (free,),
        )
        >= 2
    )
    for worker in workers:
        assert worker.popen.poll() is None, worker.output()


@pytest.mark.slow
def test_a_slot_of_a_sigkilled_worker_is_free_at_once(
    conn: psycopg.Connection[Any], spawn_worker: Spawn
) -> None:
    conn.execute(RUNS_TABLE)
    conn.execute(
        "SELECT conveyor.set_concurrency_limit('flow.kill', perform_limit => 1)"
    )
    first = enqueue(conn, [0, 120], "flow.kill")  # 120 s on its first run, then at once
    holder = spawn_worker(JOBS, *worker_options())
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM flow_runs"),
        timeout=60,
        what="the first job to start",
    )
    second = enqueue(conn, [0], "flow.kill")
    other = spawn_worker(JOBS, *worker_options())
    # The other worker is up and polling, yet the key is full.
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM conveyor.lockers") == 2,
        timeout=60,
        what="both lockers",
    )
    time.sleep(2)
    assert scalar(conn, "SELECT count(*) FROM flow_runs") == 1, (
        "a second job of the key ran while the first held the slot"
    )
    killed_at = time.monotonic()
    holder.popen.send_signal(signal.SIGKILL)
    holder.popen.wait(10)
    # No counter to repair: the dead session's locks went with it, and the
    # other worker's next poll (0.2 s) takes the key's jobs.
    wait_for(
        lambda: (
            scalar(
                conn,
                "SELECT count(*) FROM conveyor.jobs WHERE id = ANY(%s)",
                ([first, second],),
            )
            == 0
        ),
        timeout=30,
        what="both jobs of the key to be worked after the kill",
    )
    recovered = time.monotonic() - killed_at
    assert recovered < 30
    assert other.popen.poll() is None, other.output()


def test_enqueue_limit_under_8_concurrent_enqueuers(connect: Connect) -> None:
    admin = connect()
    admin.execute(
        "SELECT conveyor.set_concurrency_limit('flow.enqueue', enqueue_limit => 3)"
    )
    sessions = 8
    start = threading.Barrier(sessions)
    results: list[Any] = [None] * sessions
    failures: list[BaseException] = []

    def session(number: int) -> None:
        try:
            conn = connect(autocommit=False)
            start.wait()
            results[number] = enqueue(conn, [number], "flow.enqueue")
            time.sleep(0.2)  # hold the transaction: the others must wait, not miscount
            conn.commit()
        except BaseException as error:  # noqa: BLE001 -- reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=session, args=(n,)) for n in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    inserted = [r for r in results if r is not None]
    assert len(inserted) == 3, results
    assert (
        scalar(
            admin,
            "SELECT count(*) FROM conveyor.jobs WHERE concurrency_key = 'flow.enqueue'",
        )
        == 3
    )


@pytest.mark.slow
def test_pause_and_resume_with_a_running_worker(
    conn: psycopg.Connection[Any], spawn_worker: Spawn
) -> None:
    conn.execute(RUNS_TABLE)
    # A long poll interval: only resume's NOTIFY can wake the worker quickly.
    worker = spawn_worker(JOBS, *worker_options(poll="60"))
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM conveyor.lockers WHERE listening"),
        timeout=60,
        what="the worker to listen",
    )
    running = enqueue(conn, [3], None)
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM flow_runs"),
        timeout=30,
        what="the first job to start",
    )
    assert scalar(conn, "SELECT conveyor.pause(queue => 'default')") is True
    paused = enqueue(conn, [0], None)
    # The running job finishes although its queue is paused.
    wait_for(
        lambda: (
            scalar(conn, "SELECT count(*) FROM conveyor.jobs WHERE id = %s", (running,))
            == 0
        ),
        timeout=30,
        what="the running job to finish",
    )
    time.sleep(1.5)
    assert (
        scalar(conn, "SELECT count(*) FROM flow_runs WHERE job_id = %s", (paused,)) == 0
    ), "a paused job ran"
    resumed_at = time.monotonic()
    assert scalar(conn, "SELECT conveyor.resume(queue => 'default')") is True
    wait_for(
        lambda: (
            scalar(conn, "SELECT count(*) FROM conveyor.jobs WHERE id = %s", (paused,))
            == 0
        ),
        timeout=30,
        what="the resumed job to run",
    )
    assert time.monotonic() - resumed_at < 30, "woken by the NOTIFY, not the 60 s poll"
    # A label pause holds only the jobs carrying the label.
    conn.execute("SELECT conveyor.pause(label => 'flow-slow')")
    labelled = enqueue(conn, [0], None, labels=["flow-slow"])
    plain = enqueue(conn, [0], None)
    wait_for(
        lambda: (
            scalar(conn, "SELECT count(*) FROM conveyor.jobs WHERE id = %s", (plain,))
            == 0
        ),
        timeout=30,
        what="the unlabelled job to run",
    )
    assert (
        scalar(conn, "SELECT count(*) FROM conveyor.jobs WHERE id = %s", (labelled,))
        == 1
    )
    conn.execute("SELECT conveyor.resume(label => 'flow-slow')")
    wait_for(
        lambda: (
            scalar(
                conn, "SELECT count(*) FROM conveyor.jobs WHERE id = %s", (labelled,)
            )
            == 0
        ),
        timeout=30,
        what="the labelled job to run after resume",
    )
    assert worker.popen.poll() is None, worker.output()


@pytest.mark.slow
def test_a_freed_slot_starts_the_next_job_at_once(
    conn: psycopg.Connection[Any], spawn_worker: Spawn
) -> None:
    """With a 5 s poll interval, the key's next job starts when the previous
    one is resolved (the _300_free_limit_slot notification), not at the
    next poll."""
    conn.execute(RUNS_TABLE)
    conn.execute(
        "SELECT conveyor.set_concurrency_limit('flow.slot', perform_limit => 1)"
    )
    for _ in range(4):
        enqueue(conn, [0.3], "flow.slot")
    worker = spawn_worker(JOBS, *worker_options(poll="5"))
    wait_for(
        lambda: (
            scalar(conn, "SELECT count(*) FROM flow_runs WHERE ended IS NOT NULL") == 4
        ),
        timeout=60,
        what="the 4 jobs of the key to run",
    )
    runs = conn.execute(
        "SELECT started, ended FROM flow_runs ORDER BY started"
    ).fetchall()
    gaps = [
        (later[0] - earlier[1]).total_seconds()
        for earlier, later in itertools.pairwise(runs)
    ]
    assert all(gap >= 0 for gap in gaps), f"two ran at once: {runs}"
    assert max(gaps) < 1.5, f"the next job waited for a poll: gaps {gaps}"
    assert worker.popen.poll() is None, worker.output()


def test_resolving_a_limited_job_notifies_the_queues_lockers(connect: Connect) -> None:
    locker, other = connect(), connect()
    channel = scalar(locker, "SELECT conveyor.register_locker('{flow_n}', '{NULL}')")
    locker.execute(f"LISTEN {channel}")
    other.execute("SELECT conveyor.set_concurrency_limit('flow.n', perform_limit => 1)")
    ids = [
        enqueue(other, [0], key, queue="flow_n") for key in ("flow.n", None, "flow.n")
    ]
    list(locker.notifies(timeout=0.5))  # the insert's announcements
    # A job without a key, and one whose key has no limit: nothing to say.
    other.execute(
        "SELECT conveyor.set_concurrency_limit('flow.n', enqueue_limit => 10)"
    )
    other.execute("SELECT conveyor.destroy_job(%s)", (ids[1],))
    other.execute("SELECT conveyor.destroy_job(%s)", (ids[0],))
    assert list(locker.notifies(timeout=0.5, stop_after=1)) == []
    other.execute("SELECT conveyor.set_concurrency_limit('flow.n', perform_limit => 1)")
    other.execute("SELECT conveyor.destroy_job(%s)", (ids[2],))
    notes = list(locker.notifies(timeout=2, stop_after=1))
    assert [note.payload for note in notes] == ['{"jobs": [], "more": true}']
