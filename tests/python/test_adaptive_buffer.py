"""The adaptive buffer (conveyor.buffer_sizing) and the lock-table budget
(conveyor.lock_budget): the rule on its own, then real workers on real
PostgreSQL -- growing under a backlog, shrinking when it drains or jobs are
slow, two processes sharing a backlog, explicit sizes overriding the rule,
and a server whose lock table is too small for the buffer.

Behaviour only, never throughput: the machine these run on is shared.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import conveyor
import psycopg
import pytest
from chaos_support import Cluster, WorkerSubprocess
from conveyor.buffer import JobBuffer
from conveyor.buffer_sizing import (
    CEILING,
    FLOOR_MAXIMUM,
    FLOOR_MINIMUM,
    WINDOW,
    AdaptiveSize,
    minimum_for,
)
from conveyor.lock_budget import share_of
from conveyor.protocol import Action, LockedJob, Resolution
from db_support import enqueue_many, locks_held, scalar, wait_for

# --- the rule alone ------------------------------------------------------------------


def test_the_rule_waits_for_a_measured_job_before_growing() -> None:
    rule = AdaptiveSize(6)
    assert rule.next_maximum(8, backlog=True, starving=True) == FLOOR_MAXIMUM


def test_the_rule_doubles_under_a_backlog_of_short_jobs_up_to_the_ceiling() -> None:
    rule = AdaptiveSize(6)
    rule.observe(100, 100 * 20e-6)  # 20 us a job
    sizes = [8]
    while len(sizes) < 20:
        sizes.append(rule.next_maximum(sizes[-1], backlog=True, starving=True))
    assert sizes[:5] == [8, 16, 32, 64, 128]
    assert max(sizes) == CEILING == sizes[-1]
    # Not starving: it stays where it is.
    assert rule.next_maximum(256, backlog=True, starving=False) == 256


def test_the_rule_holds_at_most_a_window_of_work() -> None:
    rule = AdaptiveSize(6)
    rule.observe(10, 10 * 0.001)  # 1 ms a job: 6 threads clear 60 jobs in 10 ms
    assert rule.bound() == int(6 * WINDOW / 0.001)
    assert rule.next_maximum(1024, backlog=True, starving=True) == rule.bound()
    # Slow jobs: Que's floor.
    for _ in range(30):
        rule.observe(1, 0.5)
    assert rule.bound() == FLOOR_MAXIMUM
    assert rule.next_maximum(500, backlog=True, starving=False) == FLOOR_MAXIMUM


def test_the_rule_falls_back_to_the_floor_when_the_queue_drains() -> None:
    rule = AdaptiveSize(6)
    rule.observe(100, 100 * 20e-6)
    assert rule.next_maximum(2000, backlog=False, starving=True) == FLOOR_MAXIMUM
    assert minimum_for(FLOOR_MAXIMUM) == FLOOR_MINIMUM
    assert minimum_for(2000) == 1000
    assert minimum_for(1) == 1


def test_the_lock_table_budget_caps_the_rule_even_below_the_floor() -> None:
    rule = AdaptiveSize(10)
    rule.observe(100, 100 * 20e-6)
    # 6,400 entries (the defaults), half shared by 20 lockers of 10 threads.
    rule.budget = share_of(6400, 20, 10)
    assert rule.budget == 150
    assert rule.bound() == 150
    rule.budget = share_of(6400, 1, 10)
    assert rule.bound() == CEILING
    rule.budget = 3  # a lock table found full
    assert rule.bound() == 3
    assert rule.next_maximum(8, backlog=False, starving=False) == 3
    assert share_of(100, 40, 10) == 1


def _row(priority: int, job_id: int) -> LockedJob:
    return LockedJob(
        priority,
        datetime(2024, 1, 1, tzinfo=UTC),
        job_id,
        "X",
        "default",
        "[]",
        "{}",
        0,
        15,
    )


def test_the_buffer_resizes_evicting_the_least_urgent_and_measures_job_times() -> None:
    buffer = JobBuffer(
        minimum_size=2, maximum_size=8, ceilings=[None], wake=lambda: None
    )
    assert (
        buffer.push([_row(p, i) for i, p in enumerate([5, 1, 9, 3, 7], start=1)]) == []
    )
    evicted = buffer.resize(1, 3)
    assert [r.id for r in evicted] == [5, 3]  # priorities 7 and 9
    assert (buffer.minimum_size, buffer.maximum_size) == (1, 3)
    with pytest.raises(ValueError):
        buffer.resize(4, 3)
    waiter = buffer.waiter(None)
    assert buffer.take(waiter) is not None
    time.sleep(0.02)
    buffer.finish(waiter, Resolution(Action.DESTROY, 2))
    done, busy = buffer.sample()
    assert done == 1 and 0.015 <= busy < 5
    assert buffer.sample() == (0, 0.0)


# --- real workers ---------------------------------------------------------------------

ran: list[int] = []
ran_lock = threading.Lock()


class AdaptiveNoop(conveyor.Job):
    def run(self, value: int) -> None:
        with ran_lock:
            ran.append(value)


class AdaptiveSlow(conveyor.Job):
    def run(self, value: int) -> None:
        time.sleep(0.05)
        with ran_lock:
            ran.append(value)


@pytest.fixture
def start_worker(db_url: str) -> Iterator[Callable[..., conveyor.Worker]]:
    started: list[conveyor.Worker] = []
    ran.clear()

    def _start(url: str = db_url, **options: Any) -> conveyor.Worker:
        options.setdefault("poll_interval", 0.2)
        options.setdefault("wait_period", 0.01)
        worker = conveyor.Worker(url, **options)
        started.append(worker)
        worker.start()
        return worker

    yield _start
    for worker in started:
        worker.stop(timeout=5)


def _remaining(conn: psycopg.Connection[Any]) -> int:
    return int(scalar(conn, "SELECT count(*) FROM conveyor.jobs"))


@pytest.mark.timeout(180)
def test_the_default_buffer_grows_under_a_backlog_and_shrinks_when_it_drains(
    db_url: str, start_worker: Callable[..., conveyor.Worker]
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        enqueue_many(conn, 6000, "AdaptiveNoop")
        worker = start_worker()
        assert worker.adaptive_buffer
        wait_for(lambda: _remaining(conn) == 0, timeout=120, what="the backlog drained")
    assert sorted(ran) == list(range(6000))
    assert worker.buffer.high_water > 4 * FLOOR_MAXIMUM, worker.buffer.high_water
    wait_for(
        lambda: worker.buffer.maximum_size == FLOOR_MAXIMUM,
        what="the buffer back at the floor",
    )
    assert worker.buffer.minimum_size == FLOOR_MINIMUM


@pytest.mark.timeout(180)
def test_slow_jobs_keep_the_default_buffer_at_ques_size(
    db_url: str, start_worker: Callable[..., conveyor.Worker]
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        enqueue_many(conn, 300, "AdaptiveSlow")
        worker = start_worker(worker_count=3)
        pid = int(
            wait_for(lambda: scalar(conn, "SELECT max(pid) FROM conveyor.lockers"))
        )
        deadline = time.monotonic() + 3
        most = 0
        while time.monotonic() < deadline:
            most = max(most, locks_held(conn, pid))
            time.sleep(0.05)
    # 3 threads of 50 ms jobs clear 0.6 jobs in 10 ms: the floor, 8.
    assert worker.buffer.high_water <= FLOOR_MAXIMUM
    # Locks: the buffer, 3 running jobs, and for a moment the jobs being
    # released (a session and a transaction lock each); a doubled buffer
    # would show 16 and more.
    assert most <= FLOOR_MAXIMUM + 2 * 3


@pytest.mark.timeout(120)
def test_explicit_sizes_override_the_rule(
    db_url: str, start_worker: Callable[..., conveyor.Worker]
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        enqueue_many(conn, 2000, "AdaptiveNoop")
        worker = start_worker(maximum_buffer_size=5)
        assert not worker.adaptive_buffer
        assert (worker.minimum_buffer_size, worker.maximum_buffer_size) == (2, 5)
        wait_for(lambda: _remaining(conn) == 0, timeout=90, what="the backlog drained")
    assert worker.buffer.high_water <= 5
    assert worker.buffer.maximum_size == 5
    only_minimum = start_worker(minimum_buffer_size=20)
    assert (only_minimum.minimum_buffer_size, only_minimum.maximum_buffer_size) == (
        20,
        20,
    )


SHARED_JOBS = """
import os, time
import conveyor

class AdaptiveShared(conveyor.Job):
    def run(self, value):
        time.sleep(0.001)
        with self.connection() as conn:
            conn.execute("INSERT INTO adaptive_ran (pid, value) VALUES (%s, %s)", (os.getpid(), value))
"""


@pytest.mark.timeout(240)
def test_two_processes_share_a_backlog_of_short_jobs(
    db_url: str, spawn_worker: Callable[..., WorkerSubprocess]
) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE adaptive_ran (pid int, value int, at timestamptz DEFAULT clock_timestamp())"
        )
        conn.execute("GRANT ALL ON adaptive_ran TO PUBLIC")
        first = spawn_worker(SHARED_JOBS, "--poll-interval", "0.2")
        second = spawn_worker(SHARED_JOBS, "--poll-interval", "0.2")
        wait_for(
            lambda: scalar(conn, "SELECT count(*) FROM conveyor.lockers") == 2,
            timeout=60,
            what="two workers registered",
        )
        # Warm both up first (imports, each thread's pool connection), so
        # that the backlog meets two running processes, not one still starting.
        enqueue_many(conn, 200, "AdaptiveShared")
        wait_for(
            lambda: (
                scalar(conn, "SELECT count(DISTINCT pid) FROM adaptive_ran") == 2
                and _remaining(conn) == 0
            ),
            timeout=120,
            what="both workers warmed up",
        )
        conn.execute("TRUNCATE adaptive_ran")
        total = 4000
        enqueue_many(conn, total, "AdaptiveShared")
        wait_for(lambda: _remaining(conn) == 0, timeout=180, what="the backlog drained")
        shares: dict[int, int] = dict(
            conn.execute(
                "SELECT pid, count(*) FROM adaptive_ran GROUP BY pid"
            ).fetchall()
        )
        values = scalar(conn, "SELECT count(DISTINCT value) FROM adaptive_ran")
        rows = scalar(conn, "SELECT count(*) FROM adaptive_ran")
        # How long one process's threads stood idle at the end while the
        # other still worked through jobs it held: the gap between the two
        # processes' last finishes. A hoarded buffer shows up here.
        tail_gap = float(
            scalar(
                conn,
                "SELECT extract(epoch FROM max(last) - min(last)) FROM "
                "(SELECT max(at) AS last FROM adaptive_ran GROUP BY pid) AS per_process",
            )
        )
    for proc in (first, second):
        proc.popen.terminate()
        proc.popen.wait(30)
    # for docs/performance.md
    print(f"shares of {total} jobs by pid: {shares}; tail gap {tail_gap * 1000:.1f} ms")
    assert values == rows == total, "every job ran exactly once"
    assert set(shares) == {first.popen.pid, second.popen.pid}
    # The goal is >= 35 % each; a loaded machine can starve one process of
    # CPU for a while, so the test asserts that neither hoards the backlog.
    assert min(shares.values()) >= 0.2 * total, shares
    # The goal is a few milliseconds (the buffer holds at most 10 ms of a
    # process's work); the bound leaves room for a loaded machine's scheduler.
    assert tail_gap < 0.5, (
        f"one process idled {tail_gap:.3f} s while the other held jobs"
    )


# --- the lock table ------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_lock_table() -> Iterator[Cluster]:
    """max_locks_per_transaction 10 x max_connections 20: about 300 locks."""
    made = Cluster({"max_locks_per_transaction": "10", "max_connections": "20"})
    try:
        yield made
    finally:
        made.stop()


@pytest.mark.timeout(240)
def test_the_default_buffer_stays_within_its_share_of_a_small_lock_table(
    small_lock_table: Cluster,
    start_worker: Callable[..., conveyor.Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = small_lock_table.create_database("adaptive_budget")
    with (
        caplog.at_level(logging.INFO, logger="conveyor"),
        psycopg.connect(url, autocommit=True) as conn,
    ):
        enqueue_many(conn, 5000, "AdaptiveNoop")
        worker = start_worker(url)
        wait_for(lambda: _remaining(conn) == 0, timeout=180, what="the backlog drained")
    events = [r.msg for r in caplog.records]
    assert "lock_table_full" not in events
    assert "locker_connection_lost" not in events
    assert sorted(ran) == list(range(5000))
    budget = share_of(10 * 20, 1, len(worker.worker_priorities))
    assert 2 * FLOOR_MAXIMUM < worker.buffer.high_water <= budget


@pytest.mark.timeout(240)
def test_a_full_lock_table_shrinks_a_fixed_buffer_and_keeps_the_session(
    small_lock_table: Cluster,
    start_worker: Callable[..., conveyor.Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = small_lock_table.create_database("adaptive_full")
    with (
        caplog.at_level(logging.INFO, logger="conveyor"),
        psycopg.connect(url, autocommit=True) as conn,
    ):
        enqueue_many(conn, 3000, "AdaptiveNoop")
        worker = start_worker(url, minimum_buffer_size=1000, maximum_buffer_size=2000)
        wait_for(lambda: _remaining(conn) == 0, timeout=180, what="the backlog drained")
        wait_for(lambda: locks_held(conn) == 0, what="no job lock left")
    full = [r for r in caplog.records if r.msg == "lock_table_full"]
    assert full, "the full lock table was logged"
    assert full[0].levelno == logging.WARNING
    assert full[0].conveyor["maximum_buffer_size"] < 2000  # type: ignore[attr-defined]
    assert worker.buffer.maximum_size < 2000
    assert worker._locker is not None and worker._locker.reconnects == 0
    assert sorted(ran) == list(range(3000)), "every job ran exactly once"
