"""search_path attacks: look-alike functions and operators in `public` and in
a schema the caller puts first on its search_path (ahead of pg_catalog) do not
change what conveyor's functions do.

Each conveyor function pins ``search_path = pg_catalog, pg_temp``. The test
plants traps for every built-in those functions rely on -- now(),
jsonb_typeof(), pg_try_advisory_lock(), unnest(), char_length(), the text and
bigint ``=`` operators, timestamptz ``<=`` ... -- runs the same scenario once
with a clean search_path and once under each attack, and compares the
transcripts. A control shows the traps are live: the same function body
without the pinned search_path is hijacked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from db_support import CONV
from psycopg import sql

Connect = Callable[..., psycopg.Connection[Any]]

# Traps: each changes the result of the built-in it shadows in a way the
# scenario would notice. {s} is the schema they are planted in.
TRAPS = r"""
CREATE FUNCTION {s}.now() RETURNS timestamptz LANGUAGE sql
  AS $$ SELECT '2999-01-01 00:00:00+00'::timestamptz $$;
CREATE FUNCTION {s}.jsonb_typeof(jsonb) RETURNS text LANGUAGE sql AS $$ SELECT 'array' $$;
CREATE FUNCTION {s}.pg_try_advisory_lock(integer, integer) RETURNS boolean LANGUAGE sql
  AS $$ SELECT true $$;
CREATE FUNCTION {s}.pg_advisory_unlock(integer, integer) RETURNS boolean LANGUAGE sql
  AS $$ SELECT true $$;
CREATE FUNCTION {s}.pg_advisory_xact_lock(integer, integer) RETURNS void LANGUAGE sql
  AS $$ SELECT $$;
CREATE FUNCTION {s}.pg_backend_pid() RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$;
CREATE FUNCTION {s}.current_database() RETURNS name LANGUAGE sql AS $$ SELECT 'elsewhere'::name $$;
CREATE FUNCTION {s}.pg_postmaster_start_time() RETURNS timestamptz LANGUAGE sql
  AS $$ SELECT '1999-01-01 00:00:00+00'::timestamptz $$;
CREATE FUNCTION {s}.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE sql
  AS $$ SELECT x FROM pg_catalog.unnest($1) AS x WHERE false $$;
CREATE FUNCTION {s}.char_length(text) RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$;
CREATE FUNCTION {s}."left"(text, integer) RETURNS text LANGUAGE sql AS $$ SELECT 'hijacked' $$;
CREATE FUNCTION {s}.lower(text) RETURNS text LANGUAGE sql AS $$ SELECT 'off' $$;
CREATE FUNCTION {s}.current_setting(text, boolean) RETURNS text LANGUAGE sql AS $$ SELECT 'off' $$;
CREATE FUNCTION {s}.pg_notify(text, text) RETURNS void LANGUAGE sql AS $$ SELECT $$;
CREATE FUNCTION {s}.cardinality(anyarray) RETURNS integer LANGUAGE sql AS $$ SELECT 0 $$;
CREATE FUNCTION {s}.array_position(anycompatiblearray, anycompatible) RETURNS integer
  LANGUAGE sql AS $$ SELECT NULL::integer $$;
CREATE FUNCTION {s}.make_interval(secs double precision) RETURNS interval LANGUAGE sql
  AS $$ SELECT interval '0' $$;
CREATE FUNCTION {s}.always_true(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE FUNCTION {s}.always_false(text, text) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE OPERATOR {s}.= (LEFTARG = text, RIGHTARG = text, FUNCTION = {s}.always_true);
CREATE OPERATOR {s}.<> (LEFTARG = text, RIGHTARG = text, FUNCTION = {s}.always_false);
CREATE FUNCTION {s}.int8_true(bigint, bigint) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
CREATE OPERATOR {s}.= (LEFTARG = bigint, RIGHTARG = bigint, FUNCTION = {s}.int8_true);
CREATE FUNCTION {s}.ts_true(timestamptz, timestamptz) RETURNS boolean LANGUAGE sql
  AS $$ SELECT true $$;
CREATE OPERATOR {s}.<= (LEFTARG = timestamptz, RIGHTARG = timestamptz, FUNCTION = {s}.ts_true);
CREATE FUNCTION {s}.int_false(integer, integer) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE OPERATOR {s}.< (LEFTARG = integer, RIGHTARG = integer, FUNCTION = {s}.int_false);
CREATE OPERATOR {s}.> (LEFTARG = integer, RIGHTARG = integer, FUNCTION = {s}.int_false);
CREATE FUNCTION {s}.width_bucket(bigint, bigint[]) RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$;
CREATE FUNCTION {s}.int8_shr_zero(bigint, integer) RETURNS bigint LANGUAGE sql AS $$ SELECT 0::bigint $$;
CREATE OPERATOR {s}.>> (LEFTARG = bigint, RIGHTARG = integer, FUNCTION = {s}.int8_shr_zero);
CREATE TABLE {s}.pg_locks (locktype text, objsubid int, pid int, granted bool, database oid,
                           classid oid, objid oid);
GRANT USAGE ON SCHEMA {s} TO PUBLIC;
"""

# Where the traps sit, and the caller's search_path that puts them first.
ATTACKS = {
    "clean": None,
    "schema first on the path": ("evil", "evil, pg_catalog, public"),
    "public first on the path": ("public", "public, pg_catalog"),
    "temp schema and a trap schema first": ("evil", "pg_temp, evil, pg_catalog"),
}


def plant(admin: psycopg.Connection[Any], schema: str) -> None:
    if schema != "public":
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    admin.execute(TRAPS.format(s=schema))  # type: ignore[arg-type]


def trap_is_live(attacker: psycopg.Connection[Any]) -> None:
    """Under the attack path, unqualified built-ins really are the traps."""
    assert attacker.execute("SELECT now() > '2900-01-01'::timestamptz").fetchone() == (
        True,
    )
    assert attacker.execute("SELECT 'a'::text = 'b'::text").fetchone() == (True,)
    assert attacker.execute("SELECT 1::bigint = 2::bigint").fetchone() == (True,)
    assert attacker.execute("SELECT jsonb_typeof('{}'::jsonb)").fetchone() == ("array",)
    assert attacker.execute("SELECT pg_backend_pid()").fetchone() == (1,)


def job_locks(observer: psycopg.Connection[Any], pid: int) -> list[int]:
    """db_support.locks_of, read with names qualified (a trap pg_locks sits in
    public in some attacks)."""
    rows = observer.execute(
        """
        SELECT ((l.classid::bigint # %s) << 32) | l.objid::bigint
          FROM pg_catalog.pg_locks AS l
         WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.pid = %s AND l.granted
         ORDER BY 1
        """,
        [CONV, pid],
    ).fetchall()
    return [r[0] for r in rows]


def run_scenario(
    caller: psycopg.Connection[Any], observer: psycopg.Connection[Any]
) -> list[Any]:
    """The worker and enqueuer protocol end to end; returns a transcript with
    ids replaced by names and times by facts, and asserts the invariants on
    the way (so that a scenario broken in both runs still fails)."""
    out: list[Any] = []
    pid = caller.execute("SELECT pg_catalog.pg_backend_pid()").fetchone()[0]  # type: ignore[index]
    names: dict[int, str] = {}

    def q(statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        return caller.execute(statement, params).fetchall()

    def err(statement: str) -> str | None:
        try:
            caller.execute(statement)
        except psycopg.Error as error:
            return f"{error.sqlstate} {error.diag.message_primary}"
        return None

    def named(ids: list[int]) -> list[str]:
        return [names.get(i, f"?{i}") for i in ids]

    # Register and listen first, so the trigger has someone to tell.
    channel = q("SELECT conveyor.register_locker('{default}', '{NULL}', 'h', 7)")[0][0]
    assert channel == f"conveyor_worker_{pid}"
    out.append(
        (
            "registry",
            observer.execute(
                "SELECT pid = %s, queues, worker_priorities, max_priority FROM conveyor.lockers",
                [pid],
            ).fetchall(),
        )
    )
    caller.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    for name, statement in [
        ("a", "SELECT id FROM conveyor.enqueue('A', '[1]', priority => 10)"),
        (
            "s",
            "SELECT id FROM conveyor.enqueue('S', run_at => pg_catalog.now() + interval '1 hour')",
        ),
        ("b", "SELECT id FROM conveyor.enqueue('B', '[\"x\"]', priority => 20)"),
        ("c", "SELECT id FROM conveyor.enqueue('C', queue => 'other')"),
        ("d", "SELECT id FROM conveyor.enqueue('D', data => '{\"k\": 1}')"),
    ]:
        names[q(statement)[0][0]] = name
    notes = [n.payload for n in caller.notifies(timeout=0.2, stop_after=10)]
    out.append(("notifications", len(notes) > 0))

    out.append(
        (
            "bad enqueues",
            [
                err("SELECT conveyor.enqueue('X', '{}')"),
                err("SELECT conveyor.enqueue('X', data => '[]')"),
                err("SELECT conveyor.enqueue('')"),
                err("SELECT conveyor.enqueue(repeat('x', 501))"),
                err("SELECT conveyor.enqueue('X', queue => repeat('q', 101))"),
                err("SELECT conveyor.enqueue('X', priority => 40000)"),
                err(
                    "SELECT * FROM conveyor.enqueue_many("
                    '\'[{"job_class": "ok"}, {"job_class": ""}]\')'
                ),
            ],
        )
    )

    locked = [
        r[0] for r in q("SELECT id FROM conveyor.lock_jobs(ARRAY['default'], 10)")
    ]
    out.append(("locked", named(locked)))
    assert named(locked) == ["a", "b", "d"], named(locked)
    assert job_locks(observer, pid) == sorted(locked), "lock_jobs really took the locks"
    out.append(("held", named(sorted(q("SELECT conveyor.held_job_ids()")[0][0]))))

    a, b, d = locked
    out.append(("destroy a", q("SELECT conveyor.destroy_job(%s)", [a])))
    out.append(
        (
            "retry b",
            q(
                "SELECT error_count, pg_catalog.char_length(last_error_message),"
                " last_error_backtrace,"
                " run_at > pg_catalog.now() + interval '3 seconds',"
                " run_at < pg_catalog.now() + interval '5 seconds', expired_at IS NULL"
                " FROM conveyor.retry_job(%s, repeat('m', 2000), 'trace')",
                [b],
            ),
        )
    )
    finished = [r[0] for r in q("SELECT conveyor.finish_jobs(%s)", [[d]])]
    out.append(("finish d", named(finished)))
    c = next(i for i, n in names.items() if n == "c")
    out.append(("expire c", q("SELECT conveyor.expire_job(%s)", [c])))
    out.append(("locks left", named(job_locks(observer, pid))))
    assert job_locks(observer, pid) == []

    s = next(i for i, n in names.items() if n == "s")
    out.append(
        ("lock scheduled", q("SELECT id FROM conveyor.lock_jobs_by_id(%s)", [[s]]))
    )
    out.append(
        (
            "rows",
            observer.execute(
                "SELECT job_class, error_count, finished_at IS NOT NULL, expired_at IS NOT NULL"
                " FROM conveyor.jobs ORDER BY job_class"
            ).fetchall(),
        )
    )
    out.append(
        (
            "job_stats",
            q(
                "SELECT job_class, count, count_working, count_errored, highest_error_count"
                " FROM conveyor.job_stats()"
            ),
        )
    )
    out.append(
        (
            "queue_stats",
            q(
                "SELECT queue, ready, scheduled, working, errored, expired, finished"
                " FROM conveyor.queue_stats()"
            ),
        )
    )
    bulk = [
        r[0]
        for r in q(
            'SELECT * FROM conveyor.enqueue_many(\'[{"job_class": "M1"}, {"job_class": "M2",'
            ' "run_at": "2000-01-01T00:00:00Z"}]\')'
        )
    ]
    out.append(
        (
            "bulk",
            len(bulk),
            observer.execute(
                "SELECT job_class, args, data, run_at <= pg_catalog.now() FROM conveyor.jobs"
                " WHERE id = ANY(%s) ORDER BY id",
                [bulk],
            ).fetchall(),
        )
    )
    out.append(("unlock nothing", q("SELECT conveyor.unlock_jobs(%s)", [[s]])))
    out.append(("prune", q("SELECT conveyor.prune_lockers()")))
    out.append(("unregister", q("SELECT conveyor.unregister_locker()")))
    out.append(("version", q("SELECT conveyor.schema_version()")))
    return out


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_conveyor_functions_ignore_the_callers_search_path(
    new_db: Callable[[], str], attack: str
) -> None:
    # The reference transcript, with a clean path, in its own database.
    with (
        psycopg.connect(new_db(), autocommit=True) as caller,
        psycopg.connect(caller.info.dsn, autocommit=True) as observer,
    ):
        reference = run_scenario(caller, observer)
    if ATTACKS[attack] is None:
        return
    schema, path = ATTACKS[attack]  # type: ignore[misc]
    with psycopg.connect(new_db(), autocommit=True) as admin:
        plant(admin, schema)
        admin.execute("CREATE TEMP TABLE jobs (id bigint)")  # a temp look-alike too
        with psycopg.connect(admin.info.dsn, autocommit=True) as caller:
            caller.execute("CREATE TEMP TABLE jobs (id bigint)")
            caller.execute("CREATE TEMP TABLE workers (pid int)")
            caller.execute(sql.SQL("SET search_path = {}").format(sql.SQL(path)))
            trap_is_live(caller)
            attacked = run_scenario(caller, admin)
    assert attacked == reference


def test_the_traps_hijack_an_unpinned_copy(conn: psycopg.Connection[Any]) -> None:
    """Control: the body of conveyor.resolve_jobs (which destroy_jobs calls),
    without its SET search_path, destroys every job under the attack (the
    bigint = trap matches all rows), while the real function destroys the one
    it is given."""
    plant(conn, "evil")
    body = conn.execute(
        "SELECT prosrc FROM pg_proc"
        " WHERE oid = 'conveyor.resolve_jobs(text, bigint[], bigint[])'::regprocedure"
    ).fetchone()[0]  # type: ignore[index]
    conn.execute("CREATE SCHEMA unpinned")
    conn.execute(
        sql.SQL(
            "CREATE FUNCTION unpinned.resolve_jobs(action text, ids bigint[], held bigint[] DEFAULT NULL)"
            " RETURNS SETOF bigint"
            " LANGUAGE plpgsql AS {}"
        ).format(sql.Literal(body))
    )
    ids = [
        conn.execute("SELECT id FROM conveyor.enqueue('J')").fetchone()[0]
        for _ in range(4)
    ]  # type: ignore[index]
    conn.execute("SET search_path = evil, pg_catalog")
    assert conn.execute(
        "SELECT count(*) FROM conveyor.destroy_jobs(%s)", [[ids[0]]]
    ).fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone() == (3,)
    conn.execute("SELECT unpinned.resolve_jobs('destroy', %s)", [[ids[1]]])
    assert conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone() == (0,), (
        "the unpinned copy should have been hijacked into deleting every job"
    )


# Tiny helpers the planner inlines: a SET clause would forbid the inlining, so
# they have none. Their bodies are SQL-standard (RETURN ...), bound when they
# were created, so the caller's search_path cannot reach them.
INLINED = {
    "conveyor.concurrency_key_lock(text,text)",
    "conveyor.errors_append(jsonb,jsonb)",
    "conveyor.job_paused(conveyor.pauses[],text,text,text[])",
    "conveyor.job_state(timestamp with time zone,timestamp with time zone,boolean,timestamp with time zone,integer,timestamp with time zone)",
    "conveyor.job_state(timestamp with time zone,timestamp with time zone,boolean,timestamp with time zone,integer,timestamp with time zone,boolean)",
    "conveyor.job_limit(text)",
    "conveyor.job_lock_id(oid,oid)",
    "conveyor.job_lock_key1(bigint)",
    "conveyor.job_lock_key2(bigint)",
    "conveyor.sorted_array_contains(bigint[],bigint)",
    # flow control: SQL-standard bodies bound at creation, as the ones above
    "conveyor.concurrency_key_lock(text,text)",
    "conveyor.job_paused(conveyor.pauses[],text,text,text[])",
    # a constant (RETURN true/false), replaced by a trigger: see deploy/throttles.sql
    "conveyor.flow_in_use()",
}

HELPER_CALLS = (
    "SELECT conveyor.job_lock_key1(%(id)s), conveyor.job_lock_key2(%(id)s),"
    " conveyor.job_lock_id((conveyor.job_lock_key1(%(id)s)::bigint & 4294967295)::oid,"
    "                      (conveyor.job_lock_key2(%(id)s)::bigint & 4294967295)::oid),"
    " conveyor.sorted_array_contains('{1,5,9}', 5), conveyor.sorted_array_contains('{1,5,9}', 4)"
)


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_the_inlined_helpers_are_bound_at_creation(
    conn: psycopg.Connection[Any], attack: str
) -> None:
    """The unpinned helpers give the same answers under every attack; the same
    body as a string (parsed at call time) is hijacked (control)."""
    params = {"id": (7 << 32) | 42}
    clean = conn.execute(HELPER_CALLS, params).fetchone()
    assert clean == (1129270870 ^ 7, 42, (7 << 32) | 42, True, False)
    conn.execute("CREATE SCHEMA unbound")
    conn.execute(
        "CREATE FUNCTION unbound.key1(id bigint) RETURNS integer LANGUAGE sql IMMUTABLE"
        " AS $$ SELECT (id >> 32)::integer # 1129270870 $$"
    )
    where = ATTACKS[attack]
    if where is not None:
        plant(conn, where[0])
        conn.execute(sql.SQL("SET search_path = {}").format(sql.SQL(where[1])))
    assert conn.execute(HELPER_CALLS, params).fetchone() == clean
    if where is not None:
        assert conn.execute("SELECT unbound.key1(%(id)s)", params).fetchone() == (
            1129270870,
        ), "the control copy should have been hijacked by the >> trap"


def test_every_function_pins_search_path_to_pg_catalog_then_pg_temp(
    conn: psycopg.Connection[Any],
) -> None:
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text, p.proconfig FROM pg_proc AS p"
        " WHERE p.pronamespace = 'conveyor'::regnamespace ORDER BY 1"
    ).fetchall()
    assert rows
    bad = [
        (name, config)
        for name, config in rows
        if [c for c in (config or []) if c.startswith("search_path=")]
        != ["search_path=pg_catalog, pg_temp"]
        and not (name in INLINED and config is None)
    ]
    assert {name for name, config in rows if config is None} == INLINED
    assert bad == []
