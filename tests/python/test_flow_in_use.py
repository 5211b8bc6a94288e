"""conveyor.flow_in_use(), the constant that spares lock_jobs the read of the
flow-control tables, across sessions: a worker's session that has cached
the plan of the constant sees a pause, a resume and a limit made by another
session at its next call; and two sessions changing the tables at the same
time leave it true exactly when a row exists."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg

Connect = Callable[..., psycopg.Connection[Any]]


def locked(conn: psycopg.Connection[Any], queue: str) -> int:
    """Lock what lock_jobs gives, count it, release it (in one transaction)."""
    with conn.transaction():
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM conveyor.lock_jobs(%s, 10)", ([queue],)
            )
        ]
        conn.execute("SELECT pg_advisory_unlock_all()")
    return len(ids)


def in_use(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT conveyor.flow_in_use()").fetchone()
    assert row is not None
    return bool(row[0])


def test_a_sessions_cached_constant_follows_other_sessions(connect: Connect) -> None:
    worker, operator = connect(), connect()
    worker.execute(
        "SELECT conveyor.enqueue('FlowInUse', queue => 'fiu', concurrency_key => 'fiu-k')"
    )
    worker.execute(
        "SELECT conveyor.enqueue('FlowInUse', queue => 'fiu', concurrency_key => 'fiu-k')"
    )
    assert locked(worker, "fiu") == 2  # plans made with the constant false
    operator.execute("SELECT conveyor.pause(queue => 'fiu')")
    assert in_use(worker)
    assert locked(worker, "fiu") == 0, (
        "the pause was not seen by a session with cached plans"
    )
    operator.execute("SELECT conveyor.resume(queue => 'fiu')")
    assert not in_use(worker)
    assert locked(worker, "fiu") == 2
    operator.execute(
        "SELECT conveyor.set_concurrency_limit('fiu-k', perform_limit => 1)"
    )
    assert locked(worker, "fiu") == 1, "the limit was not seen"
    ids = [
        r[0]
        for r in worker.execute(
            "SELECT id FROM conveyor.lock_jobs_by_id(ARRAY(SELECT id FROM conveyor.jobs), '{fiu}')"
        )
    ]
    assert len(ids) == 1, "lock_jobs_by_id did not see the limit"
    worker.execute("SELECT pg_advisory_unlock_all()")
    operator.execute("SELECT conveyor.delete_concurrency_limit('fiu-k')")
    assert locked(worker, "fiu") == 2


def commit_at_once(
    conn: psycopg.Connection[Any],
    statement: str,
    barrier: threading.Barrier,
    errors: list[Exception],
) -> None:
    try:
        barrier.wait()
        conn.execute(statement)
        conn.commit()
    except Exception as error:  # noqa: BLE001 -- reported by the test
        errors.append(error)


def test_concurrent_writers_leave_it_true_exactly_when_a_row_exists(
    connect: Connect,
) -> None:
    setup = connect()
    for round_ in range(20):
        setup.execute(
            "SELECT conveyor.set_concurrency_limit('fiu-last', perform_limit => 1)"
        )
        deleter, pauser = connect(autocommit=False), connect(autocommit=False)
        barrier = threading.Barrier(2)
        errors: list[Exception] = []
        statements = {
            deleter: "SELECT conveyor.delete_concurrency_limit('fiu-last')",
            pauser: "SELECT conveyor.pause(queue => 'fiu-p')",
        }
        threads = [
            threading.Thread(
                target=commit_at_once, args=(conn, statement, barrier, errors)
            )
            for conn, statement in statements.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert not errors, errors
        assert in_use(setup), (
            f"round {round_}: a pause exists but flow_in_use() is false"
        )
        setup.execute("SELECT conveyor.resume(queue => 'fiu-p')")
        assert not in_use(setup), (
            f"round {round_}: nothing exists but flow_in_use() is true"
        )
        deleter.close()
        pauser.close()
