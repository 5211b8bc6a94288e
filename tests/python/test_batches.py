"""Batches from Python: conveyor.batch(), callbacks described by class,
errors, and the callbacks fired end to end by real `conveyor worker`
processes working the batch's jobs concurrently."""

from __future__ import annotations

import functools
import signal
import textwrap
import time
from collections.abc import Callable
from typing import Any

import conveyor
import psycopg
import pytest
from chaos_support import WorkerSubprocess
from conveyor import batches
from db_support import scalar, wait_for


class BatchesNotify(conveyor.Job):
    queue = "batch_cb"
    priority = 5

    def run(self, *args: Any) -> None:
        pass


def callback_jobs(
    conn: psycopg.Connection[Any], batch_id: int
) -> list[tuple[str, str, Any]]:
    return conn.execute(
        "SELECT job_class, data #>> '{batch,event}', args FROM conveyor.jobs"
        " WHERE (data #>> '{batch,id}')::bigint = %s ORDER BY id",
        (batch_id,),
    ).fetchall()


def test_batch_context_closes_and_fires_when_jobs_resolve(
    conn: psycopg.Connection[Any],
) -> None:
    with conveyor.batch(
        conn,
        description="nightly",
        on_finish=batches.callback(BatchesNotify, "ops"),
        on_success="BatchesSucceeded",
        properties={"report": 7},
    ) as b:
        ids = [
            conveyor.enqueue(conn, "BatchesWork", n, batch_id=b.id) for n in range(3)
        ]
        assert b.stats().closed_at is None
    stats = b.stats()
    assert stats.closed_at is not None and stats.ready == 3 and stats.total == 3
    assert callback_jobs(conn, b.id) == []
    for job_id in ids:
        conn.execute("SELECT conveyor.destroy_job(%s)", (job_id,))
    assert callback_jobs(conn, b.id) == [
        ("BatchesNotify", "finish", ["ops"]),
        ("BatchesSucceeded", "success", []),
    ]
    row = conn.execute(
        "SELECT queue, priority, data FROM conveyor.jobs WHERE job_class = 'BatchesNotify'"
    ).fetchone()
    assert row is not None
    assert row[:2] == ("batch_cb", 5), "the class's queue and priority"
    assert row[2]["batch"] == {
        "id": b.id,
        "event": "finish",
        "description": "nightly",
        "properties": {"report": 7},
    }
    stats = b.stats()
    assert (stats.destroyed, stats.finished, stats.expired, stats.total) == (3, 0, 0, 3)
    assert stats.finished_at is not None


def test_an_exception_leaves_the_batch_open(conn: psycopg.Connection[Any]) -> None:
    with (
        pytest.raises(RuntimeError),
        conveyor.batch(conn, on_finish=BatchesNotify) as b,
    ):
        raise RuntimeError("boom")
    assert b.stats().closed_at is None
    assert b.close() is True
    assert b.close() is False
    assert [event for _, event, _ in callback_jobs(conn, b.id)] == ["finish"]


def test_a_job_added_after_the_others_resolved_is_waited_for(
    conn: psycopg.Connection[Any],
) -> None:
    b = batches.create_batch(conn, on_finish=BatchesNotify)
    first = conveyor.enqueue(conn, "BatchesWork", 1, batch_id=b.id)
    conn.execute("SELECT conveyor.finish_job(%s)", (first,))
    late = conveyor.enqueue(conn, "BatchesWork", 2, batch_id=b.id)
    b.close()
    assert callback_jobs(conn, b.id) == []
    conn.execute("SELECT conveyor.finish_job(%s)", (late,))
    assert [event for _, event, _ in callback_jobs(conn, b.id)] == ["finish"]


def test_errors(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match="on_finish: job_class is required"
    ):
        batches.create_batch(conn, on_finish={"args": [1]})
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown key"):
        batches.create_batch(conn, on_discard={"job_class": "X", "prio": 1})
    with pytest.raises(TypeError, match="a callback must be"):
        batches.create_batch(conn, on_finish=42)  # type: ignore[arg-type]
    b = batches.create_batch(conn)
    b.close()
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="is closed"):
        conveyor.enqueue(conn, "BatchesWork", batch_id=b.id)
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="no batch"):
        conveyor.enqueue_many(
            conn, [{"job_class": "BatchesWork", "batch_id": b.id + 1000}]
        )
    with pytest.raises(psycopg.errors.NoDataFound):
        batches.close_batch(conn, b.id + 1000)
    with pytest.raises(psycopg.errors.NoDataFound):
        batches.batch_stats(conn, b.id + 1000)


JOBS_MODULE = textwrap.dedent(
    """
    import json

    import conveyor
    from conveyor import batches


    class BatchE2EWork(conveyor.Job):
        def run(self, n):
            pass  # destroyed by default


    class BatchE2EFails(conveyor.Job):
        def run(self):
            raise RuntimeError("always")  # enqueued with maximum_retry_count 0: expired


    class BatchE2ECallback(conveyor.Job):
        def run(self, label):
            event = batches.batch_event(self)
            with self.connection() as conn:
                conn.execute(
                    "INSERT INTO callback_runs (label, batch_id, event, properties)"
                    " VALUES (%s, %s, %s, %s::jsonb)",
                    (label, event.id, event.event, json.dumps(event.properties)),
                )
    """
)


@pytest.fixture
def spawn(
    spawn_worker: Callable[..., WorkerSubprocess],
) -> Callable[..., WorkerSubprocess]:
    return functools.partial(spawn_worker, JOBS_MODULE, "--poll-interval", "0.5")


def runs(conn: psycopg.Connection[Any], batch_id: int) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT label, event FROM callback_runs WHERE batch_id = %s ORDER BY label",
        (batch_id,),
    ).fetchall()


def test_real_workers_fire_each_callback_once(
    conn: psycopg.Connection[Any], spawn: Callable[..., WorkerSubprocess]
) -> None:
    conn.execute(
        "CREATE TABLE callback_runs (label text, batch_id bigint, event text, properties jsonb)"
    )
    workers = [spawn("-w", "4") for _ in range(2)]
    on = {
        name: batches.callback("BatchE2ECallback", name)
        for name in ("on_finish", "on_success", "on_discard")
    }
    rounds = []
    for round_number in range(4):
        failing = round_number % 2 == 1
        with conveyor.batch(conn, properties={"round": round_number}, **on) as b:
            conveyor.enqueue_many(
                conn,
                [
                    {"job_class": "BatchE2EWork", "args": [n], "batch_id": b.id}
                    for n in range(100)
                ],
            )
            if failing:
                conveyor.enqueue(
                    conn, "BatchE2EFails", batch_id=b.id, maximum_retry_count=0
                )
        rounds.append((b.id, failing))
    for batch_id, failing in rounds:
        expected = (
            [("on_discard", "discard"), ("on_finish", "finish")]
            if failing
            else [
                ("on_finish", "finish"),
                ("on_success", "success"),
            ]
        )
        try:
            wait_for(
                lambda batch_id=batch_id: len(runs(conn, batch_id)) >= 2,
                timeout=120,
                what="callbacks ran",
            )
        except AssertionError:
            jobs = conn.execute(
                "SELECT job_class, batch_id, error_count, last_error_message FROM conveyor.jobs"
                " WHERE batch_id IS NULL OR error_count > 0 LIMIT 10"
            ).fetchall()
            raise AssertionError(f"{jobs}\n{workers[0].output()[-3000:]}") from None
        time.sleep(
            0.5
        )  # a second firing would have been enqueued in the same transaction
        assert runs(conn, batch_id) == expected
        stats = batches.batch_stats(conn, batch_id)
        assert (stats.destroyed, stats.expired, stats.total) == (
            100,
            int(failing),
            100 + int(failing),
        )
    assert scalar(conn, "SELECT count(DISTINCT properties) FROM callback_runs") == 4
    for worker in workers:
        worker.popen.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.popen.wait(15) == 0, worker.output()
