"""Bad input and misplaced resolutions, as a Python client meets them.

A malformed enqueue raises a psycopg error carrying the SQLSTATE documented in
docs/reference/protocol.md and a message naming the field. Resolving,
retrying or unlocking a job that does not exist, is already resolved, or is
held by another session has the documented result and never changes another
worker's job.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from db_support import enqueue, locks_of, scalar
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

Connect = Callable[..., psycopg.Connection[Any]]

ENQUEUE = (
    "SELECT id FROM conveyor.enqueue(job_class => %(job_class)s::text, args => %(args)s::jsonb, "
    "queue => %(queue)s::text, priority => %(priority)s::integer, "
    "run_at => %(run_at)s::timestamptz, data => %(data)s::jsonb, "
    "maximum_retry_count => %(maximum_retry_count)s::integer)"
)
VALID: dict[str, Any] = {
    "job_class": "SendEmail",
    "args": Jsonb([1]),
    "queue": "default",
    "priority": 100,
    "run_at": "2000-01-01T00:00:00Z",
    "data": Jsonb({}),
    "maximum_retry_count": 15,
}


def job_count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone()
    assert row is not None
    return int(row[0])


def job_row(conn: psycopg.Connection[Any], job: int) -> tuple[Any, ...] | None:
    return conn.execute("SELECT * FROM conveyor.jobs WHERE id = %s", [job]).fetchone()


def collect_notices(conn: psycopg.Connection[Any]) -> list[str]:
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(f"{d.severity}: {d.message_primary}"))
    return notices


def error_of(conn: psycopg.Connection[Any], query: str, params: Any = None) -> psycopg.Error:
    """The error `query` raises, rolled back to a savepoint so that `conn`
    goes on working."""
    with pytest.raises(psycopg.Error) as caught, conn.transaction():
        conn.execute(query, params)
    return caught.value


# --- one database for the tests that change nothing that lasts ------------------------


@pytest.fixture(scope="module")
def shared_db_url(admin_url: str, template_db: str) -> Iterator[str]:
    """A clone of the template shared by this module's `scratch` tests: one
    clone instead of one per parametrized case keeps the suite fast."""
    name = f"conveyor_test_errors_{os.getpid()}"
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(drop)
        admin.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    try:
        yield make_conninfo(admin_url, dbname=name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(drop)


@pytest.fixture
def scratch(shared_db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the shared clone inside a transaction that is rolled
    back after the test, so every test starts from an empty queue."""
    with (
        psycopg.connect(shared_db_url, autocommit=True) as conn,
        conn.transaction(force_rollback=True),
    ):
        yield conn


# --- malformed enqueue -------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "sqlstate"),
    [
        ("job_class", None, "22004"),
        ("job_class", "", "22023"),
        ("job_class", "J" * 501, "22001"),
        ("args", None, "22004"),
        ("args", Jsonb({"a": 1}), "22023"),
        ("args", Jsonb("text"), "22023"),
        ("queue", None, "22004"),
        ("queue", "", "22023"),
        ("queue", "q" * 101, "22001"),
        ("priority", None, "22004"),
        ("priority", -1, "22003"),
        ("priority", 32768, "22003"),
        ("run_at", None, "22004"),
        ("data", None, "22004"),
        ("data", Jsonb([1]), "22023"),
        ("data", Jsonb(3), "22023"),
        ("maximum_retry_count", None, "22004"),
        ("maximum_retry_count", -1, "22023"),
    ],
)
def test_malformed_enqueue_raises_the_documented_sqlstate_naming_the_field(
    scratch: psycopg.Connection[Any], field: str, value: Any, sqlstate: str
) -> None:
    error = error_of(scratch, ENQUEUE, {**VALID, field: value})
    assert error.diag.sqlstate == sqlstate
    assert field in (error.diag.message_primary or "")
    assert job_count(scratch) == 0


def test_the_valid_enqueue_of_the_error_tests_works(scratch: psycopg.Connection[Any]) -> None:
    # The control for the test above: only the field it changes is wrong.
    scratch.execute(ENQUEUE, VALID)
    scratch.execute(ENQUEUE, {**VALID, "job_class": "J" * 500, "queue": "q" * 100, "priority": 0})
    scratch.execute(ENQUEUE, {**VALID, "priority": 32767, "maximum_retry_count": 0})
    assert job_count(scratch) == 3


@pytest.mark.parametrize(
    ("jobs", "sqlstate", "words"),
    [
        ([{"job_class": "A"}, {"job_class": ""}], "22023", ["jobs[1]", "job_class"]),
        ([{"job_class": "A"}, {"args": [1]}], "22004", ["jobs[1]", "job_class"]),
        ([{"job_class": "A", "args": {"x": 1}}], "22023", ["jobs[0]", "args"]),
        ([{"job_class": "A", "data": []}], "22023", ["jobs[0]", "data"]),
        (
            [{"job_class": "A"}, {"job_class": "B", "priority": 40000}],
            "22003",
            ["jobs[1]", "priority"],
        ),
        ([{"job_class": "A", "priority": -5}], "22003", ["jobs[0]", "priority"]),
        ([{"job_class": "A", "queue": "q" * 101}], "22001", ["jobs[0]", "queue"]),
        ([{"job_class": "A", "queue": None}], "22004", ["jobs[0]", "queue"]),
        ([{"job_class": "A", "colour": "red"}], "22023", ["jobs[0]", "colour"]),
        ([{"job_class": "A"}, "B"], "22023", ["jobs[1]"]),
        ({"job_class": "A"}, "22023", ["jobs"]),
    ],
)
def test_malformed_enqueue_many_names_the_element_and_inserts_nothing(
    scratch: psycopg.Connection[Any], jobs: Any, sqlstate: str, words: list[str]
) -> None:
    error = error_of(scratch, "SELECT * FROM conveyor.enqueue_many(%s)", [Jsonb(jobs)])
    assert error.diag.sqlstate == sqlstate
    message = error.diag.message_primary or ""
    for word in words:
        assert word in message
    assert job_count(scratch) == 0


def test_enqueue_many_of_null_raises_22004(scratch: psycopg.Connection[Any]) -> None:
    error = error_of(scratch, "SELECT * FROM conveyor.enqueue_many(NULL)")
    assert isinstance(error, psycopg.errors.NullValueNotAllowed)


@pytest.mark.parametrize(
    ("call", "sqlstate"),
    [
        ("conveyor.lock_jobs(queues => NULL)", "22004"),
        ("conveyor.lock_jobs(max_jobs => NULL)", "22004"),
        ("conveyor.lock_jobs(queues => '{}')", "22023"),
        ("conveyor.lock_jobs(max_jobs => -1)", "22023"),
        ("conveyor.retry_job({job}, delay => -1)", "22023"),
        ("conveyor.retry_job({job}, delay => 'NaN')", "22023"),
        ("conveyor.retry_job({job}, delay => 1e300)", "22008"),
        ("conveyor.register_locker('{}', '{NULL}')", "22023"),
        ("conveyor.register_locker('{default}', '{}')", "22023"),
    ],
)
def test_other_bad_arguments_raise_the_documented_sqlstate(
    scratch: psycopg.Connection[Any], call: str, sqlstate: str
) -> None:
    job = enqueue(scratch)
    before = job_row(scratch, job)
    error = error_of(scratch, f"SELECT * FROM {call.replace('{job}', str(job))}")
    assert error.diag.sqlstate == sqlstate
    assert job_row(scratch, job) == before


# --- ids that do not exist or are already resolved ------------------------------------


def test_resolving_an_id_that_does_not_exist_returns_false(conn: psycopg.Connection[Any]) -> None:
    job = enqueue(conn)
    before = job_row(conn, job)
    missing = job + 1000
    for how in ("finish", "destroy", "expire"):
        assert scalar(conn, f"SELECT conveyor.{how}_job(%s)", [missing]) is False
        rows = conn.execute(f"SELECT * FROM conveyor.{how}_jobs(%s)", [[missing]]).fetchall()
        assert rows == []
    assert conn.execute("SELECT * FROM conveyor.retry_job(%s, 'boom')", [missing]).fetchall() == []
    assert conn.execute("SELECT conveyor.unlock_jobs(%s)", [[missing]]).fetchall() == []
    assert job_row(conn, job) == before
    assert job_count(conn) == 1


def test_a_job_is_never_resolved_twice(conn: psycopg.Connection[Any]) -> None:
    finished, expired = enqueue(conn), enqueue(conn)
    assert scalar(conn, "SELECT conveyor.finish_job(%s)", [finished]) is True
    assert scalar(conn, "SELECT conveyor.expire_job(%s)", [expired]) is True
    rows_before = [job_row(conn, finished), job_row(conn, expired)]

    for job in (finished, expired):
        for how in ("finish", "destroy", "expire"):
            assert scalar(conn, f"SELECT conveyor.{how}_job(%s)", [job]) is False
        rows = conn.execute("SELECT * FROM conveyor.retry_job(%s, 'late')", [job]).fetchall()
        assert rows == []
    assert [job_row(conn, finished), job_row(conn, expired)] == rows_before

    # A batch resolves only what is unresolved, and says which.
    fresh = enqueue(conn)
    done = conn.execute(
        "SELECT * FROM conveyor.destroy_jobs(%s)", [[finished, fresh, expired, fresh + 99]]
    ).fetchall()
    assert done == [(fresh,)]


def test_no_warning_for_ids_the_session_does_not_hold(conn: psycopg.Connection[Any]) -> None:
    notices = collect_notices(conn)
    job = enqueue(conn)
    assert conn.execute("SELECT conveyor.unlock_jobs(%s)", [[job, job + 1]]).fetchall() == []
    assert scalar(conn, "SELECT conveyor.finish_job(%s)", [job]) is True
    assert scalar(conn, "SELECT conveyor.finish_job(%s)", [job + 1]) is False
    assert notices == []


# --- jobs another session holds ---------------------------------------------------------


def test_job_code_destroys_a_job_it_does_not_hold_and_the_locker_unlocks_it(
    connect: Connect,
) -> None:
    locker, job_code, other = connect(), connect(), connect()
    job = enqueue(locker)
    assert locker.execute("SELECT id FROM conveyor.lock_jobs()").fetchall() == [(job,)]

    with job_code.transaction():
        assert scalar(job_code, "SELECT conveyor.destroy_job(%s)", [job]) is True
    # Job code holds nothing, so it released nothing: the locker still holds
    # the (now gone) job until it unlocks.
    assert locks_of(other, locker.info.backend_pid) == {job}
    assert locks_of(other, job_code.info.backend_pid) == set()

    assert locker.execute("SELECT conveyor.unlock_jobs(%s)", [[job]]).fetchall() == [(job,)]
    assert locks_of(other, locker.info.backend_pid) == set()
    assert job_row(other, job) is None


@pytest.mark.parametrize("how", ["finish", "expire", "retry"])
def test_resolving_another_sessions_job_leaves_its_lock_alone(connect: Connect, how: str) -> None:
    holder, stranger, observer = connect(), connect(), connect()
    job, bystander = enqueue(holder), enqueue(holder)
    assert holder.execute("SELECT id FROM conveyor.lock_jobs(max_jobs => 2)").fetchall() == [
        (job,),
        (bystander,),
    ]
    bystander_before = job_row(observer, bystander)

    if how == "retry":
        rows = stranger.execute(
            "SELECT id, error_count FROM conveyor.retry_job(%s, 'boom', delay => 60)", [job]
        ).fetchall()
        assert rows == [(job, 1)]
    else:
        assert scalar(stranger, f"SELECT conveyor.{how}_job(%s)", [job]) is True

    assert locks_of(observer, holder.info.backend_pid) == {job, bystander}
    assert locks_of(observer, stranger.info.backend_pid) == set()
    assert stranger.execute("SELECT id FROM conveyor.lock_jobs(max_jobs => 10)").fetchall() == []
    assert job_row(observer, bystander) == bystander_before

    assert sorted(
        r[0] for r in holder.execute("SELECT conveyor.unlock_jobs(%s)", [[job, bystander]])
    ) == [job, bystander]
    assert locks_of(observer, holder.info.backend_pid) == set()


def test_errors_in_one_workers_calls_do_not_touch_another_workers_job(
    connect: Connect,
) -> None:
    holder, clumsy, observer = connect(), connect(), connect()
    job = enqueue(holder)
    assert holder.execute("SELECT id FROM conveyor.lock_jobs()").fetchall() == [(job,)]
    before = job_row(observer, job)

    # A rejected call, and resolutions whose transactions fail afterwards.
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        clumsy.execute("SELECT * FROM conveyor.retry_job(%s, delay => -1)", [job])
    for how in ("destroy", "finish", "expire"):
        with pytest.raises(psycopg.errors.DivisionByZero), clumsy.transaction():
            assert scalar(clumsy, f"SELECT conveyor.{how}_job(%s)", [job]) is True
            clumsy.execute("SELECT 1 / 0")
    with pytest.raises(psycopg.errors.DivisionByZero), clumsy.transaction():
        clumsy.execute("SELECT * FROM conveyor.retry_job(%s, 'boom')", [job])
        clumsy.execute("SELECT 1 / 0")

    assert job_row(observer, job) == before
    assert locks_of(observer, holder.info.backend_pid) == {job}
    assert locks_of(observer, clumsy.info.backend_pid) == set()
