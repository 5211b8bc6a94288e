"""Job history through the Python worker: kept jobs (Job.preserve,
--preserve-finished) and their results, the error history with the worker
and the attempt's start, results that cannot be stored, and the scheduled
cleanup under a running worker (one cleaner at a time, never an unresolved
job). Real PostgreSQL, real worker threads and a real `conveyor worker`
subprocess."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from db_support import scalar, wait_for

import conveyor
from conveyor.cleanup import CLEANUP_LOCK, parse_duration

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


@pytest.fixture
def start_worker(db_url: str) -> Iterator[Callable[..., conveyor.Worker]]:
    started: list[conveyor.Worker] = []

    def _start(**options: Any) -> conveyor.Worker:
        options.setdefault("poll_interval", 0.2)
        options.setdefault("wait_period", 0.01)
        options.setdefault("queues", ["hist"])
        worker = conveyor.Worker(db_url, **options)
        started.append(worker)
        worker.start()
        return worker

    yield _start
    for worker in started:
        worker.stop(timeout=5)


def row(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any] | None:
    cursor = conn.execute(
        "SELECT finished_at, expired_at, result, errors, error_count, last_error_message,"
        " attempted_at, attempted_by, run_at FROM conveyor.jobs WHERE id = %s",
        [job_id],
    )
    values = cursor.fetchone()
    if values is None:
        return None
    return dict(zip([c.name for c in cursor.description or []], values, strict=True))


def finished(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    return wait_for(
        lambda: (r := row(conn, job_id)) and r["finished_at"] and r,
        what=f"job {job_id} finished",
    )


class HistKept(conveyor.Job):
    queue = "hist"
    preserve = True

    def run(self, n: int) -> Any:
        return {"n": n, "squares": [i * i for i in range(n)]}


class HistPlain(conveyor.Job):
    queue = "hist"

    def run(self, value: Any = None) -> Any:
        return value


class HistFlaky(conveyor.Job):
    """Fails on its first two attempts, then returns its attempt count."""

    queue = "hist"
    preserve = True
    retry_interval = 0.0

    def run(self) -> int:
        if self.error_count < 2:
            raise RuntimeError(f"flaky failure {self.error_count + 1}")
        return self.error_count


class HistUnstorable(conveyor.Job):
    queue = "hist"
    preserve = True
    maximum_retry_count = 0

    def run(self, kind: str) -> Any:
        return object() if kind == "object" else "x" * (1024 * 1024 + 1)


class HistOwnFinish(conveyor.Job):
    queue = "hist"

    def run(self) -> None:
        with self.connection() as conn:
            self.finish({"by": "own connection"}, conn=conn)


def test_a_preserved_job_is_kept_with_its_result_and_attempt(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    before = datetime.now(UTC)
    kept = HistKept.enqueue(4, conn=conn)
    plain = HistPlain.enqueue({"not": "kept"}, conn=conn)
    start_worker(worker_count=1)
    r = finished(conn, kept)
    assert r["result"] == {"n": 4, "squares": [0, 1, 4, 9]}
    assert r["attempted_by"] == WORKER_ID
    assert before <= r["attempted_at"] <= r["finished_at"]
    assert r["errors"] == []
    wait_for(lambda: row(conn, plain) is None, what="the plain job destroyed")


def test_preserve_finished_keeps_every_class(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    valued = HistPlain.enqueue([1, "two", None], conn=conn)
    empty = HistPlain.enqueue(conn=conn)
    start_worker(worker_count=2, preserve_finished=True)
    assert finished(conn, valued)["result"] == [1, "two", None]
    assert finished(conn, empty)["result"] is None  # None: no result


def test_finish_with_a_result_on_the_jobs_own_connection(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    job_id = HistOwnFinish.enqueue(conn=conn)
    start_worker(worker_count=1)
    assert finished(conn, job_id)["result"] == {"by": "own connection"}


def test_each_error_is_kept_with_the_worker_and_the_attempt_start(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    job_id = HistFlaky.enqueue(conn=conn)
    start_worker(worker_count=1)
    # The backoff is retry_interval 0: each retry is due at once.
    r = finished(conn, job_id)
    assert r["result"] == 2
    assert r["error_count"] == 2
    errors = r["errors"]
    assert [e["attempt"] for e in errors] == [1, 2]
    assert [e["message"] for e in errors] == [
        "RuntimeError: flaky failure 1",
        "RuntimeError: flaky failure 2",
    ]
    assert all("raise RuntimeError" in e["backtrace"] for e in errors)
    assert all(e["worker"] == WORKER_ID for e in errors)
    starts = [datetime.fromisoformat(e["started_at"]) for e in errors]
    ats = [datetime.fromisoformat(e["at"]) for e in errors]
    assert (
        starts[0]
        <= ats[0]
        <= starts[1]
        <= ats[1]
        <= r["attempted_at"]
        <= r["finished_at"]
    )


@pytest.mark.parametrize("kind", ["object", "too large"])
def test_a_result_that_cannot_be_stored_is_the_jobs_error(
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., conveyor.Worker],
    kind: str,
) -> None:
    job_id = HistUnstorable.enqueue(kind, conn=conn)
    worker = start_worker(worker_count=1)
    r = wait_for(
        lambda: (x := row(conn, job_id)) and x["expired_at"] and x, what="expired"
    )
    assert r["finished_at"] is None and r["result"] is None
    message = r["last_error_message"]
    assert message.startswith("ResultError: the value HistUnstorable.run returned")
    expected = (
        "not JSON-serialisable" if kind == "object" else "more than the 1048576 allowed"
    )
    assert expected in message
    assert r["errors"][-1]["message"] == message
    assert worker.connected  # the locker's batch was not the one to fail


def old_finished(conn: psycopg.Connection[Any], count: int, days: int) -> list[int]:
    ids = [
        r[0]
        for r in conn.execute(
            "INSERT INTO conveyor.jobs (job_class, queue, args, finished_at)"
            " SELECT 'HistOld', 'hist_old', jsonb_build_array(g), now() - make_interval(days => %s)"
            " FROM generate_series(1, %s) AS g RETURNING id",
            [days, count],
        ).fetchall()
    ]
    return ids


def test_cleanup_under_a_running_worker_one_cleaner_at_a_time(
    conn: psycopg.Connection[Any],
    connect: Callable[..., psycopg.Connection[Any]],
    start_worker: Callable[..., conveyor.Worker],
) -> None:
    old = old_finished(conn, 2500, days=20)
    recent = old_finished(conn, 10, days=1)
    scheduled = [
        HistPlain.enqueue(i, conn=conn, run_at=datetime(2100, 1, 1, tzinfo=UTC))
        for i in range(5)
    ]
    conn.execute(
        "UPDATE conveyor.jobs SET expired_at = now() - interval '30 days', error_count = 1"
        " WHERE id = %s",
        [scheduled[0]],
    )
    # Another process holds the cleanup lock: these workers must not clean.
    other = connect()
    assert scalar(other, "SELECT pg_try_advisory_lock(%s, %s)", CLEANUP_LOCK)
    workers = [
        start_worker(worker_count=1, preserve_finished=True, cleanup_interval=0.3)
        for _ in range(2)
    ]
    # Jobs keep being worked (and kept) while the cleaners wait their turn.
    working = [HistKept.enqueue(i, conn=conn) for i in range(20)]
    for job_id in working:
        finished(conn, job_id)
    time.sleep(1.0)
    assert (
        scalar(conn, "SELECT count(*) FROM conveyor.jobs WHERE queue = 'hist_old'")
        == 2510
    )
    assert sum(w._cleaner.runs for w in workers) == 0  # type: ignore[union-attr]

    other.execute("SELECT pg_advisory_unlock(%s, %s)", CLEANUP_LOCK)
    wait_for(
        lambda: (
            scalar(conn, "SELECT count(*) FROM conveyor.jobs WHERE queue = 'hist_old'")
            == 10
        ),
        timeout=30,
        what="the old finished jobs cleaned up",
    )
    remaining = {r[0] for r in conn.execute("SELECT id FROM conveyor.jobs").fetchall()}
    assert set(recent) <= remaining  # finished a day ago: kept
    assert set(working) <= remaining  # just finished: kept
    assert set(scheduled[1:]) <= remaining  # unresolved: never deleted
    assert (
        scheduled[0] not in remaining
    )  # expired 30 days ago: cleaned (GoodJob's default)
    assert not set(old) & remaining
    # Batches of 1,000: the 2,500 old jobs took three statements, in one run.
    assert sum(w._cleaner.deleted for w in workers) == 2501  # type: ignore[union-attr]


def test_the_worker_command_keeps_jobs_and_cleans_up(
    conn: psycopg.Connection[Any], spawn_worker: Callable[..., Any]
) -> None:
    old = old_finished(conn, 3, days=2)
    expired = old_finished(conn, 1, days=0)
    conn.execute(
        "UPDATE conveyor.jobs SET finished_at = NULL, expired_at = now() - interval '2 days'"
        " WHERE id = %s",
        [expired[0]],
    )
    job_id = conveyor.enqueue(conn, "HistCliJob", 7, queue="hist_cli")
    source = (
        "import conveyor\n\n"
        "class HistCliJob(conveyor.Job):\n"
        "    def run(self, n):\n"
        "        return {'doubled': 2 * n}\n"
    )
    proc = spawn_worker(
        source,
        "--queue-name", "hist_cli",
        "--preserve-finished",
        "--cleanup-interval", "1",
        "--preserve-for", "1d",
        "--keep-expired",
    )  # fmt: skip
    r = finished(conn, job_id)
    assert r["result"] == {"doubled": 14}
    assert r["attempted_by"] == f"{socket.gethostname()}:{proc.popen.pid}"
    wait_for(
        lambda: (
            scalar(conn, "SELECT count(*) FROM conveyor.jobs WHERE id = ANY(%s)", [old])
            == 0
        ),
        timeout=30,
        what="the cleanup by the worker process",
    )
    assert row(conn, expired[0]) is not None  # --keep-expired
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.popen.wait(30) == 0, proc.output()


def test_parse_duration() -> None:
    assert parse_duration("600") == 600
    assert parse_duration("10m") == 600
    assert parse_duration("1.5h") == 5400
    assert parse_duration("14d") == 14 * 86400
    for bad in ("soon", "-1", "1w", "inf"):
        with pytest.raises(ValueError):
            parse_duration(bad)
