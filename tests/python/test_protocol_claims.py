"""Claims docs/reference/protocol.md makes that a worker writer relies on and
that no other test pins: what a release does with an id it skips, the order of
register, LISTEN and poll, lock_jobs_by_id's default queue, and
register_locker's defaults."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from db_support import scalar

Connect = Callable[..., psycopg.Connection[Any]]

# The worker registry's names (the lines to change if they are renamed).
REGISTER = "SELECT conveyor.register_locker(%s, %s)"
REGISTRY = "conveyor.lockers"


def enqueue(conn: psycopg.Connection[Any], queue: str = "default") -> int:
    return int(scalar(conn, "SELECT (conveyor.enqueue('Claim', queue => %s)).id", (queue,)))


def holds(conn: psycopg.Connection[Any], job_id: int) -> bool:
    return bool(
        scalar(
            conn,
            "SELECT count(*) > 0 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
            " AND classid = 1129270870 AND objid = %s AND pid = pg_backend_pid()",
            (job_id,),
        )
    )


@pytest.mark.parametrize(
    "release",
    [
        "SELECT * FROM conveyor.destroy_jobs(ARRAY[%s]::bigint[])",
        "SELECT * FROM conveyor.finish_jobs(ARRAY[%s]::bigint[])",
        "SELECT * FROM conveyor.expire_jobs(ARRAY[%s]::bigint[])",
        "SELECT id FROM conveyor.retry_job(%s, 'late error')",
    ],
)
def test_a_release_unlocks_an_id_it_skips_as_already_resolved(
    connect: Connect, release: str
) -> None:
    locker, job_code = connect(), connect()
    job_id = enqueue(locker)
    assert [r[0] for r in locker.execute("SELECT id FROM conveyor.lock_jobs()")] == [job_id]
    assert holds(locker, job_id)
    assert scalar(job_code, "SELECT conveyor.finish_job(%s)", (job_id,)) is True

    assert locker.execute(release, (job_id,)).fetchall() == [], "skipped: already finished"
    assert not holds(locker, job_id), "yet its lock is released"


def test_jobs_announced_before_listen_are_lost_and_found_by_a_poll(connect: Connect) -> None:
    locker, app = connect(), connect()
    channel = scalar(locker, REGISTER, (["default"], [None]))
    before = enqueue(app)  # the trigger notifies the channel: nobody listens yet
    locker.execute(f'LISTEN "{channel}"')
    assert list(locker.notifies(timeout=0.3, stop_after=1)) == [], "that notification is lost"
    assert [r[0] for r in locker.execute("SELECT id FROM conveyor.lock_jobs()")] == [before]

    after = enqueue(app)
    payloads = [n.payload for n in locker.notifies(timeout=5, stop_after=1)]
    assert len(payloads) == 1
    assert f'"id": {after}' in payloads[0]


def test_lock_jobs_by_id_serves_queue_default_unless_told(connect: Connect) -> None:
    locker = connect()
    job_id = enqueue(locker, queue="mail")
    by_id = "SELECT id FROM conveyor.lock_jobs_by_id(ARRAY[%s]::bigint[])"
    assert locker.execute(by_id, (job_id,)).fetchall() == []
    by_id_mail = "SELECT id FROM conveyor.lock_jobs_by_id(ARRAY[%s]::bigint[], queues => '{mail}')"
    assert locker.execute(by_id_mail, (job_id,)).fetchall() == [(job_id,)]


def test_register_locker_defaults(connect: Connect) -> None:
    locker = connect()
    channel = scalar(locker, REGISTER, (["default"], [None, None]))
    assert channel == f"conveyor_worker_{locker.info.backend_pid}"
    row = locker.execute(
        f"SELECT hostname, process_id, listening, worker_priorities FROM {REGISTRY}"
    ).fetchone()
    assert row == (None, None, True, [None, None])
    with pytest.raises(psycopg.errors.UndefinedFunction):
        locker.execute("SELECT conveyor.register_locker()")
