"""What a role with only enqueue rights can do to a running worker.

Any role may NOTIFY any channel, and a worker's channel name
(conveyor_worker_<backend pid>) is guessable from pg_stat_activity. So an
enqueuer can send a worker forged notifications: garbage, ids of jobs that
are scheduled for later, ids of jobs in queues the worker does not serve. The
worker must stay up, keep working, never run a job early, and never take a
job of a queue it does not serve.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from chaos_support import WorkerProcess, critical_events
from db_support import enqueue, wait_for
from security_support import MakeRole

pytestmark = pytest.mark.slow

MODULE = "jobs_for_tests.poison_jobs"


def ran(conn: psycopg.Connection[Any], job_id: int) -> bool:
    row = conn.execute("SELECT count(*) FROM poison_effects WHERE job_id = %s", [job_id]).fetchone()
    return bool(row and row[0])


def test_forged_notifications_do_not_break_or_misdirect_a_worker(
    conn: psycopg.Connection[Any],
    db_url: str,
    tmp_path: Path,
    workers: list[WorkerProcess],
    login_role: MakeRole,
) -> None:
    conn.execute(
        "CREATE TABLE public.poison_effects (id bigserial PRIMARY KEY, job_id bigint, tag text,"
        " worker_pid int, at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )
    other_queue = enqueue(conn, "Good", ["x"], queue="billing")
    scheduled = enqueue(conn, "Good", ["x"], run_at=datetime.now(UTC) + timedelta(hours=1))
    # A long poll interval: the worker finds jobs by notification only.
    worker = WorkerProcess(
        db_url, [MODULE], name="forged", log_dir=tmp_path, args=["-w", "2", "-i", "60"]
    )
    workers.append(worker)
    locker = worker.wait_connected(conn)
    channel = f"conveyor_worker_{locker}"

    _, connect = login_role("conveyor_enqueuer")
    app = connect()
    forged = [
        "not json at all",
        "",
        "null",
        "[1, 2, 3]",
        '{"jobs": "many"}',
        '{"jobs": [{"id": "abc", "priority": 1}]}',
        '{"jobs": [{"id": 1e400, "priority": 1}]}',
        '{"jobs": [{"priority": 1}]}',
        '{"jobs": [null, 1, "x"]}',
        '{"jobs": [{"id": 9223372036854775807, "priority": -5}], "more": "yes"}',
        json.dumps({"jobs": [{"id": i, "priority": 0} for i in range(1, 250)], "more": True}),
        "[" * 3900 + "]" * 3900,
    ]
    for payload in forged:
        app.execute("SELECT pg_notify(%s, %s)", [channel, payload])

    # The worker keeps working: new jobs announced the normal way run.
    fresh = [enqueue(conn, "Good", ["x"]) for _ in range(10)]
    wait_for(
        lambda: all(ran(conn, i) for i in fresh),
        what="jobs enqueued after the forgeries",
        timeout=15,
    )
    assert worker.alive(), worker.stderr()
    assert critical_events(worker.events()) == []
    assert "Traceback" not in worker.stderr()
    # Garbage is logged and dropped; it is no reason to drop the session
    # (and with it every lock the worker holds).
    events = [e.get("event") for e in worker.events()]
    assert "locker_cycle_failed" not in events and "locker_connection_lost" not in events, (
        "a malformed notification made the locker drop its session"
    )
    assert events.count("notification_malformed") >= 9

    # Well-formed forgeries, on their own: never early, never another queue.
    for payload in [
        json.dumps({"jobs": [{"id": scheduled, "priority": 0}]}),
        json.dumps({"jobs": [{"id": other_queue, "priority": 0, "queue": "default"}]}),
    ]:
        app.execute("SELECT pg_notify(%s, %s)", [channel, payload])
    more = [enqueue(conn, "Good", ["x"]) for _ in range(10)]
    wait_for(
        lambda: all(ran(conn, i) for i in more),
        what="jobs enqueued after the forgeries",
        timeout=15,
    )
    assert not ran(conn, scheduled), "a forged notification ran a scheduled job early"
    assert not ran(conn, other_queue), "a worker of queue 'default' ran a job of queue 'billing'"
    untouched = conn.execute(
        "SELECT count(*) FROM conveyor.jobs WHERE id = ANY(%s) AND error_count = 0",
        [[scheduled, other_queue]],
    ).fetchone()
    assert untouched == (2,), "the forged ids must leave those jobs as they were"
    assert worker.stop() == 0
