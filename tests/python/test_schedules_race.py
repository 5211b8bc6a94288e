"""Recurring jobs: every occurrence becomes exactly one job, whatever the
number of sessions calling enqueue_due_schedules at once.

Eight sessions call conveyor.enqueue_schedules_due_at (enqueue_due_schedules
with the clock as an argument: the test hook) in a loop while a driver moves
the clock across occurrences of a `* * * * *` schedule, a minute every few
milliseconds. Half of the sessions hold their transaction open a moment
before committing, so calls overlap on the schedule's row lock.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

SESSIONS = 8
MINUTES = 150
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def race(
    connect: Callable[..., psycopg.Connection[Any]], *, catch_up: bool
) -> list[tuple[datetime, int]]:
    """Run the race; return (data.schedule.at, count) for each occurrence enqueued."""
    setup = connect()
    setup.execute(
        "SELECT conveyor.set_schedule('race', '* * * * *', 'Race', catch_up => %s)",
        (catch_up,),
    )
    setup.execute(
        "UPDATE conveyor.schedules SET next_run_at = %s WHERE name = 'race'", (T0,)
    )

    clock = [T0]
    done = threading.Event()
    start = threading.Barrier(SESSIONS + 1)
    errors: list[BaseException] = []
    calls = [0] * SESSIONS

    def session(number: int) -> None:
        holds = number % 2 == 1
        try:
            with connect(autocommit=not holds) as conn:
                start.wait()
                while True:
                    finished = done.is_set()
                    as_of = clock[0]
                    conn.execute(
                        "SELECT count(*) FROM conveyor.enqueue_schedules_due_at(%s)",
                        (as_of,),
                    )
                    if holds:
                        time.sleep(random.uniform(0, 0.003))
                        conn.commit()
                    calls[number] += 1
                    if finished:
                        return
        except (psycopg.Error, threading.BrokenBarrierError) as error:
            errors.append(error)

    threads = [
        threading.Thread(target=session, args=(n,), name=f"race-{n}")
        for n in range(SESSIONS)
    ]
    for thread in threads:
        thread.start()
    start.wait()
    for minute in range(1, MINUTES + 1):
        clock[0] = T0 + timedelta(minutes=minute)
        time.sleep(0.004)
    done.set()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    assert not errors, errors
    assert min(calls) > 1, calls
    rows = setup.execute(
        """SELECT (data #>> '{schedule,at}')::timestamptz, count(*)::integer
             FROM conveyor.jobs WHERE job_class = 'Race' GROUP BY 1 ORDER BY 1"""
    ).fetchall()
    return [(at, count) for at, count in rows]


def test_each_occurrence_once_with_catch_up(
    connect: Callable[..., psycopg.Connection[Any]],
) -> None:
    rows = race(connect, catch_up=True)
    assert [count for _, count in rows] == [1] * len(rows), (
        "an occurrence was enqueued twice"
    )
    assert [at for at, _ in rows] == [
        T0 + timedelta(minutes=m) for m in range(MINUTES + 1)
    ], "with catch_up every occurrence up to the last clock is enqueued"


def test_each_occurrence_at_most_once_latest_only(
    connect: Callable[..., psycopg.Connection[Any]],
) -> None:
    rows = race(connect, catch_up=False)
    assert [count for _, count in rows] == [1] * len(rows), (
        "an occurrence was enqueued twice"
    )
    assert rows[-1][0] == T0 + timedelta(minutes=MINUTES), (
        "the last occurrence is enqueued"
    )
    assert len(rows) > 1


def test_concurrent_calls_with_the_real_clock(
    connect: Callable[..., psycopg.Connection[Any]],
) -> None:
    """conveyor_worker sessions calling enqueue_due_schedules() at the same moment: one job."""
    owner = connect()
    owner.execute("SELECT conveyor.set_schedule('now', '* * * * *', 'Now')")
    owner.execute(
        "UPDATE conveyor.schedules SET next_run_at = date_trunc('minute', now()) - interval '5 minutes'"
    )
    start = threading.Barrier(SESSIONS)
    got: list[int] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            with connect() as conn:
                conn.execute("SET ROLE conveyor_worker")
                start.wait()
                got.extend(
                    r[0]
                    for r in conn.execute("SELECT conveyor.enqueue_due_schedules()")
                )
        except (psycopg.Error, threading.BrokenBarrierError) as error:
            errors.append(error)

    threads = [threading.Thread(target=call, name=f"now-{n}") for n in range(SESSIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert len(got) == 1, got
    (count,) = owner.execute(
        "SELECT count(*) FROM conveyor.jobs WHERE job_class = 'Now'"
    ).fetchone() or (0,)
    assert count == 1
