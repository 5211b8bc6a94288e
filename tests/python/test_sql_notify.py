"""The NOTIFY side of the protocol (docs/reference/protocol.md, "Working jobs").

A worker registers with conveyor.register_locker, LISTENs on the channel it
returns, and the insert trigger tells it about ready jobs on that channel.

"Nothing was delivered" is proved without sleeping: after the action under
test, another session sends a sentinel on the listener's channel.
PostgreSQL delivers notifications in commit order, so anything the action
sent arrives before the sentinel (`announced_before_sentinel`).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import psycopg
import pytest
from db_support import enqueue, enqueue_many
from psycopg import sql
from psycopg.types.json import Jsonb

Connect = Callable[..., psycopg.Connection[Any]]

_sentinels = itertools.count(1)


def register(
    conn: psycopg.Connection[Any],
    queues: Iterable[str] = ("default",),
    worker_priorities: Iterable[int | None] = (None,),
) -> str:
    """Register `conn` as a worker's locker and LISTEN on its channel."""
    row = conn.execute(
        "SELECT conveyor.register_locker(queues => %s, worker_priorities => %s::integer[])",
        [list(queues), list(worker_priorities)],
    ).fetchone()
    assert row is not None
    channel = str(row[0])
    assert channel == f"conveyor_worker_{conn.info.backend_pid}"
    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    return channel


def announced_before_sentinel(
    listener: psycopg.Connection[Any], channel: str, sender: psycopg.Connection[Any]
) -> list[dict[str, Any]]:
    """Payloads (parsed) `listener` receives on `channel` before a sentinel
    that `sender` sends now."""
    sentinel = f"sentinel-{next(_sentinels)}"
    sender.execute("SELECT pg_notify(%s, %s)", [channel, sentinel])
    payloads: list[dict[str, Any]] = []
    for notify in listener.notifies(timeout=10):
        assert notify.channel == channel
        if notify.payload == sentinel:
            return payloads
        payloads.append(json.loads(notify.payload))
    pytest.fail(f"the sentinel on {channel} did not arrive within 10 s")


def announced_ids(payloads: list[dict[str, Any]]) -> list[int]:
    return [job["id"] for payload in payloads for job in payload["jobs"]]


# --- one ready job -------------------------------------------------------------


def test_ready_job_is_announced_when_its_transaction_commits(connect: Connect) -> None:
    listener, producer, probe = connect(), connect(), connect()
    channel = register(listener)

    with producer.transaction():
        row = producer.execute(
            "SELECT id, run_at FROM conveyor.enqueue('Ready', '[1]', priority => 7)"
        ).fetchone()
        assert row is not None
        job, run_at = row
        # Not before commit.
        assert announced_before_sentinel(listener, channel, probe) == []

    started = time.monotonic()
    notifies = list(listener.notifies(timeout=5, stop_after=1))
    assert time.monotonic() - started < 5
    assert len(notifies) == 1
    assert notifies[0].channel == channel
    assert notifies[0].pid == producer.info.backend_pid
    payload = json.loads(notifies[0].payload)
    assert set(payload) == {"jobs", "more"}
    assert payload["more"] is False
    [announced] = payload["jobs"]
    assert set(announced) == {"id", "queue", "priority", "run_at"}
    assert (announced["id"], announced["queue"], announced["priority"]) == (job, "default", 7)
    assert datetime.fromisoformat(announced["run_at"]) == run_at
    # Exactly one notification.
    assert announced_before_sentinel(listener, channel, probe) == []


def test_rolled_back_enqueue_announces_nothing(connect: Connect) -> None:
    listener, producer = connect(), connect()
    channel = register(listener)
    with producer.transaction(force_rollback=True):
        enqueue(producer)
    assert announced_before_sentinel(listener, channel, producer) == []


def test_job_scheduled_for_later_is_not_announced(connect: Connect) -> None:
    listener, producer = connect(), connect()
    channel = register(listener)

    producer.execute("SELECT conveyor.enqueue('Later', run_at => now() + interval '1 hour')")
    assert announced_before_sentinel(listener, channel, producer) == []

    # One statement with a scheduled and a ready job announces the ready one.
    _later, ready = enqueue_many(
        producer,
        [
            {"job_class": "Later", "run_at": "2999-01-01T00:00:00Z"},
            {"job_class": "Ready"},
        ],
    )
    assert announced_ids(announced_before_sentinel(listener, channel, producer)) == [ready]


def test_job_in_a_queue_the_worker_does_not_serve_is_not_announced(connect: Connect) -> None:
    listener, producer = connect(), connect()
    channel = register(listener, queues=["default", "mail"])

    enqueue(producer, queue="billing")
    assert announced_before_sentinel(listener, channel, producer) == []

    mail = enqueue(producer, queue="mail")
    payloads = announced_before_sentinel(listener, channel, producer)
    assert announced_ids(payloads) == [mail]
    assert payloads[0]["jobs"][0]["queue"] == "mail"


def test_job_above_every_priority_ceiling_is_not_announced(connect: Connect) -> None:
    listener, producer = connect(), connect()
    channel = register(listener, worker_priorities=[10])

    enqueue(producer, priority=50)
    assert announced_before_sentinel(listener, channel, producer) == []

    urgent = enqueue(producer, priority=10)
    assert announced_ids(announced_before_sentinel(listener, channel, producer)) == [urgent]


def test_worker_that_takes_any_priority_hears_of_every_priority(connect: Connect) -> None:
    listener, producer = connect(), connect()
    channel = register(listener, worker_priorities=[10, None])
    job = enqueue(producer, priority=32767)
    assert announced_ids(announced_before_sentinel(listener, channel, producer)) == [job]


def test_unregistered_or_not_listening_worker_is_not_told(connect: Connect) -> None:
    listener, producer = connect(), connect()
    channel = register(listener)
    row = listener.execute("SELECT conveyor.unregister_locker()").fetchone()
    assert row == (True,)
    enqueue(producer)
    assert announced_before_sentinel(listener, channel, producer) == []

    listener.execute("SELECT conveyor.register_locker('{default}', '{NULL}', listening => false)")
    enqueue(producer)
    assert announced_before_sentinel(listener, channel, producer) == []


def test_registering_again_replaces_the_registration(connect: Connect) -> None:
    listener, producer = connect(), connect()
    channel = register(listener, queues=["a"])
    assert register(listener, queues=["b"]) == channel
    rows = producer.execute("SELECT pid, queues FROM conveyor.lockers").fetchall()
    assert rows == [(listener.info.backend_pid, ["b"])]

    enqueue(producer, queue="a")
    assert announced_before_sentinel(listener, channel, producer) == []
    job = enqueue(producer, queue="b")
    assert announced_ids(announced_before_sentinel(listener, channel, producer)) == [job]


# --- many jobs, many workers -----------------------------------------------------


def test_bulk_enqueue_of_10000_jobs_sends_at_most_one_notification_per_worker(
    connect: Connect,
) -> None:
    producer = connect()
    listeners = [connect() for _ in range(3)]
    channels = [register(listener) for listener in listeners]

    ids = enqueue_many(producer, [{"job_class": "Bulk", "args": [i]} for i in range(10_000)])
    assert len(ids) == 10_000

    received = [
        announced_before_sentinel(listener, channel, producer)
        for listener, channel in zip(listeners, channels, strict=True)
    ]
    counts = [len(payloads) for payloads in received]
    assert all(count <= 1 for count in counts), counts
    assert 1 <= sum(counts) <= 3
    payloads = [payload for per_listener in received for payload in per_listener]
    assert all(payload["more"] is True for payload in payloads)
    announced = announced_ids(payloads)
    assert 1 <= len(announced) <= 64
    assert len(set(announced)) == len(announced), "a job was announced to two workers"
    assert set(announced) <= set(ids)


def test_notify_off_silences_the_trigger_for_the_transaction(connect: Connect) -> None:
    listener, producer = connect(), connect()
    channel = register(listener)

    with producer.transaction():
        producer.execute("SET LOCAL conveyor.notify = off")
        enqueue(producer)
        enqueue_many(producer, [{"job_class": "Backfill"}] * 100)
    assert announced_before_sentinel(listener, channel, producer) == []

    # LOCAL: the next transaction announces again.
    job = enqueue(producer)
    assert announced_ids(announced_before_sentinel(listener, channel, producer)) == [job]


def test_single_jobs_are_spread_across_listeners(connect: Connect) -> None:
    producer = connect()
    listeners = [connect(), connect()]
    channels = [register(listener) for listener in listeners]

    ids = [enqueue(producer, "Spread", args=Jsonb([i])) for i in range(20)]

    per_listener = [
        announced_before_sentinel(listener, channel, producer)
        for listener, channel in zip(listeners, channels, strict=True)
    ]
    first, second = (announced_ids(payloads) for payloads in per_listener)
    assert first, "the first listener heard of no job"
    assert second, "the second listener heard of no job"
    assert not set(first) & set(second), "a job was announced to both listeners"
    assert sorted(first + second) == ids
    # One job per statement, one notification per job.
    assert all(len(p["jobs"]) == 1 for payloads in per_listener for p in payloads)


# --- the registry -----------------------------------------------------------------


def test_prune_lockers_removes_the_row_of_a_session_that_is_gone(connect: Connect) -> None:
    dead, alive, janitor = connect(), connect(), connect()
    register(dead)
    register(alive)
    dead_pid, alive_pid = dead.info.backend_pid, alive.info.backend_pid
    dead.close()

    deadline = time.monotonic() + 10
    while janitor.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [dead_pid]
    ).fetchone() != (0,):
        if time.monotonic() > deadline:
            pytest.fail("the closed session's backend did not exit within 10 s")
        time.sleep(0.01)

    row = janitor.execute("SELECT conveyor.prune_lockers()").fetchone()
    assert row == (1,)
    rows = janitor.execute("SELECT pid FROM conveyor.lockers ORDER BY pid").fetchall()
    assert rows == [(alive_pid,)]
    assert janitor.execute("SELECT conveyor.prune_lockers()").fetchone() == (0,)
