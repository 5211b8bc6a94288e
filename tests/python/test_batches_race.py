"""Batch callbacks fire exactly once under real concurrent sessions.

Each round makes a closed batch, then several sessions resolve its last jobs
at the same instant (a barrier), each in its own READ COMMITTED transaction
held open a moment before committing, so every resolution overlaps the
others: without the serialization on the batch row, each session would see
the others' jobs still unresolved and no session would fire on_finish; with
a second check missing, two would. Many rounds, several interleavings.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from db_support import scalar
from psycopg.types.json import Jsonb

Connect = Callable[..., psycopg.Connection[Any]]

ROUNDS = 50
CALLBACKS = {
    "on_finish": {"job_class": "RaceFinish"},
    "on_success": {"job_class": "RaceSuccess"},
    "on_discard": {"job_class": "RaceDiscard"},
}
RESOLVE = {
    "finish": "SELECT conveyor.finish_job(%s)",
    "destroy": "SELECT conveyor.destroy_job(%s)",
    "expire": "SELECT conveyor.expire_job(%s)",
    "retry_expire": "SELECT conveyor.retry_job(%s, 'boom', expire => true)",
}


def create_batch(conn: psycopg.Connection[Any]) -> int:
    return int(
        scalar(
            conn,
            "SELECT conveyor.create_batch('race', on_finish => %s, on_success => %s,"
            " on_discard => %s)",
            [
                Jsonb(CALLBACKS[name])
                for name in ("on_finish", "on_success", "on_discard")
            ],
        )
    )


def add_jobs(conn: psycopg.Connection[Any], batch_id: int, count: int) -> list[int]:
    return [
        int(
            scalar(
                conn,
                "SELECT (conveyor.enqueue('RaceWork', batch_id => %s)).id",
                (batch_id,),
            )
        )
        for _ in range(count)
    ]


def callbacks(conn: psycopg.Connection[Any], batch_id: int) -> dict[str, int]:
    """How many callback jobs of each event the batch enqueued."""
    rows = conn.execute(
        "SELECT data #>> '{batch,event}', count(*) FROM conveyor.jobs"
        " WHERE (data #>> '{batch,id}')::bigint = %s GROUP BY 1",
        (batch_id,),
    ).fetchall()
    return {event: int(count) for event, count in rows}


def at_once(connect: Connect, statements: list[tuple[str, Any]], hold: float) -> None:
    """Run each (sql, params) in its own session at the same instant, each in
    a transaction held open up to `hold` seconds (random) before its commit."""
    start = threading.Barrier(len(statements))
    failures: list[BaseException] = []
    conns = [connect(autocommit=False) for _ in statements]

    def session(conn: psycopg.Connection[Any], statement: str, params: Any) -> None:
        try:
            start.wait(10)
            conn.execute(statement, params)
            time.sleep(random.uniform(0, hold))
            conn.commit()
        except (psycopg.Error, threading.BrokenBarrierError) as error:
            failures.append(error)

    threads = [
        threading.Thread(target=session, args=(conn, statement, params))
        for conn, (statement, params) in zip(conns, statements, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for conn in conns:
        conn.close()
    assert not failures, failures


@pytest.mark.parametrize(
    "actions", [("finish", "destroy"), ("destroy", "destroy", "finish", "finish")]
)
def test_last_jobs_resolved_at_once_fire_each_callback_once(
    connect: Connect, conn: psycopg.Connection[Any], actions: tuple[str, ...]
) -> None:
    for round_number in range(ROUNDS):
        batch_id = create_batch(conn)
        jobs = add_jobs(conn, batch_id, len(actions) + 1)
        conn.execute("SELECT conveyor.destroy_job(%s)", (jobs[0],))  # resolved before
        conn.execute("SELECT conveyor.close_batch(%s)", (batch_id,))
        at_once(
            connect,
            [
                (RESOLVE[action], (job,))
                for action, job in zip(actions, jobs[1:], strict=True)
            ],
            hold=0.02,
        )
        assert callbacks(conn, batch_id) == {"finish": 1, "success": 1}, (
            f"round {round_number}"
        )


def test_expiries_at_once_fire_on_discard_once_and_no_success(
    connect: Connect, conn: psycopg.Connection[Any]
) -> None:
    for round_number in range(ROUNDS):
        batch_id = create_batch(conn)
        jobs = add_jobs(conn, batch_id, 3)
        conn.execute("SELECT conveyor.close_batch(%s)", (batch_id,))
        at_once(
            connect,
            [
                (RESOLVE["expire"], (jobs[0],)),
                (RESOLVE["retry_expire"], (jobs[1],)),
                (RESOLVE["finish"], (jobs[2],)),
            ],
            hold=0.02,
        )
        assert callbacks(conn, batch_id) == {"discard": 1, "finish": 1}, (
            f"round {round_number}"
        )


def test_close_at_the_instant_of_the_last_resolution_fires_once(
    connect: Connect, conn: psycopg.Connection[Any]
) -> None:
    for round_number in range(ROUNDS):
        batch_id = create_batch(conn)
        (job,) = add_jobs(conn, batch_id, 1)
        at_once(
            connect,
            [
                ("SELECT conveyor.close_batch(%s)", (batch_id,)),
                (RESOLVE["destroy"], (job,)),
            ],
            hold=0.02,
        )
        assert callbacks(conn, batch_id) == {"finish": 1, "success": 1}, (
            f"round {round_number}"
        )


def test_enqueue_at_the_instant_of_the_close_is_waited_for_or_refused(
    connect: Connect, conn: psycopg.Connection[Any]
) -> None:
    """An enqueue racing the close either joins before the close (and
    on_finish waits for it) or fails with 55000; never a job that joins a
    batch whose on_finish already fired."""
    joined = refused = 0
    for round_number in range(ROUNDS):
        batch_id = create_batch(conn)
        (first,) = add_jobs(conn, batch_id, 1)
        conn.execute("SELECT conveyor.destroy_job(%s)", (first,))
        start = threading.Barrier(2)
        outcome: list[str] = []

        def enqueue_late(
            batch_id: int = batch_id,
            start: threading.Barrier = start,
            outcome: list[str] = outcome,
        ) -> None:
            with connect(autocommit=False) as late:
                start.wait(10)
                try:
                    late.execute(
                        "SELECT conveyor.enqueue('RaceWork', batch_id => %s)",
                        (batch_id,),
                    )
                    time.sleep(random.uniform(0, 0.02))
                    late.commit()
                    outcome.append("joined")
                except psycopg.errors.ObjectNotInPrerequisiteState:
                    outcome.append("refused")

        thread = threading.Thread(target=enqueue_late)
        thread.start()
        with connect(autocommit=False) as closer:
            start.wait(10)
            closer.execute("SELECT conveyor.close_batch(%s)", (batch_id,))
            time.sleep(random.uniform(0, 0.02))
            closer.commit()
        thread.join(30)
        assert len(outcome) == 1, (
            f"round {round_number}: the enqueue neither joined nor was refused"
        )
        if outcome == ["joined"]:
            joined += 1
            assert callbacks(conn, batch_id) == {}, (
                f"round {round_number}: fired under a live job"
            )
            conn.execute(
                "SELECT conveyor.destroy_job(id) FROM conveyor.jobs WHERE batch_id = %s",
                (batch_id,),
            )
        else:
            refused += 1
        assert callbacks(conn, batch_id) == {"finish": 1, "success": 1}, (
            f"round {round_number}"
        )
    # Both outcomes are legal; report them so a run that never raced is visible.
    print(
        f"late enqueues: {joined} joined before the close, {refused} refused after it"
    )
