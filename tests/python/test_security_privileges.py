"""The privilege model (docs/security.md), proven with LOGIN roles that connect
on their own, as an application and a worker would in production.

- conveyor_enqueuer can enqueue (enqueue, enqueue_many) and read the schema
  version -- nothing else: it cannot lock, resolve, retry, unlock, read or
  change rows, read the registry, or call the internal helpers.
- conveyor_worker can run the whole worker protocol but cannot insert rows
  behind enqueue's back, truncate, or change the schema.
- A role with neither cannot touch the schema at all.
- Only enqueue and enqueue_many are SECURITY DEFINER; every function pins
  search_path; only schema_version is executable by PUBLIC.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from db_support import lock_key
from psycopg.types.json import Jsonb
from security_support import MakeRole

Connect = Callable[..., psycopg.Connection[Any]]

# Batches group what an enqueuer may enqueue; batch_stats gives counts only.
BATCH_FUNCTIONS = {"create_batch", "close_batch", "batch_stats"}
ENQUEUER_MAY_EXECUTE = {"enqueue", "enqueue_many", "schema_version", *BATCH_FUNCTIONS}
# enqueue_due_schedules: workers turn due schedules into jobs without INSERT on jobs.
# The batch triggers: whoever enqueues or resolves a job of a batch needs no
# privilege on conveyor.batches.
SECURITY_DEFINER = {
    "enqueue",
    "enqueue_many",
    "enqueue_due_schedules",
    *BATCH_FUNCTIONS,
    "tg_jobs__join_batch",
    "tg_jobs__resolve_in_batch",
    # throttles: workers write throttle_starts only through these; the
    # trigger that replaces flow_in_use()'s body (owned by the schema owner)
    # and the one that reads the lockers for job code resolving its job
    "take_throttle_slot",
    "give_back_throttle_slot",
    "tg_flow__in_use",
    "tg_jobs__free_limit_slot",
}
PINNED_PATH = "search_path=pg_catalog, pg_temp"

SECRET = "s3cr3t-argument-of-another-tenant"


def enqueue_as_admin(conn: psycopg.Connection[Any], **fields: Any) -> int:
    row = conn.execute(
        "SELECT id FROM conveyor.enqueue(%s::text, %s::jsonb, queue => %s::text)",
        [
            fields.get("job_class", "Secret"),
            Jsonb(fields.get("args", [SECRET])),
            fields.get("queue", "default"),
        ],
    ).fetchone()
    assert row is not None
    return int(row[0])


def snapshot(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Every job row and every conveyor advisory lock, to show nothing changed."""
    jobs = conn.execute("SELECT * FROM conveyor.jobs ORDER BY id").fetchall()
    locks = conn.execute(
        "SELECT pid, classid, objid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " ORDER BY 1, 2, 3"
    ).fetchall()
    lockers = conn.execute("SELECT pid FROM conveyor.lockers ORDER BY pid").fetchall()
    return [*jobs, ("locks", *locks), ("lockers", *lockers)]


def test_enqueuer_enqueues_and_gets_back_only_its_own_row(
    conn: psycopg.Connection[Any], login_role: MakeRole
) -> None:
    enqueue_as_admin(conn)
    _, connect = login_role("conveyor_enqueuer")
    app = connect()
    row = app.execute(
        "SELECT * FROM conveyor.enqueue('Welcome', '[42]', queue => 'mail', priority => 5)"
    ).fetchall()
    assert len(row) == 1
    assert SECRET not in repr(row)
    ids = [
        r[0]
        for r in app.execute(
            "SELECT * FROM conveyor.enqueue_many(%s::jsonb)",
            [
                Jsonb(
                    [
                        {"job_class": "A", "args": [1]},
                        {"job_class": "B", "queue": "mail"},
                    ]
                )
            ],
        ).fetchall()
    ]
    assert len(ids) == 2
    stored = conn.execute(
        "SELECT job_class, args, queue FROM conveyor.jobs WHERE id = ANY(%s) ORDER BY id",
        [ids],
    ).fetchall()
    assert stored == [("A", [1], "default"), ("B", [], "mail")]
    # Enqueueing inside the application's own transaction: a rollback leaves no job.
    with pytest.raises(psycopg.errors.DivisionByZero), app.transaction():
        app.execute("SELECT conveyor.enqueue('RolledBack')")
        app.execute("SELECT 1 / 0")
    assert conn.execute(
        "SELECT count(*) FROM conveyor.jobs WHERE job_class = 'RolledBack'"
    ).fetchone() == (0,)
    assert app.execute("SELECT conveyor.schema_version()").fetchone() is not None


def test_enqueuer_holds_exactly_the_documented_privileges(
    conn: psycopg.Connection[Any], login_role: MakeRole
) -> None:
    name, _ = login_role("conveyor_enqueuer")
    functions = conn.execute(
        """
        SELECT p.proname, has_function_privilege(%s, p.oid, 'EXECUTE')
          FROM pg_proc AS p WHERE p.pronamespace = 'conveyor'::regnamespace
        """,
        [name],
    ).fetchall()
    assert functions, "no functions found in schema conveyor"
    allowed = {proname for proname, ok in functions if ok}
    assert allowed == ENQUEUER_MAY_EXECUTE
    relations = conn.execute(
        """
        SELECT c.relname, c.relkind, priv,
               CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(%(r)s, c.oid, priv)
                    ELSE has_table_privilege(%(r)s, c.oid, priv) END
          FROM pg_class AS c
          CROSS JOIN LATERAL unnest(CASE WHEN c.relkind = 'S'
                                         THEN ARRAY['USAGE', 'SELECT', 'UPDATE']
                                         ELSE ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE',
                                                    'TRUNCATE', 'REFERENCES', 'TRIGGER']
                                          END) AS priv
         WHERE c.relnamespace = 'conveyor'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'S', 'p')
        """,
        {"r": name},
    ).fetchall()
    assert {r[0] for r in relations} >= {"jobs", "lockers"}
    assert [r for r in relations if r[3]] == [], (
        "conveyor_enqueuer has table privileges"
    )
    assert conn.execute(
        "SELECT has_schema_privilege(%s, 'conveyor', 'USAGE'),"
        " has_schema_privilege(%s, 'conveyor', 'CREATE')",
        [name, name],
    ).fetchone() == (True, False)


# Every statement an enqueuer might try instead of enqueueing. {id} is a job
# another role enqueued.
REFUSED_TO_ENQUEUER = [
    "SELECT * FROM conveyor.jobs",
    "SELECT args FROM conveyor.jobs WHERE id = {id}",
    "SELECT * FROM conveyor.lockers",
    "INSERT INTO conveyor.jobs (job_class) VALUES ('Direct')",
    "UPDATE conveyor.jobs SET priority = 0",
    "DELETE FROM conveyor.jobs",
    "TRUNCATE conveyor.jobs",
    "SELECT setval(pg_get_serial_sequence('conveyor.jobs', 'id'), 1)",
    "SELECT * FROM conveyor.lock_jobs(ARRAY['default'], 10)",
    "SELECT * FROM conveyor.lock_jobs_by_id(ARRAY[{id}]::bigint[])",
    "SELECT conveyor.unlock_jobs(ARRAY[{id}]::bigint[])",
    "SELECT conveyor.destroy_job({id})",
    "SELECT conveyor.destroy_jobs(ARRAY[{id}]::bigint[])",
    "SELECT conveyor.finish_job({id})",
    "SELECT conveyor.finish_jobs(ARRAY[{id}]::bigint[])",
    "SELECT conveyor.expire_job({id})",
    "SELECT conveyor.expire_jobs(ARRAY[{id}]::bigint[])",
    "SELECT * FROM conveyor.retry_job({id}, 'x', 'y', 0)",
    "SELECT * FROM conveyor.job_stats()",
    "SELECT * FROM conveyor.queue_stats()",
    "SELECT conveyor.register_locker('{{default}}', '{{NULL}}')",
    "SELECT conveyor.unregister_locker()",
    "SELECT conveyor.prune_lockers()",
    "SELECT conveyor.report_locker(0, 8)",
    "SELECT * FROM conveyor.index_bloat()",
    "SELECT conveyor.held_job_ids()",
    "SELECT * FROM conveyor.working_job_ids()",
    "SELECT * FROM conveyor.release_job_locks(ARRAY[{id}]::bigint[])",
    "SELECT * FROM conveyor.recheck_locked_jobs(ARRAY[{id}]::bigint[])",
    "SELECT * FROM conveyor.job_problem('x', '[]', 'q', 1, now(), '{{}}', 1)",
    "SELECT * FROM conveyor.job_json_problem('{{}}')",
    "CREATE TABLE conveyor.intruder (x int)",
    "CREATE FUNCTION conveyor.intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "ALTER TABLE conveyor.jobs DISABLE TRIGGER USER",
    "CREATE TRIGGER intruder BEFORE INSERT ON conveyor.jobs"
    " FOR EACH ROW EXECUTE FUNCTION conveyor.tg_jobs__notify()",
    "DROP FUNCTION conveyor.enqueue_many(jsonb)",
    "COMMENT ON TABLE conveyor.jobs IS 'mine'",
]


def test_enqueuer_cannot_do_anything_but_enqueue(
    conn: psycopg.Connection[Any], login_role: MakeRole
) -> None:
    """Each statement is refused with 42501 and changes nothing (one database
    for all of them, checked after each; every failure is reported)."""
    job = enqueue_as_admin(conn)
    _, connect = login_role("conveyor_enqueuer")
    app = connect()
    problems = refusals(conn, app, [s.format(id=job) for s in REFUSED_TO_ENQUEUER])
    assert problems == []
    assert app.execute(
        "SELECT count(*) FROM conveyor.enqueue('StillWorks')"
    ).fetchone() == (1,)


def refusals(
    admin: psycopg.Connection[Any], role: psycopg.Connection[Any], statements: list[str]
) -> list[str]:
    """Runs each statement as the role; returns what was not refused with
    42501, or changed something, or showed another job's arguments."""
    problems: list[str] = []
    for statement in statements:
        before = snapshot(admin)
        try:
            role.execute(statement)
        except psycopg.errors.InsufficientPrivilege as error:
            if SECRET in str(error):
                problems.append(f"{statement}: the error shows another job's args")
        except psycopg.Error as error:
            problems.append(f"{statement}: {error.sqlstate} {error}, not 42501")
        else:
            problems.append(f"{statement}: allowed")
        if snapshot(admin) != before:
            problems.append(f"{statement}: changed jobs, locks or the registry")
    return problems


def test_nothing_enqueue_says_leaks_other_jobs(
    conn: psycopg.Connection[Any], login_role: MakeRole
) -> None:
    """Every way an enqueuer can make enqueue talk -- its result, its errors --
    never shows another job's row."""
    enqueue_as_admin(conn)
    _, connect = login_role("conveyor_enqueuer")
    app = connect()
    said: list[str] = []
    for statement in [
        "SELECT * FROM conveyor.enqueue('A')",
        'SELECT * FROM conveyor.enqueue_many(\'[{"job_class": "B"}]\')',
        "SELECT * FROM conveyor.enqueue('')",
        "SELECT * FROM conveyor.enqueue('A', '{}')",
        'SELECT * FROM conveyor.enqueue_many(\'[{"job_class": "B", "id": 1}]\')',
        'SELECT * FROM conveyor.enqueue_many(\'[{"job_class": "B", "priority": 1.5}]\')',
        'SELECT * FROM conveyor.enqueue_many(\'[{"job_class": "B", "run_at": "x"}]\')',
    ]:
        try:
            said.append(repr(app.execute(statement).fetchall()))
        except psycopg.Error as error:
            said.append(f"{error} {error.diag.context} {error.diag.message_detail}")
    assert len(said) == 7
    assert not [s for s in said if SECRET in s]


def test_a_role_without_conveyor_roles_can_do_nothing(
    conn: psycopg.Connection[Any], login_role: MakeRole
) -> None:
    job = enqueue_as_admin(conn)
    before = snapshot(conn)
    _, connect = login_role()
    stranger = connect()
    for statement in [
        "SELECT conveyor.enqueue('X')",
        "SELECT * FROM conveyor.enqueue_many('[]')",
        "SELECT conveyor.schema_version()",
        f"SELECT conveyor.destroy_job({job})",
        "SELECT * FROM conveyor.jobs",
    ]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            stranger.execute(statement)
    assert snapshot(conn) == before


def test_worker_role_runs_the_whole_protocol(
    conn: psycopg.Connection[Any], login_role: MakeRole
) -> None:
    _, connect = login_role("conveyor_worker")
    worker = connect()
    jobs = [enqueue_as_admin(conn, job_class=f"J{i}") for i in range(5)]
    channel = worker.execute(
        "SELECT conveyor.register_locker('{default}', '{10,NULL}', 'host', 1)"
    ).fetchone()
    assert channel is not None and channel[0].startswith("conveyor_worker_")
    worker.execute(f'LISTEN "{channel[0]}"')
    locked = [
        r[0]
        for r in worker.execute(
            "SELECT id FROM conveyor.lock_jobs(ARRAY['default'], 4)"
        ).fetchall()
    ]
    assert locked == jobs[:4]
    assert [
        r[0]
        for r in worker.execute(
            "SELECT id FROM conveyor.lock_jobs_by_id(%s)", [jobs[4:]]
        ).fetchall()
    ] == jobs[4:]
    assert worker.execute("SELECT conveyor.destroy_job(%s)", [jobs[0]]).fetchone() == (
        True,
    )
    assert worker.execute("SELECT conveyor.finish_job(%s)", [jobs[1]]).fetchone() == (
        True,
    )
    assert worker.execute("SELECT conveyor.expire_job(%s)", [jobs[2]]).fetchone() == (
        True,
    )
    retried = worker.execute(
        "SELECT error_count FROM conveyor.retry_job(%s, 'boom', 'trace', 60)", [jobs[3]]
    ).fetchone()
    assert retried == (1,)
    assert worker.execute("SELECT conveyor.unlock_jobs(%s)", [jobs[4:]]).fetchall() == [
        (jobs[4],)
    ]
    assert worker.execute("SELECT count(*) FROM conveyor.job_stats()").fetchone() == (
        2,
    )
    assert worker.execute("SELECT count(*) FROM conveyor.queue_stats()").fetchone() == (
        1,
    )
    assert worker.execute("SELECT conveyor.prune_lockers()").fetchone() == (0,)
    # A worker's jobs enqueue jobs: conveyor_worker is an enqueuer too.
    assert worker.execute(
        "SELECT count(*) FROM conveyor.enqueue('FollowUp')"
    ).fetchone() == (1,)
    assert worker.execute("SELECT conveyor.unregister_locker()").fetchone() == (True,)
    assert worker.execute("SELECT conveyor.held_job_ids()").fetchone() == ([],)
    # Nothing stays locked by the worker's session.
    assert conn.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchone() == (0,)


REFUSED_TO_WORKER = [
    "INSERT INTO conveyor.jobs (job_class) VALUES ('BehindEnqueuesBack')",
    "TRUNCATE conveyor.jobs",
    "CREATE TABLE conveyor.intruder (x int)",
    "ALTER TABLE conveyor.jobs DROP CONSTRAINT jobs_args_is_array",
    "DROP TRIGGER _900_notify ON conveyor.jobs",
    "CREATE OR REPLACE FUNCTION conveyor.schema_version() RETURNS text"
    " LANGUAGE sql AS 'SELECT ''x'''",
    "SELECT setval(pg_get_serial_sequence('conveyor.jobs', 'id'), 1)",
    # Schedules are the owner's to change; the clock is not the worker's to move.
    "SELECT conveyor.set_schedule('intruder', '* * * * *', 'Intruder')",
    "SELECT conveyor.delete_schedule('nightly')",
    "UPDATE conveyor.schedules SET next_run_at = now()",
    "SELECT conveyor.enqueue_schedules_due_at(now() + interval '1 year')",
]


def test_worker_role_cannot_change_the_schema_or_bypass_enqueue(
    conn: psycopg.Connection[Any], login_role: MakeRole
) -> None:
    enqueue_as_admin(conn)
    _, connect = login_role("conveyor_worker")
    assert refusals(conn, connect(), REFUSED_TO_WORKER) == []


def test_definer_rights_search_path_and_public_grants(
    conn: psycopg.Connection[Any],
) -> None:
    rows = conn.execute(
        """
        SELECT p.proname, p.prosecdef, p.proconfig,
               coalesce(aclcontains(p.proacl, makeaclitem(0, p.proowner, 'EXECUTE', false)), true)
          FROM pg_proc AS p WHERE p.pronamespace = 'conveyor'::regnamespace
        """
    ).fetchall()
    assert len(rows) >= 20
    assert {name for name, definer, _, _ in rows if definer} == SECURITY_DEFINER
    # The helpers the planner inlines have no SET clause (their bodies are
    # bound at creation; see test_security_search_path.py).
    inlined = {
        "concurrency_key_lock",
        "errors_append",
        "flow_in_use",
        "job_paused",
        "job_limit",
        "job_lock_key1",
        "job_lock_key2",
        "job_lock_id",
        "job_state",
        "sorted_array_contains",
    }
    unpinned = [
        name
        for name, _, config, _ in rows
        if PINNED_PATH not in (config or [])
        and not (name in inlined and config is None)
    ]
    assert unpinned == [], f"functions without SET {PINNED_PATH}: {unpinned}"
    public = {name for name, _, _, public in rows if public}
    assert public == {"schema_version"}, (
        "EXECUTE granted to PUBLIC (or a NULL acl, which is)"
    )
    # The schema itself: no CREATE or USAGE for PUBLIC.
    assert conn.execute(
        "SELECT has_schema_privilege('public', 'conveyor', 'USAGE'),"
        " has_schema_privilege('public', 'conveyor', 'CREATE')"
    ).fetchone() == (False, False)


def test_the_owner_of_definer_functions_is_the_table_owner(
    conn: psycopg.Connection[Any],
) -> None:
    """enqueue runs with its owner's rights: the owner must own conveyor.jobs
    (so that it needs no grant), and nobody else may replace the functions."""
    owners = conn.execute(
        """
        SELECT DISTINCT pg_get_userbyid(p.proowner) FROM pg_proc AS p
         WHERE p.pronamespace = 'conveyor'::regnamespace
        UNION
        SELECT pg_get_userbyid(c.relowner) FROM pg_class AS c
         WHERE c.oid IN ('conveyor.jobs'::regclass, 'conveyor.lockers'::regclass)
        """
    ).fetchall()
    assert len(owners) == 1
    assert owners[0][0] not in ("conveyor_enqueuer", "conveyor_worker")


# -- raw advisory locks --------------------------------------------------------------------

ADVISORY_FUNCTIONS = [
    f"pg_catalog.{name}(integer, integer)"
    for name in (
        "pg_advisory_lock",
        "pg_try_advisory_lock",
        "pg_advisory_xact_lock",
        "pg_try_advisory_xact_lock",
        "pg_advisory_lock_shared",
        "pg_try_advisory_lock_shared",
        "pg_advisory_xact_lock_shared",
        "pg_try_advisory_xact_lock_shared",
        "pg_advisory_unlock",
        "pg_advisory_unlock_shared",
    )
]
HARDENING = [
    f"REVOKE EXECUTE ON FUNCTION {', '.join(ADVISORY_FUNCTIONS)} FROM PUBLIC",
    f"GRANT EXECUTE ON FUNCTION {', '.join(ADVISORY_FUNCTIONS)} TO conveyor_worker",
]


def test_hardening_recipe_keeps_enqueuers_off_job_lock_keys(
    conn: psycopg.Connection[Any], login_role: MakeRole
) -> None:
    """PostgreSQL lets every role take any advisory lock, so by default an
    enqueuer could hold a job's key (1129270870, id) and keep workers off that
    job. docs/security.md gives a recipe that revokes the two-key advisory
    lock functions from PUBLIC; this test shows the default, then the recipe
    closing it while workers keep working."""
    job = enqueue_as_admin(conn)
    _, connect_app = login_role("conveyor_enqueuer")
    _, connect_worker = login_role("conveyor_worker")
    app, worker = connect_app(), connect_worker()

    # Default: the enqueuer can squat on the job's key, and the worker cannot lock it.
    assert app.execute(
        "SELECT pg_try_advisory_lock(%s, %s)", lock_key(job)
    ).fetchone() == (True,)
    assert worker.execute("SELECT id FROM conveyor.lock_jobs()").fetchall() == []
    app.execute("SELECT pg_advisory_unlock_all()")

    for statement in HARDENING:
        conn.execute(statement)
    app.close()
    app = connect_app()  # privileges are checked per call; a fresh session to be sure
    for function in ADVISORY_FUNCTIONS:
        name = function.split(".")[1].split("(")[0]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute(f"SELECT pg_catalog.{name}(%s, %s)", lock_key(job))
    # Applications keep their own single-key (bigint) advisory locks.
    assert app.execute("SELECT pg_try_advisory_lock(42)").fetchone() == (True,)
    assert app.execute(
        "SELECT count(*) FROM conveyor.enqueue('AfterHardening')"
    ).fetchone() == (1,)
    # And the worker still runs the whole protocol.
    assert [
        r[0]
        for r in worker.execute(
            "SELECT id FROM conveyor.lock_jobs(ARRAY['default'], 1)"
        ).fetchall()
    ] == [job]
    assert worker.execute("SELECT conveyor.destroy_job(%s)", [job]).fetchone() == (
        True,
    )
    assert worker.execute("SELECT conveyor.held_job_ids()").fetchone() == ([],)
