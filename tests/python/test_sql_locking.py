"""Advisory-lock semantics of the SQL core, with real concurrent sessions.

conveyor's locks are session-level advisory locks (docs/reference/protocol.md,
"Advisory-lock keys"). These tests hold the contract of lock_jobs,
lock_jobs_by_id, the resolution functions and unlock_jobs against the
pitfalls listed in DESIGN.md: locks belong to sessions, resolutions must
commit before a lock is released, stale snapshots, re-entrant locks.

Which jobs a session holds is read from pg_locks directly (`db_support.locks_of`), not
through conveyor.held_job_ids(), so that the code under test does not check
itself.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from db_support import (
    all_job_locks,
    backend_alive,
    enqueue,
    enqueue_many,
    locks_of,
    wait_for,
)

Connect = Callable[..., psycopg.Connection[Any]]

# A single-bigint advisory key the stale-snapshot tests use as a gate; it
# cannot collide with conveyor's two-key job locks.
GATE_KEY = 4242


# --- helpers ----------------------------------------------------------------


def lock(
    conn: psycopg.Connection[Any],
    queues: Iterable[str] = ("default",),
    max_jobs: int = 1,
    max_priority: int | None = None,
) -> list[int]:
    rows = conn.execute(
        "SELECT id FROM conveyor.lock_jobs(queues => %s, max_jobs => %s, max_priority => %s)",
        [list(queues), max_jobs, max_priority],
    ).fetchall()
    return [int(r[0]) for r in rows]


def lock_by_id(conn: psycopg.Connection[Any], ids: Iterable[int]) -> list[int]:
    rows = conn.execute(
        "SELECT id FROM conveyor.lock_jobs_by_id(%s::bigint[])", [list(ids)]
    ).fetchall()
    return [int(r[0]) for r in rows]


def unlock(conn: psycopg.Connection[Any], ids: Iterable[int]) -> list[int]:
    rows = conn.execute("SELECT conveyor.unlock_jobs(%s::bigint[])", [list(ids)]).fetchall()
    return sorted(int(r[0]) for r in rows)


def held(conn: psycopg.Connection[Any]) -> set[int]:
    """conveyor.held_job_ids() of the session `conn`."""
    row = conn.execute("SELECT conveyor.held_job_ids()").fetchone()
    assert row is not None
    return set(row[0])


def resolve(conn: psycopg.Connection[Any], how: str, job: int) -> None:
    """Resolve `job` on `conn` the way a worker or job code would."""
    if how == "retry":
        rows = conn.execute(
            "SELECT id FROM conveyor.retry_job(%s, 'boom', delay => 3600)", [job]
        ).fetchall()
        assert rows == [(job,)]
    else:
        row = conn.execute(f"SELECT conveyor.{how}_job(%s)", [job]).fetchone()
        assert row == (True,)


# --- a lock belongs to the session that took it ------------------------------


def test_job_locked_by_one_session_is_skipped_by_another(connect: Connect) -> None:
    a, b = connect(), connect()
    first = enqueue(a, priority=10)
    second = enqueue(a, priority=20)

    assert lock(a, max_jobs=1) == [first]
    assert lock(b, max_jobs=10) == [second]
    assert lock_by_id(b, [first]) == []
    assert lock_by_id(a, [second]) == []

    assert locks_of(b, a.info.backend_pid) == {first}
    assert locks_of(a, b.info.backend_pid) == {second}
    assert held(a) == {first}
    assert held(b) == {second}


def test_disconnect_frees_the_jobs_at_once(connect: Connect) -> None:
    a, b = connect(), connect()
    jobs = enqueue_many(b, 3)
    assert sorted(lock(a, max_jobs=10)) == jobs
    assert lock(b, max_jobs=10) == []
    assert lock_by_id(b, jobs) == []

    pid = a.info.backend_pid
    a.close()
    # The backend releases its locks before it leaves pg_stat_activity, so
    # once it is gone the very first try must succeed: no lease, no heartbeat.
    wait_for(lambda: not backend_alive(b, pid), what="the closed session's backend to exit")
    assert sorted(lock(b, max_jobs=10)) == jobs


def test_terminated_backend_frees_the_jobs_at_once(connect: Connect) -> None:
    a, b, admin = connect(), connect(), connect()
    job = enqueue(b)
    assert lock_by_id(a, [job]) == [job]
    assert lock_by_id(b, [job]) == []

    # The two-argument form waits (up to 5 s) until the backend has exited.
    row = admin.execute("SELECT pg_terminate_backend(%s, 5000)", [a.info.backend_pid]).fetchone()
    assert row == (True,)
    assert lock_by_id(b, [job]) == [job]
    assert held(b) == {job}
    with pytest.raises(psycopg.OperationalError):
        a.execute("SELECT 1")


def test_unlock_jobs_from_another_session_does_not_release_the_lock(connect: Connect) -> None:
    a, b = connect(), connect()
    job = enqueue(a)
    assert lock(a) == [job]

    assert unlock(b, [job]) == []
    assert locks_of(b, a.info.backend_pid) == {job}
    assert lock_by_id(b, [job]) == []
    assert lock(b, max_jobs=10) == []

    assert unlock(a, [job]) == [job]
    assert locks_of(b, a.info.backend_pid) == set()
    assert lock_by_id(b, [job]) == [job]


def test_a_wrong_held_claim_neither_waits_nor_releases_another_sessions_lock(
    connect: Connect,
) -> None:
    """`held` is the caller's word that its session holds those jobs; a wrong
    word about a job another session holds must not block on that lock nor
    take it away."""
    a, b = connect(), connect(autocommit=False)  # b rolls each call back
    job = enqueue(a)
    assert lock(a) == [job]
    b.execute("SET lock_timeout = '2s'")  # a wait would fail the test, not hang it
    b.commit()
    for function in ("unlock_jobs", "destroy_jobs", "finish_jobs", "expire_jobs"):
        released = b.execute(
            f"SELECT conveyor.{function}(%s::bigint[], held => %s::bigint[])", [[job], [job]]
        ).fetchall()
        if function == "unlock_jobs":
            assert released == []
        b.rollback()
        assert locks_of(b, a.info.backend_pid) == {job}, function
    # And a's own claim releases it.
    released = a.execute(
        "SELECT conveyor.unlock_jobs(%s::bigint[], held => %s::bigint[])", [[job], [job]]
    ).fetchall()
    assert released == [(job,)]
    assert locks_of(b, a.info.backend_pid) == set()


def test_rolled_back_transaction_keeps_its_session_locks(connect: Connect) -> None:
    # A session-level lock outlives the transaction that took it: error paths
    # must unlock explicitly.
    a, b = connect(), connect()
    job = enqueue(a)
    with a.transaction(force_rollback=True):
        assert lock(a) == [job]
    assert locks_of(b, a.info.backend_pid) == {job}
    assert lock(b) == []
    assert unlock(a, [job]) == [job]
    assert lock(b) == [job]


# --- locks are not double-taken ----------------------------------------------


def test_repeated_locking_never_takes_a_held_job_twice(connect: Connect) -> None:
    a, b = connect(), connect()
    jobs = enqueue_many(a, 10)

    first = lock(a, max_jobs=4)
    second = lock(a, max_jobs=4)
    assert len(first) == 4
    assert len(second) == 4
    assert not set(first) & set(second)
    # Asking again, by id, for jobs the session holds returns nothing ...
    assert lock_by_id(a, first + second) == []
    # ... and all three calls took each lock once: pg_locks shows them ...
    assert locks_of(b, a.info.backend_pid) == set(first + second)

    # ... and one unlock_jobs frees every one of them (a re-entrant second
    # lock would survive it).
    assert unlock(a, first + second) == sorted(first + second)
    assert locks_of(b, a.info.backend_pid) == set()
    assert sorted(lock(b, max_jobs=10)) == jobs


def test_a_pipeline_given_held_never_takes_a_job_twice(connect: Connect) -> None:
    """The locker's cycle: announced jobs locked by id, then polls at two
    ceilings, sent in one pipeline (one transaction) with the held list it had
    before any of them ran. No job may come back twice: a second, re-entrant
    lock would survive the one unlock the job gets."""
    a, b = connect(), connect()
    urgent = [enqueue(a, priority=5) for _ in range(3)]
    rest = enqueue_many(a, 5)
    announced = [urgent[1], rest[2]]
    with a.pipeline():
        by_id = a.execute(
            "SELECT id FROM conveyor.lock_jobs_by_id(%s::bigint[], '{default}', %s::bigint[])",
            [announced, []],
        )
        reserved = a.execute(
            "SELECT id FROM conveyor.lock_jobs('{default}', 10, 10, %s::bigint[])", [[]]
        )
        widest = a.execute(
            "SELECT id FROM conveyor.lock_jobs('{default}', 10, NULL, %s::bigint[])", [[]]
        )
    got = [int(r[0]) for cursor in (by_id, reserved, widest) for r in cursor.fetchall()]
    assert sorted(got) == sorted(urgent + rest), "every job once, none twice"
    assert locks_of(b, a.info.backend_pid) == set(urgent + rest)
    # The memory ends with the transaction: the next one trusts held alone.
    row = a.execute("SELECT conveyor.locked_in_transaction()").fetchone()
    assert row == ([],)
    assert unlock(a, got) == sorted(got)
    assert locks_of(b, a.info.backend_pid) == set(), "one unlock each freed them all"


@pytest.mark.parametrize(
    "queues", [("a", "b"), ("b", "a"), ("a", "a"), ("b", "a", "a", "b")], ids=",".join
)
def test_lock_jobs_over_several_queues_locks_only_what_it_returns(
    connect: Connect, queues: tuple[str, ...]
) -> None:
    a, b = connect(), connect()
    a5 = enqueue(a, queue="a", priority=5)
    b5 = enqueue(a, queue="b", priority=5)
    a7 = enqueue(a, queue="a", priority=7)
    b6 = enqueue(a, queue="b", priority=6)
    enqueue(a, queue="c", priority=1)
    wanted = [a5, b5, b6, a7] if "b" in queues else [a5, a7]

    # Most urgent first across the queues; exactly the jobs returned are
    # locked, although a call may lock a candidate per queue on the way.
    got = lock(a, queues=queues, max_jobs=1)
    assert got == wanted[:1]
    assert locks_of(b, a.info.backend_pid) == set(got)
    more = lock(a, queues=queues, max_jobs=2)
    assert more == wanted[1:3]
    assert locks_of(b, a.info.backend_pid) == set(got + more)
    rest = lock(a, queues=queues, max_jobs=10)
    assert got + more + rest == wanted
    assert locks_of(b, a.info.backend_pid) == set(wanted)

    assert unlock(a, wanted) == sorted(wanted)
    assert locks_of(b, a.info.backend_pid) == set()


def test_application_advisory_locks_and_job_locks_do_not_mix(connect: Connect) -> None:
    """conveyor's two-key locks (key1 = 1129270870 for small ids) do not meet
    an application's single-bigint locks or two-key locks with another key1."""
    app, worker, observer = connect(), connect(), connect()
    job = enqueue(worker)
    # Shared, so that both sessions can hold the same application keys.
    for conn, key1 in ((app, 1), (worker, 7)):
        conn.execute(
            "SELECT pg_advisory_lock_shared(%s::bigint), pg_advisory_lock_shared(%s, %s)",
            [job, key1, job],
        )

    assert held(app) == set()
    assert held(worker) == set()
    assert lock(worker) == [job]
    assert held(worker) == {job}
    assert unlock(app, [job]) == []
    assert unlock(worker, [job]) == [job]
    # The application's own locks are still there, in both sessions.
    rows = observer.execute(
        "SELECT pid, classid, objid, objsubid FROM pg_locks WHERE locktype = 'advisory' "
        "AND granted AND pid = ANY (%s)",
        [[app.info.backend_pid, worker.info.backend_pid]],
    ).fetchall()
    expected = {
        (app.info.backend_pid, 0, job, 1),
        (app.info.backend_pid, 1, job, 2),
        (worker.info.backend_pid, 0, job, 1),
        (worker.info.backend_pid, 7, job, 2),
    }
    assert set(rows) == expected


def test_lock_keys_of_ids_beyond_32_bits(connect: Connect) -> None:
    a, b = connect(), connect()
    # Ids around 2^31 and 2^32, where the low 32 bits change sign as an
    # integer and key1 changes.
    a.execute("ALTER TABLE conveyor.jobs ALTER COLUMN id RESTART WITH 2147483646")
    low = enqueue_many(a, 4)
    a.execute("ALTER TABLE conveyor.jobs ALTER COLUMN id RESTART WITH 4294967294")
    high = enqueue_many(a, 4)
    jobs = low + high
    assert jobs == [*range(2147483646, 2147483650), *range(4294967294, 4294967298)]

    assert lock(a, max_jobs=100) == jobs
    assert locks_of(b, a.info.backend_pid) == set(jobs)
    assert held(a) == set(jobs)
    assert lock(b, max_jobs=100) == []
    assert lock_by_id(b, jobs) == []
    assert lock_by_id(a, jobs) == []

    assert unlock(a, jobs) == jobs
    assert locks_of(b, a.info.backend_pid) == set()
    assert sorted(lock_by_id(b, jobs)) == jobs


# --- concurrent lockers --------------------------------------------------------


@pytest.mark.parametrize("resolution", ["hold", "destroy", "finish"])
def test_concurrent_lockers_never_get_the_same_job(connect: Connect, resolution: str) -> None:
    """Two sessions lock batches from ~2,000 jobs at the same time, either
    keeping them or resolving each batch at once (which races the other
    session's snapshot): every job is handed out exactly once."""
    setup = connect()
    jobs = set(enqueue_many(setup, 2000))
    sessions = [connect(), connect()]
    start = threading.Barrier(len(sessions))

    # Sessions that keep their jobs make every later lock_jobs call step over
    # all the jobs held so far, so they take bigger batches.
    largest = 40 if resolution == "hold" else 8

    def unresolved(conn: psycopg.Connection[Any]) -> bool:
        row = conn.execute(
            "SELECT EXISTS (SELECT FROM conveyor.jobs WHERE finished_at IS NULL)"
        ).fetchone()
        return row == (True,)

    def locker(conn: psycopg.Connection[Any], seed: int) -> list[int]:
        rng = random.Random(seed)
        got: list[int] = []
        start.wait(timeout=10)
        while True:
            batch = lock(conn, max_jobs=rng.randint(1, largest))
            if not batch:
                # Holding: nothing left to lock. Resolving: lock_jobs may
                # come back empty while jobs remain, when the other session
                # held them or resolved the ones this call saw; stop only
                # once every job is resolved.
                if resolution == "hold" or not unresolved(conn):
                    return got
                continue
            got += batch
            if resolution != "hold":
                done = conn.execute(
                    f"SELECT conveyor.{resolution}_jobs(%s::bigint[])", [batch]
                ).fetchall()
                # Every job handed out was still unresolved.
                assert sorted(int(r[0]) for r in done) == sorted(batch)

    with ThreadPoolExecutor(len(sessions)) as pool:
        futures = [pool.submit(locker, conn, seed) for seed, conn in enumerate(sessions)]
        results = [f.result(timeout=60) for f in futures]

    a, b = results
    assert len(a) >= 20, "the first session barely ran: the test proves little"
    assert len(b) >= 20, "the second session barely ran: the test proves little"
    assert not set(a) & set(b)
    assert len(a) == len(set(a))
    assert len(b) == len(set(b))
    assert set(a) | set(b) == jobs

    if resolution == "hold":
        for conn, got in zip(sessions, results, strict=True):
            assert locks_of(setup, conn.info.backend_pid) == set(got)
    else:
        assert all_job_locks(setup) == set()
        left = setup.execute(
            "SELECT count(*) FROM conveyor.jobs WHERE finished_at IS NULL"
        ).fetchone()
        assert left == (0,)


# --- pitfall: never release a lock before the resolution has committed ------


@pytest.mark.parametrize("how", ["destroy", "finish", "expire", "retry"])
def test_resolution_keeps_the_job_locked_until_it_commits(connect: Connect, how: str) -> None:
    a, b = connect(), connect()
    job = enqueue(a)
    assert lock(a) == [job]

    with a.transaction():
        resolve(a, how, job)
        # A's session lock is gone; a transaction lock still guards the job,
        # whose row B still sees as ready.
        assert lock_by_id(b, [job]) == []
        assert lock(b, max_jobs=10) == []
        row = b.execute(
            "SELECT count(*) FROM conveyor.jobs WHERE id = %s AND finished_at IS NULL "
            "AND expired_at IS NULL AND run_at <= now()",
            [job],
        ).fetchone()
        assert row == (1,)
        assert locks_of(b, a.info.backend_pid) == {job}

    assert locks_of(b, a.info.backend_pid) == set()
    assert lock_by_id(b, [job]) == []
    assert lock(b, max_jobs=10) == []
    assert held(a) == set()
    assert held(b) == set()


def test_retry_now_makes_the_job_lockable_only_after_commit(connect: Connect) -> None:
    a, b = connect(), connect()
    job = enqueue(a)
    assert lock(a) == [job]
    with a.transaction():
        a.execute("SELECT conveyor.retry_job(%s, 'boom', delay => 0)", [job])
        assert lock(b, max_jobs=10) == []
    rows = b.execute("SELECT id, error_count FROM conveyor.lock_jobs()").fetchall()
    assert rows == [(job, 1)]


@pytest.mark.parametrize("how", ["destroy", "finish", "expire", "retry"])
def test_rolled_back_resolution_leaves_the_job_ready_and_unlocked(
    connect: Connect, how: str
) -> None:
    a, b = connect(), connect()
    job = enqueue(a)
    assert lock(a) == [job]

    with a.transaction(force_rollback=True):
        resolve(a, how, job)
        assert lock_by_id(b, [job]) == []

    assert locks_of(b, a.info.backend_pid) == set()
    assert held(a) == set()
    rows = b.execute("SELECT id, error_count FROM conveyor.lock_jobs_by_id(%s)", [[job]]).fetchall()
    assert rows == [(job, 0)]


def test_job_code_resolution_then_locker_unlock(connect: Connect) -> None:
    """The job code pattern: the locker holds the lock, job code destroys the
    job on another connection in its own transaction, the locker unlocks after
    that commit. No other session can lock the job at any point."""
    locker, job_code, other = connect(), connect(), connect()
    job = enqueue(locker)
    assert lock(locker) == [job]

    with job_code.transaction():
        row = job_code.execute("SELECT conveyor.destroy_job(%s)", [job]).fetchone()
        assert row == (True,)
        assert held(job_code) == set()
        assert lock_by_id(other, [job]) == []
    assert locks_of(other, locker.info.backend_pid) == {job}
    assert lock_by_id(other, [job]) == []

    assert unlock(locker, [job]) == [job]
    assert all_job_locks(other) == set()
    assert lock_by_id(other, [job]) == []


def test_unlock_in_the_transaction_that_resolved_the_job_releases_nothing(
    connect: Connect,
) -> None:
    """A locker that resolves a job and unlocks in the same transaction: the
    resolution already released the session lock (keeping a transaction
    lock), so unlock_jobs has nothing of the caller's to release. Its contract:
    "Ids the session does not hold are ignored, without a warning"."""
    a, b = connect(), connect()
    job = enqueue(a)
    assert lock(a) == [job]
    notices: list[str] = []
    a.add_notice_handler(lambda diag: notices.append(f"{diag.severity}: {diag.message_primary}"))

    with a.transaction():
        resolve(a, "finish", job)
        released = unlock(a, [job])
        assert lock_by_id(b, [job]) == []

    assert locks_of(b, a.info.backend_pid) == set()
    assert (released, notices) == ([], [])


# --- pitfall: a lock taken on a row from an older snapshot -------------------


def test_lock_jobs_by_id_on_resolved_or_missing_jobs_returns_nothing(connect: Connect) -> None:
    a, b = connect(), connect()
    destroyed, finished, expired, retried, scheduled = (enqueue(a) for _ in range(5))
    resolve(a, "destroy", destroyed)
    resolve(a, "finish", finished)
    resolve(a, "expire", expired)
    resolve(a, "retry", retried)
    a.execute(
        "UPDATE conveyor.jobs SET run_at = now() + interval '1 hour' WHERE id = %s", [scheduled]
    )
    missing = scheduled + 1000

    ids = [destroyed, finished, expired, retried, scheduled, missing]
    assert lock_by_id(b, ids) == []
    assert held(b) == set()
    assert all_job_locks(a) == set()


def race_lock_against_resolution(
    connect: Connect, how: str, locker: str, isolation: str | None = None
) -> tuple[list[int] | psycopg.Error, int, psycopg.Connection[Any], psycopg.Connection[Any]]:
    """Forces the race of DESIGN.md's stale-snapshot pitfall.

    A row-level security policy makes session B's lock statement stop, after
    it has taken its snapshot, on the row of a job session A holds. A then
    resolves the job (how) and commits, which releases its lock; then B goes
    on, and its lock try succeeds on a job its snapshot still shows as ready.

    Returns what B's `locker` call returned (or raised), the job, an observer
    connection and B.
    """
    owner, a, b, gatekeeper = connect(), connect(), connect(), connect()
    job = enqueue(owner)
    owner.execute(
        f"""
        CREATE FUNCTION public.test_gate(job_id bigint) RETURNS boolean
        LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
          IF job_id = {job:d} THEN PERFORM pg_advisory_xact_lock_shared({GATE_KEY:d}); END IF;
          RETURN true;
        END $$;
        ALTER TABLE conveyor.jobs ENABLE ROW LEVEL SECURITY;
        CREATE POLICY test_gate ON conveyor.jobs USING (public.test_gate(id));
        """
    )
    # A and the owner are superusers, so the policy does not apply to them; B
    # works as conveyor_worker, to which it does.
    b.execute("SET ROLE conveyor_worker")
    if isolation:
        b.execute(f"SET default_transaction_isolation = '{isolation}'")
    assert lock(a) == [job]
    gatekeeper.execute("SELECT pg_advisory_lock(%s)", [GATE_KEY])

    def b_locks() -> list[int]:
        if locker == "lock_jobs":
            return lock(b, max_jobs=10)
        return lock_by_id(b, [job])

    b_pid = b.info.backend_pid
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(b_locks)

        def b_waits_at_the_gate() -> bool:
            row = owner.execute(
                "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype = 'advisory' "
                "AND objsubid = 1 AND objid = %s AND NOT granted",
                [b_pid, GATE_KEY],
            ).fetchone()
            return row == (1,)

        try:
            # B may also refuse before reading any row (a stricter isolation
            # level): then there is no race to force.
            wait_for(
                lambda: result.done() or b_waits_at_the_gate(),
                what="session B to stop at the gate (or to return)",
            )
            if not result.done():
                if how == "unlock":
                    assert unlock(a, [job]) == [job]
                else:
                    resolve(a, how, job)
                assert locks_of(owner, a.info.backend_pid) == set()
        finally:
            gatekeeper.execute("SELECT pg_advisory_unlock(%s)", [GATE_KEY])
        try:
            outcome: list[int] | psycopg.Error = result.result(timeout=10)
        except psycopg.Error as error:
            outcome = error
    return outcome, job, owner, b


@pytest.mark.parametrize("how", ["destroy", "finish", "expire", "retry", "unlock"])
@pytest.mark.parametrize("locker", ["lock_jobs", "lock_jobs_by_id"])
def test_job_resolved_between_snapshot_and_lock_is_not_returned(
    connect: Connect, how: str, locker: str
) -> None:
    """B must notice that the job it locked was resolved (re-read it with a
    fresh snapshot), release the lock and not return the job. With
    how="unlock" A only unlocks the job: B then gets it, which shows that the
    lock try really happens after the stop."""
    got, job, observer, b = race_lock_against_resolution(connect, how, locker)
    if how == "unlock":
        assert got == [job]
        assert locks_of(observer, b.info.backend_pid) == {job}
    else:
        assert got == []
        assert locks_of(observer, b.info.backend_pid) == set()
        assert held(b) == set()


@pytest.mark.parametrize("isolation", ["repeatable read", "serializable"])
@pytest.mark.parametrize("locker", ["lock_jobs", "lock_jobs_by_id"])
def test_stale_snapshot_under_a_stricter_isolation_level(
    connect: Connect, locker: str, isolation: str
) -> None:
    """The same race on a locker session whose default isolation level is
    stricter than READ COMMITTED, each call still in its own transaction.
    There every statement of the transaction shares one snapshot, so a
    re-read is not fresh. The contract ("never locks a ... finished job;
    re-reads the locked rows with a fresh snapshot") holds only if the call
    refuses to run there or still does not hand out the finished job."""
    outcome, job, observer, b = race_lock_against_resolution(connect, "finish", locker, isolation)
    if isinstance(outcome, psycopg.Error):
        # Refused, as documented: with SQLSTATE 25000, and before taking a lock.
        assert outcome.sqlstate == "25000", outcome
        assert "READ COMMITTED" in str(outcome)
    else:
        assert outcome == [], f"{locker} under {isolation} handed out job {job}, already finished"
    assert locks_of(observer, b.info.backend_pid) == set()


def test_lock_jobs_does_not_come_back_short_while_jobs_are_ready(connect: Connect) -> None:
    """Lockers racing lock_jobs + destroy_jobs: a job another session resolves
    between a walk's snapshot and its lock try is dropped by the recheck.
    lock_jobs must then walk again rather than return fewer jobs than asked
    while more are ready — a worker takes a short answer for a drained queue
    and waits a whole poll interval (the stall seen with several workers)."""
    owner = connect()
    owner.execute("SET conveyor.notify = off")
    owner.execute(
        "INSERT INTO conveyor.jobs (job_class) SELECT 'Job' FROM generate_series(1, 6000)"
    )
    owner.execute("VACUUM ANALYZE conveyor.jobs")
    wanted, lockers = 18, 3
    short: list[tuple[int, int]] = []
    handed_out: list[int] = []
    guard = threading.Lock()

    def drain() -> None:
        conn = connect()
        while True:
            ids = lock(conn, max_jobs=wanted)
            row = conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone()
            assert row is not None
            # Others hold at most (lockers - 1) * wanted jobs: beyond that,
            # enough jobs were free when this call walked.
            free_after = int(row[0]) - len(ids) - (lockers - 1) * wanted
            with guard:
                handed_out.extend(ids)
                if len(ids) < wanted and free_after >= wanted:
                    short.append((len(ids), free_after))
            if not ids and row[0] == 0:
                return
            conn.execute("SELECT conveyor.destroy_jobs(%s::bigint[])", [ids]).fetchall()

    with ThreadPoolExecutor(lockers) as pool:
        for future in [pool.submit(drain) for _ in range(lockers)]:
            future.result(timeout=120)
    assert short == [], f"short answers (got, free) while jobs were ready: {short[:10]}"
    assert len(handed_out) == len(set(handed_out)) == 6000
