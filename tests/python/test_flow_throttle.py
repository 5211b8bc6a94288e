"""Throttles with real sessions and a real worker: 10 starts per second over a
backlog of 100 jobs take about 9 s with a 5 s poll interval (the worker is
woken when each window opens, by lock_jobs' wake_in notification), never more
than 10 starts in any second; two lockers racing for one key never exceed
its rate; the notification itself.

Every start a throttle grants is logged, with the exact time recorded in
conveyor.throttle_starts, by a trigger this test adds to that table: the
rate is checked on those times, not on when the jobs happened to run."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from chaos_support import WorkerSubprocess
from conveyor.poller import Poller
from conveyor.protocol import Notification
from db_support import wait_for

Connect = Callable[..., psycopg.Connection[Any]]
Spawn = Callable[..., WorkerSubprocess]

# A start taken appends the key's newest element (and may drop its oldest,
# which has left the window); a start given back removes one element and
# adds none: the log follows both.
START_LOG = """
CREATE TABLE throttle_log (key text NOT NULL, started timestamptz NOT NULL);
CREATE FUNCTION log_throttle_start() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' OR NEW.starts[cardinality(NEW.starts)]
                         > coalesce(OLD.starts[cardinality(OLD.starts)], '-infinity') THEN
    INSERT INTO public.throttle_log VALUES (NEW.key, NEW.starts[cardinality(NEW.starts)]);
  ELSE
    DELETE FROM public.throttle_log AS l
     WHERE l.ctid = (SELECT g.ctid FROM public.throttle_log AS g
                      WHERE g.key = NEW.key
                        AND g.started = (SELECT o FROM unnest(OLD.starts) AS o
                                         EXCEPT ALL SELECT n FROM unnest(NEW.starts) AS n LIMIT 1)
                      LIMIT 1);
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER log_start AFTER INSERT OR UPDATE ON conveyor.throttle_starts
  FOR EACH ROW EXECUTE FUNCTION log_throttle_start();
"""

JOBS = """
import conveyor

class ThrottleRecorded(conveyor.Job):
    def run(self):
        with self.connection() as conn:
            conn.execute("INSERT INTO throttle_runs (job_id) VALUES (%s)", (self.id,))
"""


def scalar(conn: psycopg.Connection[Any], query: str, params: Any = ()) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def enqueue_backlog(
    conn: psycopg.Connection[Any], count: int, key: str, job_class: str
) -> None:
    jobs = [{"job_class": job_class, "concurrency_key": key} for _ in range(count)]
    conn.execute(
        "SELECT count(*) FROM conveyor.enqueue_many(%s::jsonb)", (json.dumps(jobs),)
    )


def logged_starts(conn: psycopg.Connection[Any], key: str) -> list[datetime]:
    return [
        row[0]
        for row in conn.execute(
            "SELECT started FROM throttle_log WHERE key = %s ORDER BY started", (key,)
        )
    ]


def most_in_window(times: list[datetime], window: timedelta) -> int:
    """The most of ``times`` (sorted) within any half-open window of that length."""
    most, first = 0, 0
    for last, time_ in enumerate(times):
        while time_ - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.mark.slow
def test_10_per_second_over_100_jobs_takes_about_9_seconds(
    conn: psycopg.Connection[Any], spawn_worker: Spawn
) -> None:
    conn.execute(START_LOG)
    conn.execute(
        "CREATE TABLE throttle_runs (job_id bigint, ran timestamptz DEFAULT clock_timestamp())"
    )
    conn.execute(
        "SELECT conveyor.set_concurrency_limit('flow.throttle', perform_throttle => 10,"
        " throttle_period => '1 second')"
    )
    enqueue_backlog(conn, 100, "flow.throttle", "ThrottleRecorded")
    # The default poll interval (5 s): were the worker not woken when a
    # window opens, ten windows would take about 50 s.
    worker = spawn_worker(
        JOBS, "-w", "4", "--poll-interval", "5", "--log-level", "info"
    )
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM throttle_runs") == 100,
        timeout=60,
        what="the 100 jobs to run",
    )
    starts = logged_starts(conn, "flow.throttle")
    assert len(starts) >= 100
    assert most_in_window(starts, timedelta(seconds=1)) <= 10
    span = (starts[-1] - starts[0]).total_seconds()
    # Ten windows of 10: the first starts at 0, the last at 9 s.
    assert 8.5 <= span <= 13, f"100 jobs at 10/s started over {span:.2f} s"
    runs = [
        row[0]
        for row in conn.execute("SELECT ran FROM throttle_runs ORDER BY ran").fetchall()
    ]
    ran_over = (runs[-1] - runs[0]).total_seconds()
    assert 8.5 <= ran_over <= 13, f"the jobs ran over {ran_over:.2f} s"
    print(f"100 jobs at 10/s: started over {span:.2f} s, ran over {ran_over:.2f} s")
    # When the jobs ran (a little after their locking) obeys the rate too,
    # give or take the hand-off from the locker to a worker thread.
    assert most_in_window(runs, timedelta(seconds=0.8)) <= 10
    assert worker.popen.poll() is None, worker.output()


@pytest.mark.slow
def test_two_lockers_racing_never_exceed_the_rate(
    conn: psycopg.Connection[Any], connect: Connect
) -> None:
    conn.execute(START_LOG)
    conn.execute(
        "SELECT conveyor.set_concurrency_limit('flow.race', perform_throttle => 5,"
        " throttle_period => '300 milliseconds')"
    )
    enqueue_backlog(conn, 400, "flow.race", "Race")
    deadline = time.monotonic() + 2.5
    got: dict[int, int] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def locker(number: int) -> None:
        try:
            session = connect()
            start.wait()
            count = 0
            while time.monotonic() < deadline:
                # Lock and destroy at once: each job taken is gone for good.
                ids = [
                    row[0]
                    for row in session.execute(
                        "SELECT id FROM conveyor.lock_jobs(max_jobs => 3, held => '{}')"
                    )
                ]
                if ids:
                    session.execute(
                        "SELECT conveyor.destroy_jobs(%s::bigint[], %s::bigint[])",
                        (ids, ids),
                    )
                count += len(ids)
            got[number] = count
        except Exception as error:  # noqa: BLE001 -- reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=locker, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    starts = logged_starts(conn, "flow.race")
    assert most_in_window(starts, timedelta(milliseconds=300)) <= 5
    taken = got[0] + got[1]
    assert (
        taken == len(starts) == 400 - scalar(conn, "SELECT count(*) FROM conveyor.jobs")
    )
    # 2.5 s is 8 to 9 windows of 5; the rate was used, not just obeyed.
    assert 35 <= taken <= 45, got
    assert got[0] > 0 and got[1] > 0, got


def test_lock_jobs_tells_its_session_when_the_window_opens(connect: Connect) -> None:
    conn = connect()
    conn.execute(
        "SELECT conveyor.set_concurrency_limit('flow.wake', perform_throttle => 2,"
        " throttle_period => '2 seconds')"
    )
    enqueue_backlog(conn, 3, "flow.wake", "Wake")
    pid = scalar(conn, "SELECT pg_backend_pid()")
    conn.execute(f"LISTEN conveyor_worker_{pid}")
    got = conn.execute("SELECT id FROM conveyor.lock_jobs(max_jobs => 1)").fetchall()
    assert len(got) == 1
    # A window with room: nothing to say.
    assert list(conn.notifies(timeout=0.2, stop_after=1)) == []
    got = conn.execute("SELECT id FROM conveyor.lock_jobs(max_jobs => 5)").fetchall()
    assert len(got) == 1
    notes = list(conn.notifies(timeout=2, stop_after=1))
    assert len(notes) == 1
    payload = json.loads(notes[0].payload)
    assert payload["jobs"] == [] and payload["more"] is False
    # The first start was a moment ago: its window opens in a little under 2 s.
    assert 1.5 < payload["wake_in"] <= 2.0, payload
    # Another session's call is held back too, and tells only its own
    # channel: nothing arrives on this one.
    other = connect()
    assert other.execute(
        "SELECT count(*) FROM conveyor.lock_jobs(max_jobs => 5)"
    ).fetchone() == (0,)
    assert list(conn.notifies(timeout=0.3, stop_after=1)) == []


def test_the_poller_polls_fully_when_a_window_opens() -> None:
    poller = Poller(poll_interval=5)
    requests, full = poller.plan({None: 4}, low=True, now=100.0)
    poller.polled(requests, [1], full, 100.0)  # short: a throttle held jobs back
    poller.wake_at(100.4)
    assert poller.timeout(100.0) == pytest.approx(0.4)
    assert poller.plan({None: 4}, low=True, now=100.2) == ([], False)
    assert poller.plan({None: 4}, low=True, now=100.4) == ([(4, None)], True)
    # Cleared by that poll; a later wake only brings the next poll forward.
    assert poller.timeout(100.4) == pytest.approx(4.6)
    poller.wake_at(107.0)  # after the interval: the interval comes first
    assert poller.timeout(100.4) == pytest.approx(4.6)
    poller.wake_at(102.0)
    assert poller.timeout(100.4) == pytest.approx(1.6)
    # A window that opens while the buffer is full: the next time the buffer
    # runs low, the locker polls (as after a hint), not at the interval.
    requests, full = poller.plan({None: 4}, low=True, now=102.0)
    assert full
    poller.polled(requests, [0], full, 102.0)  # short again
    poller.wake_at(102.5)
    assert poller.plan({}, low=False, now=102.6) == ([], False)
    assert poller.plan({None: 2}, low=True, now=103.0) == ([(2, None)], False)
    poller.reset()
    assert poller.timeout(100.4) == 0.0


def test_notifications_carry_wake_in() -> None:
    note = Notification.parse('{"jobs": [], "more": false, "wake_in": 0.734}')
    assert note == Notification([], False, 0.734)
    assert Notification.parse('{"jobs": [], "more": true}').wake_in is None
    for bad in (
        '"wake_in": -1',
        '"wake_in": "soon"',
        '"wake_in": NaN',
        '"wake_in": 1e9',
    ):
        with pytest.raises((ValueError, TypeError)):
            Notification.parse("{" + bad + "}")
