"""The worker, in process: locker, buffer, worker threads, error handling,
polling, NOTIFY, priorities, shutdown, reconnection. Real PostgreSQL; the
subprocess tests (signals, several processes) are in test_worker_processes.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from db_support import locks_held, scalar, wait_for

import conveyor
from conveyor.buffer import JobBuffer
from conveyor.logs import JSONFormatter, JSONHandler
from conveyor.poller import Poller
from conveyor.protocol import AnnouncedJob, LockedJob
from conveyor.worker_threads import parse_worker_priorities, worker_priorities

Connect = Callable[..., psycopg.Connection[Any]]


def job_row(conn: psycopg.Connection[Any], job_id: int | None) -> dict[str, Any] | None:
    cursor = conn.execute(
        "SELECT id, priority, run_at, job_class, queue, error_count, maximum_retry_count,"
        " last_error_message, last_error_backtrace, finished_at, expired_at"
        " FROM conveyor.jobs WHERE id = %s",
        (job_id,),
    )
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([c.name for c in cursor.description or []], row, strict=True))


def locker_pid(conn: psycopg.Connection[Any]) -> int:
    return int(
        wait_for(
            lambda: scalar(conn, "SELECT max(pid) FROM conveyor.lockers"),
            what="a registered worker",
        )
    )


@pytest.fixture
def start_worker(db_url: str) -> Iterator[Callable[..., conveyor.Worker]]:
    """Start workers on the test database; all are stopped at teardown."""
    started: list[conveyor.Worker] = []

    def _start(**options: Any) -> conveyor.Worker:
        options.setdefault("poll_interval", 0.2)
        options.setdefault("wait_period", 0.01)
        worker = conveyor.Worker(db_url, **options)
        started.append(worker)
        worker.start()
        return worker

    yield _start
    for gate in gates.values():
        gate.set()
    for worker in started:
        worker.stop(timeout=5)


# --- job classes used below -------------------------------------------------------

done: list[Any] = []
started_at: dict[str, float] = {}
gates: dict[str, threading.Event] = {}


def gate(name: str) -> threading.Event:
    return gates.setdefault(name, threading.Event())


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    done.clear()
    started_at.clear()
    gates.clear()
    yield
    for event in gates.values():
        event.set()


class WCount(conveyor.Job):
    def run(self, value: Any = None) -> None:
        done.append(value)


class WBlock(conveyor.Job):
    """Records that it started, then waits for its gate."""

    def run(self, name: str, value: Any = None) -> None:
        started_at[f"{name}:{value}"] = time.monotonic()
        gate(name).wait(15)
        done.append(value)


class WFinish(conveyor.Job):
    def run(self) -> None:
        self.finish()


class WExpire(conveyor.Job):
    def run(self) -> None:
        self.expire()


class WRetryLater(conveyor.Job):
    def run(self) -> None:
        self.retry_in(3600)


class WFinishByDefault(conveyor.Job):
    def run(self) -> None:
        pass

    def default_resolve_action(self) -> None:
        self.finish()


class WAtomic(conveyor.Job):
    def run(self, value: int, fail: bool = False) -> None:
        with self.connection() as conn:
            conn.execute("INSERT INTO results (value) VALUES (%s)", (value,))
            self.destroy(conn=conn)
            if fail:
                raise RuntimeError("after destroy, inside the transaction")


class WAlwaysFails(conveyor.Job):
    retry_interval = 0
    maximum_retry_count = 2

    def run(self) -> None:
        raise ValueError("always")


class WQuiet(conveyor.Job):
    def run(self) -> None:
        raise ValueError("quiet")

    def handle_error(self, error: BaseException) -> bool:
        self.retry_in(3600)
        return False


class WGivesUp(conveyor.Job):
    """Expires itself from handle_error (Que's way to give up), through the
    locker or, with ``own_connection``, on a connection of its own."""

    def run(self, own_connection: bool) -> None:
        raise LookupError("no such user")

    def handle_error(self, error: BaseException) -> bool:
        if self.attrs["args"][0]:
            with self.connection() as conn:
                assert self.expire(conn=conn)
        else:
            self.expire()
        return False


class WRaises(conveyor.Job):
    def run(self, kind: str) -> None:
        if kind == "SystemExit":
            raise SystemExit(3)
        if kind == "KeyboardInterrupt":
            raise KeyboardInterrupt
        if kind == "GeneratorExit":
            raise GeneratorExit
        raise RuntimeError(kind)

    def handle_error(self, error: BaseException) -> bool:
        return self.retry_in(3600)


class WLogged(conveyor.Job):
    def run(self, level: str | None) -> None:
        pass

    def log_level(self, elapsed: float) -> int | None:
        return None if self.attrs["args"][0] is None else logging.INFO


# --- working jobs -------------------------------------------------------------------


def test_jobs_are_worked_destroyed_and_no_thread_survives_stop(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    before = set(threading.enumerate())
    WCount.enqueue_many([[i] for i in range(200)], conn=conn)
    worker = start_worker(worker_count=4)
    assert {t.name for t in worker.threads} == {
        "conveyor-locker",
        *(f"conveyor-worker-{i}" for i in range(1, 5)),
    }
    wait_for(lambda: len(done) == 200, what="200 jobs")
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM conveyor.jobs") == 0,
        what="empty table",
    )
    assert sorted(done) == list(range(200))
    assert worker.stop() is True
    assert not any(t.is_alive() for t in worker.threads)
    assert set(threading.enumerate()) - before == set()
    assert scalar(conn, "SELECT count(*) FROM conveyor.lockers") == 0  # unregistered


def test_job_helpers_resolve_jobs(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    ids = {
        name: cls.enqueue(conn=conn)
        for name, cls in [
            ("finish", WFinish),
            ("expire", WExpire),
            ("retry", WRetryLater),
            ("default", WFinishByDefault),
        ]
    }
    worker = start_worker(worker_count=2)
    pid = locker_pid(conn)
    wait_for(lambda: job_row(conn, ids["finish"])["finished_at"], what="finish")  # type: ignore[index]
    wait_for(lambda: job_row(conn, ids["default"])["finished_at"], what="finish")  # type: ignore[index]
    wait_for(lambda: job_row(conn, ids["expire"])["expired_at"], what="expire")  # type: ignore[index]
    retried = wait_for(lambda: (r := job_row(conn, ids["retry"])) and r["error_count"] and r)
    assert retried["run_at"] > datetime.now(UTC) + timedelta(minutes=59)
    wait_for(lambda: locks_held(conn, pid) == 0, what="locks released")
    assert worker.stop()


def test_a_job_writes_and_destroys_itself_atomically(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    conn.execute("CREATE TABLE results (value int NOT NULL)")
    good = WAtomic.enqueue(1, conn=conn)
    bad = WAtomic.enqueue(2, True, conn=conn)
    start_worker(worker_count=2)
    pid = locker_pid(conn)
    wait_for(lambda: job_row(conn, good) is None, what="job destroyed")
    failed = wait_for(lambda: (r := job_row(conn, bad)) and r["error_count"] == 1 and r)
    # The destroy was rolled back with the insert: the job is kept, retried.
    assert failed["last_error_message"] == "RuntimeError: after destroy, inside the transaction"
    assert conn.execute("SELECT value FROM results").fetchall() == [(1,)]
    wait_for(lambda: locks_held(conn, pid) == 0, what="locks released")


def test_the_lockers_count_of_held_jobs_matches_pg_locks(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    """The locker tells lock_jobs and the resolutions which jobs it holds
    (`held`) instead of reading pg_locks. A count that misses a job would
    show here: lock_jobs would lock that job a second time, and its release
    would leave one lock behind (or not release it at all). Every outcome
    runs, the small buffer evicts, and the session is terminated midway."""
    conn.execute("CREATE TABLE results (value int NOT NULL)")
    WCount.enqueue_many([[i] for i in range(150)], conn=conn, priority=50)
    for cls in (WFinish, WExpire, WRetryLater, WFinishByDefault, WQuiet):
        cls.enqueue_many([[] for _ in range(10)], conn=conn, priority=60)
    WAtomic.enqueue_many([[i] for i in range(20)], conn=conn, priority=70)
    worker = start_worker(worker_count=3, maximum_buffer_size=2, minimum_buffer_size=1)
    pid = locker_pid(conn)
    wait_for(lambda: len(done) >= 50, what="some jobs done")
    # Urgent jobs arriving at a full buffer make the locker evict (unlock).
    WCount.enqueue_many([[f"urgent {i}"] for i in range(20)], conn=conn, priority=1)
    wait_for(lambda: len(done) >= 120, what="more jobs done")
    assert scalar(conn, "SELECT pg_terminate_backend(%s)", (pid,))
    pid = wait_for(
        lambda: (p := scalar(conn, "SELECT max(pid) FROM conveyor.lockers")) != pid and p,
        what="a new registration",
    )
    ready = (
        "SELECT count(*) FROM conveyor.jobs"
        " WHERE finished_at IS NULL AND expired_at IS NULL AND run_at <= now()"
    )
    wait_for(lambda: scalar(conn, ready) == 0, timeout=30, what="every ready job worked")
    wait_for(lambda: locks_held(conn, pid) == 0, what="no lock left in the locker's session")
    assert scalar(conn, "SELECT count(*) FROM results") == 20
    assert worker.connected


# --- errors -------------------------------------------------------------------------


def test_errors_are_retried_then_expired_and_notified(
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., conveyor.Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    notified: list[tuple[BaseException, dict[str, Any]]] = []
    job_id = WAlwaysFails.enqueue(conn=conn)
    assert job_row(conn, job_id)["maximum_retry_count"] == 2  # type: ignore[index]
    with caplog.at_level(logging.ERROR, logger="conveyor"):
        start_worker(worker_count=1, error_notifier=lambda e, j: notified.append((e, j)))
        row = wait_for(
            lambda: (r := job_row(conn, job_id)) and r["expired_at"] and r,
            what="expiry",
        )
    assert row["error_count"] == 3
    assert row["last_error_message"] == "ValueError: always"
    assert "raise ValueError" in row["last_error_backtrace"]
    assert [n[1]["error_count"] for n in notified] == [1, 2, 3]
    assert all(n[1]["id"] == job_id and n[1]["job_class"] == "WAlwaysFails" for n in notified)
    errored = [r for r in caplog.records if r.msg == "job_errored"]
    assert len(errored) == 3 and all(r.levelno == logging.ERROR for r in errored)


@pytest.mark.parametrize("own_connection", [False, True], ids=["by-locker", "own-connection"])
def test_expire_from_handle_error_records_the_error(
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., conveyor.Worker],
    own_connection: bool,
) -> None:
    """Que's expire: the expired job says why."""
    job_id = WGivesUp.enqueue(own_connection, conn=conn)
    run_at = job_row(conn, job_id)["run_at"]  # type: ignore[index]
    worker = start_worker(worker_count=1)
    row = wait_for(lambda: (r := job_row(conn, job_id)) and r["expired_at"] and r, what="expiry")
    assert row["error_count"] == 1
    assert row["last_error_message"] == "LookupError: no such user"
    assert "raise LookupError" in row["last_error_backtrace"]
    assert row["run_at"] == run_at  # expired, not rescheduled
    assert row["finished_at"] is None
    wait_for(lambda: locks_held(conn, locker_pid(conn)) == 0, what="the lock released")
    assert worker.connected


def test_expire_outside_handle_error_records_no_error(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    job_id = WExpire.enqueue(conn=conn)
    start_worker(worker_count=1)
    row = wait_for(lambda: (r := job_row(conn, job_id)) and r["expired_at"] and r, what="expiry")
    assert (row["error_count"], row["last_error_message"]) == (0, None)


def test_a_raising_notifier_and_a_quiet_handle_error_do_not_break_the_worker(
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., conveyor.Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def notifier(error: BaseException, job: dict[str, Any]) -> None:
        calls.append(job["job_class"])
        raise RuntimeError("the notifier is broken")

    quiet = WQuiet.enqueue(conn=conn)
    loud = WRaises.enqueue("loud", conn=conn)
    with caplog.at_level(logging.ERROR, logger="conveyor"):
        start_worker(worker_count=1, error_notifier=notifier)
        for job_id in (quiet, loud):
            wait_for(lambda j=job_id: job_row(conn, j)["error_count"] == 1)  # type: ignore[index]
        WCount.enqueue("after", conn=conn)
        wait_for(lambda: done == ["after"], what="the next job")
    assert calls == ["WRaises"]  # WQuiet.handle_error returned False
    assert any(r.msg == "error_notifier_failed" for r in caplog.records)


def json_too_deep() -> int:
    """A nesting depth that this Python's json module cannot load (with 1,000
    to spare for a thread's shallower stack) and PostgreSQL's jsonb can: 3.11
    fails at 1,000, 3.13 only at 9,999; jsonb takes about 12,000 (with the
    default max_stack_depth)."""
    for depth in range(1000, 11_001, 1000):
        try:
            json.loads("[" * depth + "]" * depth)
        except RecursionError:
            return depth + 1000
    pytest.fail("this Python loads JSON nested as deep as jsonb takes: find another payload")


def test_unknown_classes_bad_arguments_and_base_exceptions_are_job_errors(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    unknown = conveyor.enqueue(conn, "NoSuchJobClass")
    bad_args = WCount.enqueue(1, 2, 3, conn=conn)
    # Valid jsonb that this Python's json module cannot load: nested too
    # deep, and an integer longer than int() takes (4,300 digits, 3.11 on).
    too_deep = scalar(
        conn,
        "SELECT id FROM conveyor.enqueue("
        "'WCount', (repeat('[', %(d)s) || repeat(']', %(d)s))::jsonb)",
        {"d": json_too_deep()},
    )
    too_long = scalar(
        conn, "SELECT id FROM conveyor.enqueue('WCount', ('[' || repeat('9', 5000) || ']')::jsonb)"
    )
    raising = {
        kind: WRaises.enqueue(kind, conn=conn)
        for kind in ("SystemExit", "KeyboardInterrupt", "GeneratorExit")
    }
    worker = start_worker(worker_count=2)
    messages = {}
    for name, job_id in [
        ("unknown", unknown),
        ("bad_args", bad_args),
        ("too_deep", too_deep),
        ("too_long", too_long),
        *raising.items(),
    ]:
        row = wait_for(
            lambda j=job_id: (r := job_row(conn, j)) and r["error_count"] and r,
            what=name,
        )
        messages[name] = row["last_error_message"]
    assert messages["unknown"].startswith(
        "UnknownJobClassError: unknown job class 'NoSuchJobClass'"
    )
    assert messages["bad_args"].startswith("TypeError:")
    assert messages["too_deep"].startswith("RecursionError:")
    assert messages["too_long"].startswith("ValueError: Exceeds the limit (4300 digits)")
    assert messages["SystemExit"] == "SystemExit: 3"
    assert messages["KeyboardInterrupt"] == "KeyboardInterrupt: "
    assert messages["GeneratorExit"] == "GeneratorExit: "
    WCount.enqueue("still working", conn=conn)
    wait_for(lambda: "still working" in done)
    assert all(t.is_alive() for t in worker.threads)


# --- polling, NOTIFY, priorities, buffer -----------------------------------------------


def test_scheduled_jobs_run_via_the_poller(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    start_worker(worker_count=1, poll_interval=0.2)
    run_at = datetime.now(UTC) + timedelta(seconds=1)
    WCount.enqueue("scheduled", conn=conn, run_at=run_at)
    wait_for(lambda: done == ["scheduled"], timeout=5)
    assert datetime.now(UTC) >= run_at


def test_notify_starts_a_job_at_once_without_polling(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    # The poller would find a job only after 60 s; each job is waited for a
    # sixth of that, so a job that starts was started by its NOTIFY. (How
    # fast is the benchmark's to say, not a test's on a shared machine.)
    start_worker(worker_count=2, poll_interval=60)
    locker_pid(conn)
    for i in range(5):
        WBlock.enqueue("notify", i, conn=conn)
        wait_for(lambda i=i: f"notify:{i}" in started_at, timeout=10, what=f"job {i}")
        gate("notify").set()


def test_an_urgent_job_starts_while_any_workers_are_busy_with_a_backlog(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    WBlock.enqueue_many([["backlog", i] for i in range(30)], conn=conn, priority=100)
    worker = start_worker(
        worker_priorities=[10, None, None],
        maximum_buffer_size=4,
        minimum_buffer_size=1,
        poll_interval=60,
    )
    pid = locker_pid(conn)
    wait_for(lambda: len(started_at) == 2, what="both any workers busy")
    wait_for(lambda: worker.buffer.size == 4, what="a full buffer")
    WBlock.enqueue("urgent", 0, conn=conn, priority=5)
    # The backlog's jobs hold their workers until their gate opens (or 15 s
    # pass): the urgent job must start on the reserved worker before any of
    # them finishes, not after.
    wait_for(lambda: "urgent:0" in started_at, what="the urgent job")
    assert done == [], "the urgent job started only after a backlog job finished"
    assert sorted(started_at) == ["backlog:0", "backlog:1", "urgent:0"]
    # The urgent job displaced one buffered job, which was unlocked again.
    wait_for(lambda: locks_held(conn, pid) == 3 + 4, what="locks = running + buffer")
    assert worker.buffer.high_water <= 4
    gate("urgent").set()
    gate("backlog").set()
    wait_for(lambda: len(done) == 31, what="all jobs")


def test_the_buffer_never_holds_more_than_its_maximum(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    WBlock.enqueue_many([["bounded", i] for i in range(60)], conn=conn)
    worker = start_worker(worker_count=2, maximum_buffer_size=3, minimum_buffer_size=1)
    pid = locker_pid(conn)
    wait_for(lambda: len(started_at) == 2)
    # While both workers are blocked, the locker keeps polling (every 0.2 s)
    # but holds only the two running jobs and a full buffer: once the buffer
    # is full, three more polls lock nothing more.
    wait_for(lambda: locks_held(conn, pid) == 2 + 3, what="2 running + a full buffer")
    seen = []
    deadline = time.monotonic() + 3 * 0.2
    while time.monotonic() < deadline:
        seen.append(locks_held(conn, pid))
        time.sleep(0.005)
    assert set(seen) == {2 + 3}, seen
    # Draining: in memory, the buffer never held more than its maximum. (The
    # database briefly shows resolved jobs' locks until their resolution
    # commits, so it is not sampled here.)
    gate("bounded").set()
    wait_for(lambda: len(done) == 60, timeout=20)
    assert worker.buffer.high_water == 3


# --- stop, connection loss -----------------------------------------------------------


def test_stop_unlocks_buffered_jobs_at_once_and_lets_running_jobs_finish(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    WBlock.enqueue_many([["stop", i] for i in range(10)], conn=conn)
    worker = start_worker(worker_count=2, maximum_buffer_size=4)
    pid = locker_pid(conn)
    wait_for(lambda: locks_held(conn, pid) == 6, what="2 running + 4 buffered")
    stopper = threading.Thread(target=lambda: worker.stop(timeout=10))
    stopper.start()
    wait_for(lambda: locks_held(conn, pid) == 2, what="buffered jobs unlocked")
    # At once: before the two running jobs (held at their gate) finish.
    assert done == []
    assert stopper.is_alive()  # still waiting for the two running jobs
    gate("stop").set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert len(done) == 2
    assert scalar(conn, "SELECT count(*) FROM conveyor.jobs") == 8
    assert scalar(conn, "SELECT count(*) FROM conveyor.lockers") == 0


def test_the_locker_reconnects_after_its_session_is_terminated(
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., conveyor.Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="conveyor"):
        worker = start_worker(worker_count=2, poll_interval=60)
        old = locker_pid(conn)
        assert scalar(conn, "SELECT pg_terminate_backend(%s)", (old,))
        wait_for(
            lambda: scalar(conn, "SELECT max(pid) FROM conveyor.lockers") not in (None, old),
            what="a new registration",
        )
        WCount.enqueue("after reconnect", conn=conn)
        wait_for(lambda: done == ["after reconnect"], timeout=3)
    assert worker.connected
    events = [r.msg for r in caplog.records]
    assert "locker_connection_lost" in events
    assert events.count("locker_connected") >= 2


def test_the_locker_starts_a_new_session_after_a_cancelled_statement(
    conn: psycopg.Connection[Any],
    connect: Connect,
    start_worker: Callable[..., conveyor.Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An error on the locker's session that is not a lost connection (here
    a cancel, as statement_timeout would give) makes the locker close that
    session and open a new one: the old session's locks go with it, the
    locker's count of held jobs starts afresh, and every job is worked."""
    WCount.enqueue_many([[i] for i in range(3000)], conn=conn)
    canceller = connect()
    with caplog.at_level(logging.INFO, logger="conveyor"):
        start_worker(worker_count=2, maximum_buffer_size=500, poll_interval=0.05)
        old = locker_pid(conn)

        def lost() -> bool:
            return any(r.msg == "locker_connection_lost" for r in caplog.records)

        deadline = time.monotonic() + 20
        while not lost() and time.monotonic() < deadline:
            canceller.execute(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
                " WHERE pid = %s AND state = 'active'",
                (old,),
            )
        assert lost(), "no cancel landed in a locker statement"
        wait_for(
            lambda: (
                scalar(conn, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (old,)) == 0
            ),
            what="the old session closed",
        )
        assert locks_held(conn, old) == 0
        wait_for(lambda: scalar(conn, "SELECT count(*) FROM conveyor.jobs") == 0, timeout=60)
    assert set(done) == set(range(3000))
    [first] = [r for r in caplog.records if r.msg == "locker_connection_lost"][:1]
    assert first.conveyor["error"].startswith("canceling statement")  # type: ignore[attr-defined]


def test_an_unreachable_database_is_retried_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = set(threading.enumerate())
    worker = conveyor.Worker(
        "postgresql://nobody@127.0.0.1:1/nowhere?connect_timeout=1", worker_count=1
    )
    with caplog.at_level(logging.ERROR, logger="conveyor"):
        worker.start()
        wait_for(
            lambda: [r for r in caplog.records if r.msg == "database_unreachable"][1:],
            what="two connection attempts",
        )
    assert not worker.connected and worker.fatal_error is None
    assert worker.stop(timeout=1)
    assert set(threading.enumerate()) - before == set()


def test_a_database_without_the_schema_is_a_clear_error(
    schemaless_db_url: str,
) -> None:
    url = schemaless_db_url
    before = set(threading.enumerate())
    with pytest.raises(conveyor.SchemaError, match="conveyor migrate"):
        conveyor.Worker(url, worker_count=1).start()
    assert set(threading.enumerate()) - before == set()


# --- middleware, logging ----------------------------------------------------------------


def test_job_and_sql_middleware_wrap_jobs_and_statements(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    jobs_seen: list[Any] = []
    statements: list[str] = []

    def job_middleware(job: conveyor.Job, proceed: Callable[[], None]) -> None:
        jobs_seen.append(("before", job.id))
        proceed()
        jobs_seen.append(("after", job.id))

    def sql_middleware(query: str, params: Any, proceed: Callable[[], Any]) -> Any:
        statements.append(query.split("(", 1)[0])
        return proceed()

    job_id = WCount.enqueue("mw", conn=conn)
    worker = start_worker(
        worker_count=1, job_middleware=[job_middleware], sql_middleware=[sql_middleware]
    )
    wait_for(lambda: done == ["mw"])
    wait_for(lambda: job_row(conn, job_id) is None)
    worker.stop()
    assert jobs_seen == [("before", job_id), ("after", job_id)]
    joined = " ".join(statements)
    for name in ("register_locker", "lock_jobs", "destroy_jobs", "unregister_locker"):
        assert name in joined, (name, statements)


def test_job_worked_is_logged_at_the_jobs_level(
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., conveyor.Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    WLogged.enqueue("info", conn=conn)
    WLogged.enqueue(None, conn=conn)
    WCount.enqueue(1, conn=conn)
    with caplog.at_level(logging.INFO, logger="conveyor"):
        start_worker(worker_count=1)
        wait_for(lambda: scalar(conn, "SELECT count(*) FROM conveyor.jobs") == 0)
    worked = [r for r in caplog.records if r.msg == "job_worked"]
    # WCount logs at DEBUG (hidden at INFO), WLogged(None) not at all.
    assert len(worked) == 1
    assert worked[0].levelno == logging.INFO
    assert worked[0].conveyor["job_class"] == "WLogged"  # type: ignore[attr-defined]


def test_json_lines_and_a_formatter_that_drops_lines() -> None:
    import io

    stream = io.StringIO()
    handler = JSONHandler(
        stream,
        line_formatter=lambda d: None if d["event"] == "drop" else f"{d['event']}:{d['job_id']}",
    )
    logger = logging.getLogger("conveyor.test_json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("drop", extra={"conveyor": {"job_id": 1}})
        logger.info("keep", extra={"conveyor": {"job_id": 2}})
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "keep:2\n"
    record = logging.LogRecord("conveyor", logging.INFO, __file__, 1, "job_worked", None, None)
    record.conveyor = {"job_id": 3, "elapsed": 0.5}
    data = json.loads(JSONFormatter().format(record))
    assert data["lib"] == "conveyor" and data["event"] == "job_worked"
    assert {"hostname", "pid", "thread", "time", "level"} <= set(data)
    assert (data["job_id"], data["elapsed"]) == (3, 0.5)


# --- units: priorities, buffer, poller ---------------------------------------------------


def test_worker_priorities_follow_ques_rule() -> None:
    assert worker_priorities(None, None) == [10, 30, 50, None, None, None]
    assert worker_priorities(None, 3) == [None, None, None]
    assert worker_priorities([20, 30, 40], 6) == [20, 30, 40, None, None, None]
    assert worker_priorities([20, 30, 40, None], 2) == [20, 30]
    assert parse_worker_priorities("10, 30,any,ANY") == [10, 30, None, None]
    with pytest.raises(ValueError, match="invalid worker priority"):
        parse_worker_priorities("10,high")
    with pytest.raises(ValueError):
        worker_priorities(None, 0)


def _row(priority: int, job_id: int) -> Any:
    return LockedJob(
        priority,
        datetime(2024, 1, 1, tzinfo=UTC),
        job_id,
        "X",
        "default",
        "[]",
        "{}",
        0,
        15,
    )


def test_buffer_orders_evicts_and_respects_ceilings() -> None:
    wakes: list[int] = []
    buffer = JobBuffer(
        minimum_size=1,
        maximum_size=3,
        ceilings=[10, None],
        wake=lambda: wakes.append(1),
    )
    evicted = buffer.push(sorted([_row(50, 1), _row(20, 2), _row(100, 3), _row(5, 4)]))
    assert [r[2] for r in evicted] == [3]  # the least urgent does not fit
    # full: only a more urgent one
    assert buffer.accept([AnnouncedJob(200, 9), AnnouncedJob(1, 8)]) == ([8], 1)
    reserved = buffer.waiter(10)
    anyone = buffer.waiter(None)
    assert buffer.take(reserved)[2] == 4  # type: ignore[index]  # priority 5 <= 10
    assert buffer.take(anyone)[2] == 2  # type: ignore[index]
    assert buffer.demand() == {None: 2}
    # The reserved worker may not take priority 50: it waits, and a push of an
    # urgent job is handed straight to it.
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(buffer.take(reserved)))
    thread.start()
    wait_for(lambda: buffer.idle == 1)
    assert buffer.demand() == {10: 1, None: 2}
    assert buffer.push([_row(7, 5)]) == []
    thread.join(2)
    assert got[0][2] == 5 and buffer.size == 1
    assert [r[2] for r in buffer.stop()] == [1]
    assert buffer.take(anyone) is None


def test_poller_polls_on_interval_and_while_satisfied() -> None:
    poller = Poller(poll_interval=5)
    requests, full = poller.plan({10: 1, None: 8}, low=True, now=100.0)
    assert full and requests == [(1, 10), (8, None)]
    poller.polled(requests, [0, 8], full, 100.0)  # satisfied: got all 8
    assert poller.plan({None: 3}, low=True, now=101.0) == ([(3, None)], False)
    poller.polled([(3, None)], [1], False, 101.0)  # short: the queue is drained
    assert poller.plan({None: 3}, low=True, now=102.0) == ([], False)
    poller.hint()
    assert poller.plan({None: 3}, low=True, now=102.0) == ([(3, None)], False)
    assert poller.plan({None: 3}, low=False, now=103.0) == ([], False)
    assert poller.plan({None: 3}, low=False, now=105.0)[1] is True
    assert poller.timeout(103.0) == 2.0


def test_a_reserved_workers_empty_poll_does_not_mark_the_queue_drained() -> None:
    """Only the reserved worker is idle and no urgent job exists: its poll
    comes back empty. The backlog is still there, so when the buffer runs low
    the locker must poll for it, not wait for the next interval (the stall
    that made an urgent-job test time out)."""
    poller = Poller(poll_interval=60)
    requests, full = poller.plan({10: 1, None: 6}, low=True, now=100.0)
    poller.polled(requests, [0, 6], full, 100.0)
    requests, full = poller.plan({10: 1}, low=False, now=101.0, topping_up=True)
    assert requests == [(1, 10)] and not full
    poller.polled(requests, [0], full, 101.0)
    assert poller.plan({None: 3}, low=True, now=102.0) == ([(3, None)], False)
    # A worker whose widest ceiling is a number: that level decides.
    capped = Poller(poll_interval=60, widest=100)
    requests, full = capped.plan({10: 1, 100: 4}, low=True, now=100.0)
    assert full and requests == [(1, 10), (4, 100)]
    capped.polled(requests, [0, 2], full, 100.0)  # short at the widest level
    assert capped.plan({100: 3}, low=True, now=101.0) == ([], False)
    capped.hint()
    capped.polled([(1, 10)], [0], False, 102.0)  # a reserved poll changes nothing
    assert capped.plan({100: 3}, low=True, now=103.0) == ([(3, 100)], False)
