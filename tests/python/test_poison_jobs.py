"""Poison jobs: a worker keeps working the other jobs whatever one job does.

Each case runs a real `conveyor worker` subprocess on jobs from
jobs_for_tests/poison_jobs.py, enqueues the poison next to well-behaved
``Good`` jobs, and checks:

- the poison job's error is recorded (error_count, last_error_message,
  last_error_backtrace) and the retry policy applies (retried after the
  class's retry_interval or the SQL backoff, expired past
  maximum_retry_count);
- the worker stays up: no critical log line, no crashed thread, no traceback;
- the job pool stays healthy: the good jobs finish, and the worker holds no
  more connections than its locker and pool;
- nothing stays locked.
"""

from __future__ import annotations

import functools
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import db_support
import psycopg
import pytest
from chaos_support import WorkerProcess, critical_events
from db_support import locks_held, wait_for

pytestmark = pytest.mark.slow

MODULE = "jobs_for_tests.poison_jobs"
GOOD_JOBS = 20
POOL = 2  # worker threads, and so the size of the worker's job pool
FAST = ["-w", str(POOL), "-i", "0.1", "--wait-period", "10", "--shutdown-timeout", "2"]


@pytest.fixture
def db(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    conn.execute(
        "CREATE TABLE public.poison_effects (id bigserial PRIMARY KEY, job_id bigint, tag text,"
        " worker_pid int, at timestamptz NOT NULL DEFAULT clock_timestamp())"
    )
    return conn


Start = Callable[..., WorkerProcess]


@pytest.fixture
def start(db_url: str, tmp_path: Path, workers: list[WorkerProcess]) -> Start:
    """``start(*args, name=...)``: a worker on MODULE with the FAST options
    (``args`` come after them, so they win), reaped at teardown."""

    def _start(*args: str, name: str = "poison") -> WorkerProcess:
        worker = WorkerProcess(
            db_url, [MODULE], name=f"{name}-{len(workers)}", log_dir=tmp_path, args=[*FAST, *args]
        )
        workers.append(worker)
        return worker

    return _start


# Every job here may be retried twice (three runs) unless a test says otherwise.
enqueue = functools.partial(db_support.enqueue, maximum_retry_count=2)


def enqueue_good(conn: psycopg.Connection[Any], n: int = GOOD_JOBS) -> list[int]:
    return [enqueue(conn, "Good", [f"good {i}"]) for i in range(n)]


def good_done(conn: psycopg.Connection[Any], ids: list[int]) -> bool:
    row = conn.execute(
        "SELECT count(DISTINCT job_id) = %s AND NOT EXISTS"
        " (SELECT FROM conveyor.jobs WHERE id = ANY(%s))"
        " FROM poison_effects WHERE job_id = ANY(%s)",
        [len(ids), ids, ids],
    ).fetchone()
    return bool(row and row[0])


def job(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any] | None:
    cursor = conn.execute(
        "SELECT id, job_class, error_count, last_error_message, last_error_backtrace,"
        " run_at - now() AS due_in, expired_at, finished_at FROM conveyor.jobs WHERE id = %s",
        [job_id],
    )
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([c.name for c in cursor.description or []], row, strict=True))


def expired(conn: psycopg.Connection[Any], job_id: int) -> bool:
    found = job(conn, job_id)
    return bool(found and found["expired_at"] is not None)


def attempts(conn: psycopg.Connection[Any], job_id: int) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT tag FROM poison_effects WHERE job_id = %s ORDER BY id", [job_id]
        ).fetchall()
    ]


def connections_of(conn: psycopg.Connection[Any], worker: WorkerProcess) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [worker.name]
    ).fetchone()
    return int(row[0]) if row else -1


def assert_healthy(conn: psycopg.Connection[Any], worker: WorkerProcess) -> None:
    """The worker is up, unharmed, within its connections, and holds no lock."""
    assert worker.alive(), f"the worker died:\n{worker.stderr()}"
    harmed = [
        e
        for e in worker.events()
        if e.get("event") == "job_errored" and e.get("job_class") == "Good"
    ]
    assert harmed == [], "a good job failed because of the poison"
    assert critical_events(worker.events()) == []
    assert "Traceback" not in worker.stderr()
    assert connections_of(conn, worker) <= 1 + POOL, (
        "the worker holds more connections than it should"
    )
    # Nothing stays locked (unlocks are flushed in batches: waited for).
    wait_for(lambda: locks_held(conn) == 0, what="every job lock to be released")


def assert_recorded_and_expired(
    conn: psycopg.Connection[Any], job_id: int, message: str, tries: int = 3
) -> None:
    """maximum_retry_count 2: three errors, the third expires the job."""
    found = job(conn, job_id)
    assert found is not None, f"job {job_id} is gone: its error was not treated as an error"
    assert found["error_count"] == tries, found
    assert found["expired_at"] is not None, found
    assert message in (found["last_error_message"] or ""), found["last_error_message"]
    assert found["last_error_backtrace"], "no backtrace recorded"


# -- unknown classes and arguments that do not fit ---------------------------------------------


def test_unknown_classes_and_arguments_that_do_not_fit(
    db: psycopg.Connection[Any], start: Start
) -> None:
    cases = {
        enqueue(db, "NoSuchJob"): "unknown job class 'NoSuchJob'",
        enqueue(db, "no_such_module.NoSuchJob"): "unknown job class",
        enqueue(db, f"{MODULE}.NoSuchAttribute"): "unknown job class",
        enqueue(db, f"{MODULE}.not_a_job_class"): "not a conveyor.Job",
        enqueue(db, "TwoArgs", [1]): "TypeError",
        enqueue(db, "TwoArgs", [1, 2, 3]): "TypeError",
        enqueue(db, "TwoArgs", [1, 2], data={"kwargs": {"c": 1}}): "TypeError",
        enqueue(db, "TwoArgs", [1, 2], data={"kwargs": "not a mapping"}): "TypeError",
        enqueue(db, "NoRun"): "NotImplementedError",
    }
    # With the SQL backoff (no retry_interval: the class is unknown): one
    # error, then scheduled error_count^4 + 3 = 4 s later.
    backoff = enqueue(db, "AlsoNoSuchJob", maximum_retry_count=5)
    good = enqueue_good(db)
    worker = start()

    wait_for(lambda: good_done(db, good), what="the good jobs", timeout=15)
    retried_fast = [
        i for i, m in cases.items() if not m.startswith("unknown") and "not a conveyor" not in m
    ]
    unknown = [i for i in cases if i not in retried_fast]
    wait_for(
        lambda: all(expired(db, i) for i in retried_fast),
        what="fast-retrying jobs to expire",
        timeout=15,
    )
    for job_id in retried_fast:
        assert_recorded_and_expired(db, job_id, cases[job_id])
        assert attempts(db, job_id) == [], "run() must not have been entered"
    wait_for(
        lambda: all((job(db, i) or {}).get("error_count") for i in [*unknown, backoff]),
        what="unknown classes to be recorded",
        timeout=15,
    )
    for job_id in [*unknown, backoff]:
        found = job(db, job_id)
        assert found is not None
        assert found["error_count"] == 1
        assert cases.get(job_id, "unknown job class") in found["last_error_message"]
        assert found["expired_at"] is None
        # The SQL backoff: 1^4 + 3 = 4 seconds after the error.
        assert 0 < found["due_in"].total_seconds() <= 4.0, found["due_in"]
    logged = {e.get("job_id") for e in worker.events() if e.get("event") == "job_errored"}
    assert set(cases) | {backoff} <= logged, "every error is logged as job_errored"
    assert_healthy(db, worker)


# -- jobs that raise ---------------------------------------------------------------------------

PLAIN_ERRORS = {
    "ValueError": "ValueError: plain error",
    "SystemExit": "SystemExit: 3",
    "KeyboardInterrupt": "KeyboardInterrupt: interrupted by the job",
    "GeneratorExit": "GeneratorExit: generator exit from the job",
    "BaseException": "MyBase: a BaseException subclass",
    "MemoryError": "MemoryError: pretend out of memory",
    "RecursionError": "RecursionError",
    "sys.exit": "SystemExit: exit message",
    "ExceptionGroup": "ExceptionGroup: group",
    "NoneMessage": "ValueError",
}


def test_jobs_raising_anything_including_systemexit_and_keyboardinterrupt(
    db: psycopg.Connection[Any], start: Start
) -> None:
    cases = {enqueue(db, "Raises", [kind]): message for kind, message in PLAIN_ERRORS.items()}
    handler = enqueue(db, "RaisingHandler")
    log_level = enqueue(db, "RaisingLogLevel")
    good = enqueue_good(db)
    worker = start()

    wait_for(lambda: good_done(db, good), what="the good jobs", timeout=15)
    wait_for(
        lambda: all(expired(db, i) for i in [*cases, handler]),
        what="raising jobs to expire",
        timeout=15,
    )
    for job_id, message in cases.items():
        assert_recorded_and_expired(db, job_id, message)
        assert len(attempts(db, job_id)) == 3, "retried twice after the first error"
    # handle_error raised: logged, and the job retried all the same.
    assert_recorded_and_expired(db, handler, "ValueError: run failed")
    assert any(e.get("event") == "handle_error_failed" for e in worker.events())
    # log_level raised after the job worked: the job is done, not retried.
    wait_for(
        lambda: job(db, log_level) is None, what="the job whose log_level raises to be destroyed"
    )
    assert attempts(db, log_level) == ["log_level raises"]
    assert_healthy(db, worker)


ODD_ERRORS = {
    # kind: what the recorded message must contain
    "StrRaises": "StrRaises",
    "ReprRaises": "ReprRaises",
    "NulMessage": "in the message",
    "SurrogateMessage": "surrogate",
    "HugeMessage": "ValueError: xxxx",
}


@pytest.mark.parametrize("kind", list(ODD_ERRORS))
def test_errors_that_are_hard_to_record(
    db: psycopg.Connection[Any],
    start: Start,
    kind: str,
) -> None:
    """Exceptions whose __str__ raises, or whose message PostgreSQL text
    cannot hold (NUL, a lone surrogate) or is huge: still recorded."""
    poison = enqueue(db, "Raises", [kind])
    good = enqueue_good(db)
    worker = start()
    wait_for(lambda: good_done(db, good), what="the good jobs", timeout=15)
    wait_for(lambda: expired(db, poison), what=f"the {kind} job to expire", timeout=15)
    assert_recorded_and_expired(db, poison, ODD_ERRORS[kind])
    found = job(db, poison)
    assert found is not None and len(found["last_error_message"]) <= 1000
    assert len(attempts(db, poison)) == 3
    assert_healthy(db, worker)


# -- return values ------------------------------------------------------------------------------


def test_return_values_that_cannot_be_serialised(db: psycopg.Connection[Any], start: Start) -> None:
    kinds = ["object", "generator", "lambda", "self", "socket", "nan"]
    ids = [enqueue(db, "ReturnsUnserialisable", [kind]) for kind in kinds]
    good = enqueue_good(db)
    worker = start("--log-level", "debug")
    wait_for(lambda: good_done(db, [*good, *ids]), what="all jobs", timeout=15)
    for job_id, kind in zip(ids, kinds, strict=True):
        assert attempts(db, job_id) == [f"returns {kind}"], "worked once, not retried"
    worked = {e.get("job_id") for e in worker.events() if e.get("event") == "job_worked"}
    assert set(ids) <= worked
    assert_healthy(db, worker)


# -- a job that sleeps through the shutdown ----------------------------------------------------


def test_job_sleeping_far_beyond_the_shutdown_timeout(
    db: psycopg.Connection[Any], start: Start
) -> None:
    sleeper = enqueue(db, "Sleeper", [600])
    first = start("--shutdown-timeout", "1")
    wait_for(lambda: attempts(db, sleeper) == ["started"], what="the sleeper to start")
    good = enqueue_good(db)
    wait_for(lambda: good_done(db, good), what="the good jobs, next to the sleeper", timeout=15)

    signalled = time.monotonic()
    first.signal(signal.SIGTERM)
    status = first.wait(timeout=15)
    took = time.monotonic() - signalled
    assert took < 1 + 5, f"the worker took {took:.1f} s to exit with a 1 s shutdown timeout"
    assert status in (0, 1), f"exit status {status}:\n{first.stderr()}"
    assert "Traceback" not in first.stderr()
    assert critical_events(first.events()) == []
    # The abandoned job is not an error, and not locked: it is ready to run again.
    found = job(db, sleeper)
    assert found is not None and found["error_count"] == 0
    assert locks_held(db) == 0
    assert db.execute("SELECT count(*) FROM conveyor.lockers").fetchone() == (0,)

    second = start()
    wait_for(
        lambda: job(db, sleeper) is None, what="another worker to run the sleeper again", timeout=15
    )
    assert attempts(db, sleeper) == ["started", "started", "finished"]
    assert_healthy(db, second)


# -- transactions and connections the job borrowed ---------------------------------------------

# kind -> (does the job end in an error?, message of the error)
CONNECTION_ABUSE = {
    "open in block": (False, ""),
    "aborted in block": (True, ""),
    "open escaped": (True, ""),
    "aborted escaped": (True, ""),
    "closes": (True, ""),
    "terminates its backend": (True, "terminat"),
    "shuts its socket": (True, ""),
    "breaks it for the next job": (False, ""),
}


@pytest.mark.parametrize("kind", list(CONNECTION_ABUSE))
def test_job_that_abuses_its_borrowed_connection(
    db: psycopg.Connection[Any],
    start: Start,
    kind: str,
) -> None:
    """More abusive jobs than the pool has connections, then good jobs: the
    good ones finish, the abusive ones are recorded as errors (a transaction
    left aborted or open is not work done), and the pool is not exhausted."""
    errs, message = CONNECTION_ABUSE[kind]
    poison = [enqueue(db, "ConnectionAbuse", [kind]) for _ in range(POOL + 1)]
    worker = start()
    if errs:
        wait_for(
            lambda: all(expired(db, i) for i in poison), what=f"'{kind}' jobs to expire", timeout=15
        )
    else:
        wait_for(
            lambda: all(job(db, i) is None for i in poison),
            what=f"'{kind}' jobs to finish",
            timeout=15,
        )
    good = enqueue_good(db)
    wait_for(lambda: good_done(db, good), what="the good jobs after the abuse", timeout=15)
    for job_id in poison:
        if errs:
            assert_recorded_and_expired(db, job_id, message)
            assert attempts(db, job_id) == [], "the write of a job that errored must not commit"
        else:
            assert attempts(db, job_id) == [f"{kind} attempt 1"], "its write committed once"
    assert_healthy(db, worker)
    # Nothing the abusive jobs opened stays open on the server.
    idle_in_tx = db.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        " AND state LIKE 'idle in transaction%%'",
        [worker.name],
    ).fetchone()
    assert idle_in_tx == (0,)


@pytest.mark.parametrize("kind", ["autocommit", "session settings"])
def test_session_state_a_job_leaves_does_not_reach_the_next_job(
    db: psycopg.Connection[Any],
    start: Start,
    kind: str,
) -> None:
    """With one worker thread (a pool of one connection), a job that turns on
    autocommit, sets read-only, a statement timeout, a search_path, takes a
    session advisory lock or LISTENs must not hand that connection on as is."""
    abuser = enqueue(db, "ConnectionAbuse", [kind])
    probes = [enqueue(db, "Probe") for _ in range(3)]
    worker = start("-w", "1", name="probe")  # one thread: a pool of one connection
    wait_for(
        lambda: job(db, abuser) is None and len(attempts(db, abuser)) == 1,
        what="the abusive job to run",
    )
    wait_for(lambda: all(attempts(db, p) for p in probes), what="the probes to run", timeout=15)
    clean = 'probe off | 0 | "$user", public | 0 | 0 | autocommit=False'
    seen = {p: attempts(db, p) for p in probes}
    assert seen == {p: [clean] for p in probes}
    assert worker.alive()
