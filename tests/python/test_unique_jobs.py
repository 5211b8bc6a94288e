"""Unique jobs: one unresolved job per unique_key, race-free between real
sessions, freed when the job is resolved; and the Python API around it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import conveyor
import psycopg
import pytest
from psycopg import errors

Connect = Callable[..., psycopg.Connection[Any]]

ENQUEUE = "SELECT (conveyor.enqueue('Unique', %s::jsonb, unique_key => %s)).id"
SESSIONS = 8


def count_key(conn: psycopg.Connection[Any], key: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM conveyor.jobs WHERE unique_key = %s", (key,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def wait_for_lock_waiters(conn: psycopg.Connection[Any], count: int) -> None:
    """Until `count` sessions of this database wait on a heavyweight lock."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_catalog.pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
        assert row is not None
        if row[0] >= count:
            return
        time.sleep(0.01)
    raise AssertionError(f"{count} sessions never waited on a lock")


def run_sessions(connect: Connect, key: str, count: int, hold: float) -> list[int]:
    """`count` sessions enqueue `key` at once, each in its own transaction
    held open `hold` seconds; the ids they got."""
    start = threading.Barrier(count)
    ids: list[int | None] = [None] * count
    failures: list[BaseException] = []

    def session(number: int) -> None:
        try:
            conn = connect(autocommit=False)
            start.wait()
            row = conn.execute(ENQUEUE, (f"[{number}]", key)).fetchone()
            assert row is not None
            ids[number] = row[0]
            time.sleep(hold)
            conn.commit()
        except (psycopg.Error, threading.BrokenBarrierError, AssertionError) as error:
            failures.append(error)

    threads = [threading.Thread(target=session, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures, failures
    assert all(i is not None for i in ids)
    return [i for i in ids if i is not None]


def test_eight_sessions_at_once_insert_one_job(
    connect: Connect, conn: psycopg.Connection[Any]
) -> None:
    ids = run_sessions(connect, "race-1", SESSIONS, hold=0.05)
    assert count_key(conn, "race-1") == 1
    assert len(set(ids)) == 1


def test_waiters_get_the_holders_job_once_it_commits(
    connect: Connect, conn: psycopg.Connection[Any]
) -> None:
    holder = connect(autocommit=False)
    row = holder.execute(ENQUEUE, ("[0]", "race-2")).fetchone()
    assert row is not None
    held_id = row[0]
    results: list[int] = []

    def waiter() -> None:
        with connect() as waiting:
            found = waiting.execute(ENQUEUE, ("[1]", "race-2")).fetchone()
            assert found is not None
            results.append(found[0])

    threads = [threading.Thread(target=waiter) for _ in range(SESSIONS - 1)]
    for thread in threads:
        thread.start()
    # The index, not a read: every waiter blocks on the holder's uncommitted row.
    wait_for_lock_waiters(conn, SESSIONS - 1)
    assert results == []
    holder.commit()
    for thread in threads:
        thread.join(10)
    assert results == [held_id] * (SESSIONS - 1)
    assert count_key(conn, "race-2") == 1


def test_a_rolled_back_holder_leaves_the_key_to_one_waiter(
    connect: Connect, conn: psycopg.Connection[Any]
) -> None:
    holder = connect(autocommit=False)
    row = holder.execute(ENQUEUE, ("[0]", "race-3")).fetchone()
    assert row is not None
    rolled_back_id = row[0]
    results: list[int] = []

    def waiter() -> None:
        with connect() as waiting:
            found = waiting.execute(ENQUEUE, ("[1]", "race-3")).fetchone()
            assert found is not None
            results.append(found[0])

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for thread in threads:
        thread.start()
    wait_for_lock_waiters(conn, 3)
    holder.rollback()
    for thread in threads:
        thread.join(10)
    assert len(results) == 3
    assert len(set(results)) == 1
    assert results[0] != rolled_back_id
    assert count_key(conn, "race-3") == 1


def test_repeatable_read_waiter_gets_a_serialization_failure(
    connect: Connect, conn: psycopg.Connection[Any]
) -> None:
    holder = connect(autocommit=False)
    holder.execute(ENQUEUE, ("[0]", "race-rr"))
    waiting = connect(autocommit=False)
    waiting.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    waiting.execute("SELECT 1")  # the snapshot is taken before the holder commits
    outcome: list[BaseException] = []

    def wait() -> None:
        try:
            waiting.execute(ENQUEUE, ("[1]", "race-rr"))
        except psycopg.Error as error:
            outcome.append(error)

    thread = threading.Thread(target=wait)
    thread.start()
    wait_for_lock_waiters(conn, 1)
    holder.commit()
    thread.join(10)
    assert len(outcome) == 1
    assert isinstance(outcome[0], errors.SerializationFailure)
    assert count_key(conn, "race-rr") == 1


@pytest.mark.parametrize("resolve", ["finish_job", "expire_job", "destroy_job"])
def test_the_key_is_free_once_the_job_is_resolved(
    connect: Connect, conn: psycopg.Connection[Any], resolve: str
) -> None:
    first = run_sessions(connect, "free", SESSIONS, hold=0.01)[0]
    conn.execute(f"SELECT conveyor.{resolve}(%s)", (first,))
    again = run_sessions(connect, "free", SESSIONS, hold=0.01)
    assert len(set(again)) == 1
    assert again[0] != first
    row = conn.execute(
        "SELECT count(*) FROM conveyor.jobs"
        " WHERE unique_key = 'free' AND finished_at IS NULL AND expired_at IS NULL"
    ).fetchone()
    assert row == (1,)


def test_concurrent_enqueue_many_with_overlapping_keys(
    connect: Connect, conn: psycopg.Connection[Any]
) -> None:
    keys = [f"bulk-{n}" for n in range(50)]
    start = threading.Barrier(4)
    results: list[list[int]] = [[] for _ in range(4)]
    failures: list[BaseException] = []

    def session(number: int) -> None:
        try:
            with connect(autocommit=False) as c:
                # Each session lists the keys in its own order (enqueue_many takes
                # them in key order, so no deadlock), plus a job without a key.
                order = keys[number::4] + keys
                jobs = [{"job_class": "Bulk", "unique_key": k} for k in order] + [
                    {"job_class": "Bulk"}
                ]
                start.wait()
                results[number] = conveyor.enqueue_many(c, jobs)
                c.commit()
        except (psycopg.Error, threading.BrokenBarrierError) as error:
            failures.append(error)

    threads = [threading.Thread(target=session, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures, failures
    rows = dict(
        conn.execute(
            "SELECT unique_key, id FROM conveyor.jobs WHERE unique_key LIKE 'bulk-%'"
        ).fetchall()
    )
    assert sorted(rows) == sorted(keys)
    for number, ids in enumerate(results):
        order = keys[number::4] + keys
        assert ids[:-1] == [rows[k] for k in order]
    row = conn.execute(
        "SELECT count(*) FROM conveyor.jobs WHERE unique_key IS NULL"
    ).fetchone()
    assert row == (4,)


# --- the Python API ---------------------------------------------------------------


class Report(conveyor.Job):
    unique_key = "nightly-report"

    def run(self) -> None:
        pass


class SyncOrder(conveyor.Job):
    @staticmethod
    def unique_key(order_id: int, *, full: bool = False) -> str:
        return f"sync-order-{order_id}-{'full' if full else 'quick'}"

    def run(self, order_id: int, *, full: bool = False) -> None:
        pass


class Optional(conveyor.Job):
    @classmethod
    def unique_key(cls, value: int) -> str | None:
        return f"{cls.job_class}:{value}" if value > 0 else None

    def run(self, value: int) -> None:
        pass


class BadKey(conveyor.Job):
    @staticmethod
    def unique_key(value: int) -> Any:
        return value

    def run(self, value: int) -> None:
        pass


def key_of(conn: psycopg.Connection[Any], job_id: int | None) -> str | None:
    row = conn.execute(
        "SELECT unique_key FROM conveyor.jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def test_enqueue_unique_key_argument(conn: psycopg.Connection[Any]) -> None:
    first = conveyor.enqueue(conn, "Anything", 1, unique_key="arg-key")
    assert conveyor.enqueue(conn, "Anything", 2, unique_key="arg-key") == first
    assert key_of(conn, first) == "arg-key"
    assert conveyor.enqueue(conn, "Anything", 3) != first


def test_class_string_key(conn: psycopg.Connection[Any]) -> None:
    first = Report.enqueue(conn=conn)
    assert Report.enqueue(conn=conn) == first
    assert key_of(conn, first) == "nightly-report"
    other = Report.enqueue(conn=conn, unique_key="report-2")
    assert other != first
    assert key_of(conn, other) == "report-2"
    assert conveyor.enqueue(conn, Report) == first


def test_class_key_function_of_the_arguments(conn: psycopg.Connection[Any]) -> None:
    first = SyncOrder.enqueue(7, conn=conn)
    assert SyncOrder.enqueue(7, conn=conn) == first
    assert key_of(conn, first) == "sync-order-7-quick"
    full = SyncOrder.enqueue(7, conn=conn, kwargs={"full": True})
    assert full != first
    assert key_of(conn, full) == "sync-order-7-full"
    assert SyncOrder.enqueue(8, conn=conn) not in (first, full)


def test_classmethod_key_may_return_none(conn: psycopg.Connection[Any]) -> None:
    keyed = Optional.enqueue(5, conn=conn)
    assert key_of(conn, keyed) == "Optional:5"
    assert Optional.enqueue(5, conn=conn) == keyed
    assert Optional.enqueue(0, conn=conn) != Optional.enqueue(0, conn=conn)


def test_a_key_function_must_return_a_string(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(
        TypeError, match="unique_key must return a str or None, not int"
    ):
        BadKey.enqueue(1, conn=conn)


def test_enqueue_many_keys_first_occurrence_wins(conn: psycopg.Connection[Any]) -> None:
    ids = conveyor.enqueue_many(
        conn,
        [
            {"job_class": "Many", "args": [1], "unique_key": "m"},
            {"job_class": "Many", "args": [2]},
            {"job_class": "Many", "args": [3], "unique_key": "m"},
            {"job_class": SyncOrder, "args": [9]},
            {"job_class": SyncOrder, "args": [9]},
        ],
    )
    assert ids[2] == ids[0]
    assert ids[4] == ids[3]
    assert len(set(ids)) == 3
    row = conn.execute(
        "SELECT args FROM conveyor.jobs WHERE id = %s", (ids[0],)
    ).fetchone()
    assert row == ([1],)
    more = SyncOrder.enqueue_many([[9], [10], [10]], conn=conn)
    assert more[0] == ids[3]
    assert more[1] == more[2] != ids[3]


def test_empty_key_is_rejected(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(
        errors.InvalidParameterValue, match="unique_key must not be empty"
    ):
        conveyor.enqueue(conn, "Anything", unique_key="")
