"""No SQL is assembled from input strings.

SQL-looking strings go through every text parameter of the SQL API -- job
class, queue, args and data (values and keys), enqueue_many's keys, retry's
error message and backtrace, the registry's queues and hostname, lock_jobs's
queue array -- and come back verbatim, while a canary table, the job count,
the catalog and the clock show that nothing else ran. A scan of pg_proc shows
no function uses EXECUTE (dynamic SQL); should one ever need it, the scan
requires format() with %I/%L and no string concatenation.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

Connect = Callable[..., psycopg.Connection[Any]]

PAYLOADS = [
    "'; DROP TABLE public.canary; --",
    "x'); DELETE FROM public.canary; --",
    "'); INSERT INTO public.canary VALUES (666); --",
    "$$; DROP TABLE public.canary; $$",
    "$x$ || (SELECT pg_sleep(3)) || $x$",
    "' || pg_sleep(3) || '",
    '"; DROP TABLE public.canary; --',
    '"public"."canary"',
    'canary"; NOTIFY evil; --',
    "%I %L %s %%",
    "\\'; DROP TABLE public.canary; --",
    "E'\\x27'; DROP TABLE public.canary; --",
    "1; SET ROLE postgres; --",
    "default' OR '1'='1",
    "\u02bc; DROP TABLE public.canary; --",  # modifier letter apostrophe
    "\uff07); DROP TABLE public.canary; --",  # fullwidth apostrophe
]
SLOW = 2.0  # a payload's pg_sleep(3) that ran would show


@pytest.fixture
def canary(conn: psycopg.Connection[Any]) -> Callable[[], None]:
    conn.execute("CREATE TABLE public.canary (x int)")
    conn.execute("INSERT INTO public.canary VALUES (1)")
    relations = conn.execute("SELECT count(*) FROM pg_class").fetchone()
    user = conn.execute("SELECT current_user, session_user").fetchone()

    def still_alive() -> None:
        assert conn.execute("SELECT array_agg(x) FROM public.canary").fetchone() == ([1],)
        assert conn.execute("SELECT count(*) FROM pg_class").fetchone() == relations
        assert conn.execute("SELECT current_user, session_user").fetchone() == user

    return still_alive


def timed(conn: psycopg.Connection[Any], statement: Any, params: Any = None) -> list[Any]:
    start = time.monotonic()
    rows = conn.execute(statement, params).fetchall()
    assert time.monotonic() - start < SLOW, f"{statement!r} took long: did a payload run?"
    return rows


@pytest.mark.parametrize("payload", PAYLOADS)
def test_enqueue_stores_payloads_verbatim(
    conn: psycopg.Connection[Any], canary: Callable[[], None], payload: str
) -> None:
    args = [payload, {payload: payload}]
    data = {payload: [payload], "tags": [payload]}
    (job_id,) = timed(
        conn,
        "SELECT id FROM conveyor.enqueue(%s::text, %s::jsonb, queue => %s::text,"
        " data => %s::jsonb)",
        [payload, Jsonb(args), payload[:100], Jsonb(data)],
    )[0]
    ids = [
        r[0]
        for r in timed(
            conn,
            "SELECT * FROM conveyor.enqueue_many(%s::jsonb)",
            [
                Jsonb(
                    [{"job_class": payload, "queue": payload[:100], "args": args, "data": data}] * 2
                )
            ],
        )
    ]
    rows = conn.execute(
        "SELECT job_class, queue, args, data FROM conveyor.jobs WHERE id = ANY(%s) ORDER BY id",
        [[job_id, *ids]],
    ).fetchall()
    assert rows == [(payload, payload[:100], args, data)] * 3
    assert conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone() == (3,)
    stats = timed(conn, "SELECT job_class, count FROM conveyor.job_stats()")
    assert stats == [(payload, 3)]
    queues = timed(conn, "SELECT queue, ready FROM conveyor.queue_stats()")
    assert queues == [(payload[:100], 3)]
    canary()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_enqueue_many_unknown_key_is_quoted_in_the_error(
    conn: psycopg.Connection[Any], canary: Callable[[], None], payload: str
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue) as caught:
        timed(
            conn,
            "SELECT * FROM conveyor.enqueue_many(%s::jsonb)",
            [Jsonb([{"job_class": "J", payload: 1}])],
        )
    message = caught.value.diag.message_primary or ""
    assert "jobs[0]" in message
    # The key is quoted as a literal (%L): its quotes doubled, nothing run.
    assert "'" + payload.replace("'", "''") + "'" in message or "E'" in message, message
    assert conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone() == (0,)
    canary()


@pytest.mark.parametrize("payload", PAYLOADS)
def test_worker_text_parameters_store_payloads_verbatim(
    connect: Connect, canary: Callable[[], None], payload: str
) -> None:
    locker, admin = connect(), connect()
    queue = payload[:100]
    channel = timed(
        locker,
        "SELECT conveyor.register_locker(%s::text[], '{NULL}', %s::text, 1)",
        [[queue, "default"], payload],
    )[0][0]
    assert admin.execute("SELECT queues, hostname FROM conveyor.lockers").fetchall() == [
        ([queue, "default"], payload)
    ]
    locker.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
    (job_id,) = admin.execute(
        "SELECT id FROM conveyor.enqueue('J', queue => %s::text)", [queue]
    ).fetchone()  # type: ignore[misc]
    # The trigger's notification carries the queue name verbatim, as JSON.
    notes = list(locker.notifies(timeout=5, stop_after=1))
    assert len(notes) == 1
    announced = json.loads(notes[0].payload)
    assert announced["jobs"][0]["id"] == job_id
    assert announced["jobs"][0]["queue"] == queue

    locked = timed(locker, "SELECT id, queue FROM conveyor.lock_jobs(%s::text[], 5)", [[queue]])
    assert locked == [(job_id, queue)]
    retried = timed(
        locker,
        "SELECT last_error_message, last_error_backtrace FROM conveyor.retry_job(%s, %s, %s, 0)",
        [job_id, payload, payload * 3],
    )
    assert retried == [(payload, payload * 3)]
    # Queues that exist nowhere, built from the payload: just no jobs.
    assert (
        timed(locker, "SELECT id FROM conveyor.lock_jobs(%s::text[], 5)", [[payload + "x"]]) == []
    )
    assert timed(locker, "SELECT conveyor.unregister_locker()") == [(True,)]
    canary()


def test_injection_through_named_parameters_of_psql_style_callers(
    conn: psycopg.Connection[Any], canary: Callable[[], None]
) -> None:
    """The same payloads inlined as SQL literals (quote_literal'd), as a
    client in a language without bind parameters might send them."""
    for payload in PAYLOADS:
        literal = conn.execute("SELECT quote_literal(%s)", [payload]).fetchone()[0]  # type: ignore[index]
        timed(conn, f"SELECT conveyor.enqueue({literal}, queue => 'q')")
    rows = conn.execute("SELECT job_class FROM conveyor.jobs ORDER BY id").fetchall()
    assert [r[0] for r in rows] == PAYLOADS
    canary()


# -- dynamic SQL -------------------------------------------------------------------------

EXECUTE_RE = re.compile(r"\bEXECUTE\b(?P<rest>[^;]*)", re.IGNORECASE)


def unsafe_dynamic_sql(source: str) -> list[str]:
    """The EXECUTE statements in a PL/pgSQL body that could assemble SQL from
    input: every EXECUTE must run format() whose only placeholders are %I and
    %L (identifiers and literals quoted), with no || concatenation; USING
    parameters are fine. Returns the offending statements."""
    bad = []
    # Comments and string literals are not code.
    code = re.sub(r"--[^\n]*", "", source)
    for match in EXECUTE_RE.finditer(code):
        statement = match.group(0).strip()
        rest = match.group("rest")
        if re.match(r"\s*(FUNCTION|PROCEDURE)\b", rest, re.IGNORECASE):
            continue  # CREATE TRIGGER ... EXECUTE FUNCTION: not dynamic SQL
        call = re.match(r"\s*format\s*\(\s*(?P<q>'(?:[^']|'')*'|\$\w*\$.*?\$\w*\$)", rest, re.S)
        if call is None or "||" in rest.split("USING")[0]:
            bad.append(statement)
            continue
        placeholders = re.findall(r"%(?:\d+\$)?-?\d*([a-zA-Z%])", call.group("q"))
        if [p for p in placeholders if p not in ("I", "L", "%")]:
            bad.append(statement)
    return bad


@pytest.mark.parametrize(
    ("source", "unsafe"),
    [
        ("BEGIN EXECUTE 'SELECT * FROM ' || tbl; END", True),
        ("BEGIN EXECUTE format('SELECT * FROM %s', tbl); END", True),
        ("BEGIN EXECUTE format('SELECT * FROM %I WHERE q = %L', tbl, q); END", False),
        ("BEGIN EXECUTE format('SELECT * FROM %I', tbl) || ' WHERE true'; END", True),
        ("BEGIN EXECUTE format('SELECT $1 FROM %I', tbl) USING v; END", False),
        ("BEGIN execute query_text; END", True),
        ("BEGIN PERFORM 1; END", False),
        ("-- EXECUTE 'x' || y\nBEGIN PERFORM 1; END", False),
    ],
)
def test_the_dynamic_sql_scanner_itself(source: str, unsafe: bool) -> None:
    assert bool(unsafe_dynamic_sql(source)) is unsafe


def test_no_conveyor_function_assembles_sql_from_strings(conn: psycopg.Connection[Any]) -> None:
    rows = conn.execute(
        "SELECT p.oid::regprocedure::text, l.lanname, p.prosrc FROM pg_proc AS p"
        " JOIN pg_language AS l ON l.oid = p.prolang"
        " WHERE p.pronamespace = 'conveyor'::regnamespace"
    ).fetchall()
    assert len(rows) >= 20
    assert {lang for _, lang, _ in rows} <= {"sql", "plpgsql"}, "a language the scan cannot read"
    found = {name: unsafe_dynamic_sql(src) for name, _, src in rows if unsafe_dynamic_sql(src)}
    # index_bloat counts an index's live entries with the index's own
    # predicate (pg_get_expr of an index on a conveyor table: the schema
    # owner's text, never a caller's), which no format() placeholder can
    # quote: its one EXECUTE may have that one %s, the rest %I and USING.
    bloat = found.pop("conveyor.index_bloat(bigint,double precision)", [])
    assert len(bloat) == 1 and "%I.%I WHERE %s LIMIT $1" in bloat[0], bloat
    assert "candidate.predicate" in bloat[0] and "USING" in bloat[0], bloat
    assert found == {}
    # The dynamic statements: tg_flow__in_use replaces flow_in_use()'s body
    # with a boolean it computed (never text from a caller), and index_bloat's
    # count above. Any other must be a conscious change to this test.
    dynamic = sorted(name for name, _, src in rows if EXECUTE_RE.search(src))
    assert dynamic == [
        "conveyor.index_bloat(bigint,double precision)",
        "conveyor.tg_flow__in_use()",
    ]
