"""Recurring jobs in the worker: the locker enqueues due occurrences on its
poll cycle and wakes at the next due time; the worker upserts the schedules
its job modules declare; real `conveyor worker` processes make one job per
occurrence, across a restart.

The test hook is the schedule's next_run_at, which the tests move to a
second or two from now: a `* * * * *` schedule then falls due at once
instead of at the next minute, and enqueue_due_schedules treats it as any
occurrence (data.schedule.at is the moved time).
"""

from __future__ import annotations

import functools
import logging
import signal
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import conveyor
import psycopg
import pytest
from chaos_support import WorkerSubprocess
from conveyor import registry as job_module
from conveyor import schedules as schedules_module
from conveyor.schedule_clock import MINIMUM_WAIT, ScheduleClock
from db_support import scalar, wait_for
from psycopg.conninfo import make_conninfo
from security_support import login_roles


class WScheduled(conveyor.Job):
    """Keeps its row (finished), so the test can read data.schedule."""

    def run(self) -> None:
        self.finish()


def move_next_run(conn: psycopg.Connection[Any], name: str, seconds: int) -> Any:
    """Make the schedule `name` due in `seconds` (a whole second, as the
    occurrences of a cron expression are, minus up to one); that time."""
    row = conn.execute(
        "UPDATE conveyor.schedules"
        " SET next_run_at = date_trunc('second', now()) + make_interval(secs => %s)"
        " WHERE name = %s RETURNING next_run_at",
        (seconds, name),
    ).fetchone()
    assert row is not None
    return row[0]


def occurrence_jobs(conn: psycopg.Connection[Any], name: str) -> list[tuple[Any, Any, Any]]:
    """(data.schedule.at, created_at, finished_at) of the jobs of schedule `name`."""
    return conn.execute(
        "SELECT (data -> 'schedule' ->> 'at')::timestamptz, created_at, finished_at"
        " FROM conveyor.jobs WHERE data -> 'schedule' ->> 'name' = %s ORDER BY id",
        (name,),
    ).fetchall()


@pytest.fixture
def start_worker(db_url: str) -> Iterator[Callable[..., conveyor.Worker]]:
    started: list[conveyor.Worker] = []

    def _start(url: str = db_url, **options: Any) -> conveyor.Worker:
        options.setdefault("wait_period", 0.01)
        worker = conveyor.Worker(url, **options)
        started.append(worker)
        worker.start()
        return worker

    yield _start
    for worker in started:
        worker.stop(timeout=5)


@pytest.fixture
def forget_declarations() -> Iterator[None]:
    """Start the test with no declared schedule (other tests' declarations
    are process-wide too) and undo the schedules and job classes it declares."""
    classes = set(job_module._registry)
    declared = dict(schedules_module._declared)
    schedules_module._declared.clear()
    yield
    for name in set(job_module._registry) - classes:
        del job_module._registry[name]
    schedules_module._declared.clear()
    schedules_module._declared.update(declared)


# --- the clock -------------------------------------------------------------------------


def test_schedule_clock_calls_at_the_next_due_time_or_the_poll_interval() -> None:
    clock = ScheduleClock(poll_interval=5.0)
    assert clock.due(0.0)
    clock.called(100.0, 2.5)
    assert not clock.due(102.4)
    assert clock.due(102.5)
    assert clock.timeout(101.0) == 1.5
    clock.called(200.0, None)  # no schedule: call again after the interval
    assert clock.timeout(200.0) == 5.0
    clock.called(300.0, 3600.0)  # far away: still every interval (a new schedule)
    assert clock.timeout(300.0) == 5.0
    clock.called(400.0, -1.0)  # due but locked by another session: do not spin
    assert clock.timeout(400.0) == pytest.approx(MINIMUM_WAIT)
    clock.enabled = False
    assert not clock.due(1e9)
    assert clock.timeout(0.0) == float("inf")


# --- a worker in this process ----------------------------------------------------------


def test_the_locker_enqueues_an_occurrence_at_its_due_time_not_at_the_next_poll(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    conn.execute("SELECT conveyor.set_schedule('tick', '* * * * *', 'WScheduled')")
    due = move_next_run(conn, "tick", 2)
    # A poll interval far longer than the test: only the wake-up at
    # next_schedule_at can enqueue the occurrence in time.
    start_worker(poll_interval=60.0)
    wait_for(
        lambda: len(occurrence_jobs(conn, "tick")) == 1,
        timeout=10,
        what="the occurrence",
    )
    [(at, created_at, _)] = occurrence_jobs(conn, "tick")
    assert at == due
    assert timedelta(0) <= created_at - due < timedelta(seconds=1)
    wait_for(lambda: occurrence_jobs(conn, "tick")[0][2] is not None, what="the job worked")
    # The next occurrence is the next minute's: nothing more for now.
    time.sleep(0.5)
    assert len(occurrence_jobs(conn, "tick")) == 1


def test_no_schedule_costs_two_statements_per_poll_interval(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    statements: list[str] = []

    def count(query: str, params: Any, proceed: Callable[[], Any]) -> Any:
        statements.append(query)
        return proceed()

    worker = start_worker(poll_interval=0.5, sql_middleware=[count])
    time.sleep(2.2)
    worker.stop()
    due = [s for s in statements if "enqueue_due_schedules" in s]
    nexts = [s for s in statements if "next_schedule_at" in s]
    # At start-up, then once per interval: 5 calls in 2.2 s (fewer on a loaded machine).
    assert 3 <= len(due) <= 6, statements
    assert len(nexts) == len(due)


def test_the_worker_applies_declared_schedules_at_start(
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., conveyor.Worker],
    forget_declarations: None,
) -> None:
    class WNightly(conveyor.Job):
        queue = "reports"
        schedule = "0 3 * * *"

        def run(self) -> None:
            pass

    class WWeekly(conveyor.Job):
        priority = 5
        schedule = conveyor.Schedule(cron="0 4 * * 1", args=("full",), time_zone="Europe/Berlin")

        def run(self, kind: str) -> None:
            pass

    conveyor.schedule("sync", "*/15 * * * *", "Sync", 1, catch_up=True)
    start_worker(poll_interval=0.5)
    rows = conn.execute(
        "SELECT name, cron, time_zone, job_class, args, queue, priority, catch_up"
        " FROM conveyor.schedules ORDER BY name"
    ).fetchall()
    assert rows == [
        ("WNightly", "0 3 * * *", "UTC", "WNightly", [], "reports", 100, False),
        (
            "WWeekly",
            "0 4 * * 1",
            "Europe/Berlin",
            "WWeekly",
            ["full"],
            "default",
            5,
            False,
        ),
        ("sync", "*/15 * * * *", "UTC", "Sync", [1], "default", 100, True),
    ]


def test_a_bad_schedule_attribute_is_a_type_error(forget_declarations: None) -> None:
    class WBad(conveyor.Job):
        schedule = 42  # type: ignore[assignment]

        def run(self) -> None:
            pass

    with pytest.raises(TypeError, match=r"WBad.schedule must be a cron string"):
        schedules_module.declared_schedules()


def test_a_role_that_may_not_change_schedules_warns_once_and_works_on(
    admin_url: str,
    db_url: str,
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., conveyor.Worker],
    forget_declarations: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    conveyor.schedule("as-worker", "* * * * *", WScheduled)
    conn.execute("SELECT conveyor.set_schedule('existing', '* * * * *', 'WScheduled')")
    due = move_next_run(conn, "existing", 1)
    with (
        login_roles(admin_url, db_url) as make,
        caplog.at_level(logging.INFO, "conveyor"),
    ):
        name, _ = make("conveyor_worker")
        start_worker(make_conninfo(db_url, user=name), poll_interval=0.5)
        # It still enqueues the schedules already in the database.
        wait_for(lambda: len(occurrence_jobs(conn, "existing")) == 1, what="the occurrence")
    assert occurrence_jobs(conn, "existing")[0][0] == due
    warnings = [r for r in caplog.records if r.msg == "schedules_not_applied"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert scalar(conn, "SELECT count(*) FROM conveyor.schedules WHERE name = 'as-worker'") == 0


# --- real worker processes -------------------------------------------------------------

JOBS_MODULE = textwrap.dedent(
    """
    import conveyor


    class Tick(conveyor.Job):
        def run(self):
            self.finish()


    conveyor.schedule("tick", "* * * * *", Tick)
    """
)


@pytest.fixture
def spawn(spawn_worker: Callable[..., WorkerSubprocess]) -> Callable[..., WorkerSubprocess]:
    """Start `conveyor worker` on this module's jobs (--poll-interval 0.3)."""
    return functools.partial(spawn_worker, JOBS_MODULE, "--poll-interval", "0.3")


def registered(conn: psycopg.Connection[Any], process_id: int) -> bool:
    return bool(
        scalar(
            conn,
            "SELECT count(*) FROM conveyor.lockers WHERE process_id = %s",
            (process_id,),
        )
    )


@pytest.mark.slow
def test_worker_processes_make_one_job_per_occurrence_across_a_restart(
    conn: psycopg.Connection[Any], spawn: Callable[[], WorkerSubprocess]
) -> None:
    workers = [spawn() for _ in range(3)]
    for worker in workers:
        wait_for(lambda w=worker: registered(conn, w.popen.pid), what="registration")
    # The workers declared the schedule at start-up (and kept its occurrence).
    assert scalar(conn, "SELECT count(*) FROM conveyor.schedules WHERE name = 'tick'") == 1
    occurrences = []
    for round_number in range(8):
        if round_number == 4:
            # SIGTERM one worker, start another: it declares the schedule
            # again, which must neither lose nor repeat an occurrence.
            workers[0].popen.send_signal(signal.SIGTERM)
            assert workers[0].popen.wait(15) == 0
            workers[0] = spawn()
            wait_for(lambda: registered(conn, workers[0].popen.pid), what="registration")
        occurrences.append(move_next_run(conn, "tick", 1))
        wait_for(
            lambda: len(occurrence_jobs(conn, "tick")) == len(occurrences),
            timeout=10,
            what=f"occurrence {round_number}",
        )
    wait_for(
        lambda: all(finished is not None for _, _, finished in occurrence_jobs(conn, "tick")),
        what="every occurrence worked",
    )
    time.sleep(1.0)  # any duplicate would have been enqueued by now
    jobs = occurrence_jobs(conn, "tick")
    assert [at for at, _, _ in jobs] == occurrences
    for at, created_at, _ in jobs:
        # Each due within a poll interval (0.3 s) plus the wait: no drift past a second.
        assert created_at - at < timedelta(seconds=1)
    for worker in workers:
        worker.popen.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.popen.wait(15) == 0
        assert "Traceback" not in worker.log.read_text()
