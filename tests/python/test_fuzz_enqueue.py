"""Property-based tests: random input thrown at conveyor.enqueue and
conveyor.enqueue_many.

The property (issue 3, "Fuzzed input"): every call either

- fails with a clean error -- a psycopg error whose SQLSTATE is in
  ``ENQUEUE_SQLSTATES`` (documented in docs/reliability.md), or one of the two
  client-side refusals in ``is_client_side_refusal`` -- and inserts nothing, or
- inserts rows that read back exactly as given (defaults for what was left out).

Beyond "the code is in the set", an oracle below predicts the exact SQLSTATE
from the input (following the rule order of conveyor.job_problem and
conveyor.job_json_problem), so a check that is skipped or reordered in SQL
fails here too.

Examples per test come from a hypothesis profile: ``conveyor-ci`` (default,
the file runs in well under a minute) or ``conveyor-soak`` (many more), chosen
with CONVEYOR_HYPOTHESIS_PROFILE.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import event as _event
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from psycopg.types.json import Jsonb

# Every SQLSTATE a call of enqueue / enqueue_many may fail with on bad input.
# docs/reliability.md lists the same set with the cause of each code.
ENQUEUE_SQLSTATES = frozenset(
    {
        "22004",  # null_value_not_allowed: a NULL field (or JSON null in enqueue_many)
        "22023",  # invalid_parameter_value: empty name, args/data of the wrong JSON type,
        #           negative maximum_retry_count, bad bulk element or key
        "22003",  # numeric_value_out_of_range: priority outside 0..32767, an integer too big
        "22001",  # string_data_right_truncation: job_class > 500 or queue > 100 characters
        "22P02",  # invalid_text_representation: JSON that is not JSON (NaN, Infinity, a lone
        #           surrogate escape), a non-integer number in enqueue_many
        "22P05",  # untranslatable_character: \u0000 inside JSON (jsonb cannot hold it)
        "22007",  # invalid_datetime_format: an unparseable run_at string
        "22008",  # datetime_field_overflow: a run_at outside PostgreSQL's range
    }
)

# -- hypothesis profiles ---------------------------------------------------------

_COMMON = {
    "deadline": None,
    # One database per test function serves all its examples (cloning one per
    # example would dominate the run), hence function_scoped_fixture.
    "suppress_health_check": [
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
}
settings.register_profile("conveyor-ci", max_examples=250, **_COMMON)
settings.register_profile("conveyor-soak", max_examples=5000, **_COMMON)
PROFILE = os.environ.get("CONVEYOR_HYPOTHESIS_PROFILE", "conveyor-ci")
FUZZ = settings(settings.get_profile(PROFILE))
# Bulk calls carry up to a few dozen jobs each: fewer examples.
FUZZ_BULK = settings(FUZZ, max_examples=max(1, FUZZ.max_examples * 3 // 5))


def event(value: str) -> None:
    """hypothesis.event, also callable from the plain (parametrized) tests."""
    with contextlib.suppress(InvalidArgument):
        _event(value)


# -- strategies ---------------------------------------------------------------------

# Characters that break naive code: zero-width and direction marks, BOM,
# noncharacters, combining marks, astral planes, the last code point,
# Turkish dotted I (case mapping changes length), line/paragraph separators.
ODD_CHARS = (
    "\u200b\u200d\u202e\u2066\ufeff\ufffe\uffff\u0301\u0130\u2028\u2029\u00a0"
    "\U0001f600\U0001f1fa\U0001f1f8\U000e0001\U0010ffff\u0000\t\n\r\\'\"%$;"
)
SQL_LOOKING = [
    "'; DROP TABLE conveyor.jobs; --",
    "x'); DELETE FROM conveyor.jobs; --",
    '" OR 1=1 --',
    "$$; SELECT pg_sleep(10); $$",
    "%s %(x)s {} {0}",
    "\\x00\\u0000",
    "Robert'); DROP TABLE students;--",
]


def names(max_size: int = 20) -> st.SearchStrategy[str]:
    """Strings for job_class / queue: ordinary, odd, SQL-looking, near the limits."""
    return st.one_of(
        st.text(max_size=max_size),  # every code point but surrogates, NUL included
        st.text(alphabet=st.sampled_from(ODD_CHARS), max_size=max_size),
        st.sampled_from(SQL_LOOKING),
        st.builds(
            lambda char, n: char * n,
            st.sampled_from(["x", "\u00e9", "\U0001f600", "\u0301"]),
            st.sampled_from([0, 1, 99, 100, 101, 499, 500, 501, 10_000]),
        ),
        # A lone surrogate: a Python str that is not valid Unicode.
        st.just("bad\ud800surrogate"),
    )


def json_text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=12),
        st.text(alphabet=st.sampled_from(ODD_CHARS), max_size=12),
        st.sampled_from(SQL_LOOKING),
        st.sampled_from(["lone \udc00 low", "lone \ud83d high"]),
        st.builds(lambda n: "h" * n, st.sampled_from([1_000, 100_000])),
    )


JSON_NON_STRINGS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**60), max_value=10**60),
    st.floats(),  # NaN and +-Infinity included: not JSON
    st.floats(allow_nan=False, allow_infinity=False),
)
JSON_SCALARS = st.one_of(JSON_NON_STRINGS, json_text())
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(json_text(), children, max_size=4),
    ),
    max_leaves=12,
)

# Values that are valid JSON for jsonb (no NaN, no NUL, no lone surrogate),
# still with odd Unicode, huge and tiny numbers, and SQL-looking text.
CLEAN_TEXT = st.one_of(
    st.text(alphabet=st.characters(exclude_characters="\x00"), max_size=12),
    st.text(alphabet=st.sampled_from(ODD_CHARS.replace("\x00", "")), max_size=12),
    st.sampled_from(SQL_LOOKING),
)
CLEAN_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        CLEAN_TEXT,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(CLEAN_TEXT, children, max_size=4)
    ),
    max_leaves=12,
)
CLEAN_ARRAYS = st.lists(CLEAN_VALUES, max_size=5)
CLEAN_OBJECTS = st.dictionaries(CLEAN_TEXT, CLEAN_VALUES, max_size=5)
JSON_ARRAYS = st.one_of(CLEAN_ARRAYS, st.lists(JSON_VALUES, max_size=5))
JSON_OBJECTS = st.one_of(CLEAN_OBJECTS, st.dictionaries(json_text(), JSON_VALUES, max_size=5))
GOOD_NAMES = st.one_of(
    st.text(alphabet=st.characters(exclude_characters="\x00"), min_size=1, max_size=30),
    st.text(alphabet=st.sampled_from(ODD_CHARS.replace("\x00", "")), min_size=1, max_size=30),
    st.sampled_from(SQL_LOOKING),
)

# Offsets of real time zones are whole minutes within +-14 h; Python allows
# up to +-23:59, which PostgreSQL cannot parse as text -- the driver sends
# datetimes in a form that survives it, so those are fuzzed too.
WHOLE_MINUTE_ZONES = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
)
DATETIMES = st.one_of(
    st.datetimes(timezones=WHOLE_MINUTE_ZONES),
    st.sampled_from(
        [
            datetime.min.replace(tzinfo=timezone(timedelta(hours=14))),  # year 0 in UTC
            datetime.max.replace(tzinfo=timezone(timedelta(hours=-14))),  # year 10000 in UTC
            datetime(1970, 1, 1, tzinfo=UTC),
            datetime(2038, 1, 19, 3, 14, 8, tzinfo=UTC),
        ]
    ),
)
GARBAGE_TIMESTAMPS = st.one_of(
    st.builds(lambda s: "not a date " + s, st.text(max_size=10)),
    st.sampled_from(["", " ", "2020-13-01", "2020-02-30", "99-99-99", "1 January 20x"]),
)
OUT_OF_RANGE_TIMESTAMPS = st.sampled_from(
    ["300000-01-01T00:00:00+00:00", "4714-11-23 BC", "294277-01-01 00:00:00+00"]
)
SPECIAL_TIMESTAMPS = st.sampled_from(["infinity", "-infinity"])

INTS = st.one_of(
    st.integers(min_value=-5, max_value=40_000),
    st.integers(),
    st.sampled_from(
        [0, 32767, 32768, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63, -(2**63) - 1]
    ),
)


FIELDS = ("job_class", "args", "queue", "priority", "run_at", "data", "maximum_retry_count")


class _SqlNull:
    """SQL NULL for a jsonb parameter (Python None there means JSON null)."""

    def __repr__(self) -> str:
        return "SQL_NULL"


SQL_NULL = _SqlNull()
OMIT = object()  # leave the parameter out: its SQL default applies


def maybe(strategy: st.SearchStrategy[Any], null: Any = None) -> st.SearchStrategy[Any]:
    """The strategy, or NULL, or the parameter left out."""
    return st.one_of(strategy, st.just(null), st.just(OMIT))


def _omittable(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, st.just(OMIT))


# Mostly valid calls (every field valid or left out), so that the read-back
# half of the property is exercised as much as the error half ...
GOOD_ENQUEUE_CALLS = st.fixed_dictionaries(
    {
        "job_class": GOOD_NAMES.filter(lambda n: len(n) <= 500),
        "args": _omittable(CLEAN_ARRAYS),
        "queue": _omittable(GOOD_NAMES.filter(lambda n: len(n) <= 100)),
        "priority": _omittable(st.integers(min_value=0, max_value=32767)),
        "run_at": _omittable(st.one_of(DATETIMES, SPECIAL_TIMESTAMPS)),
        "data": _omittable(CLEAN_OBJECTS),
        "maximum_retry_count": _omittable(st.integers(min_value=0, max_value=2**31 - 1)),
    }
)
# ... and wild ones, where each field may be anything.
WILD_ENQUEUE_CALLS = st.fixed_dictionaries(
    {
        "job_class": st.one_of(names(), st.none()),
        "args": maybe(st.one_of(JSON_ARRAYS, JSON_VALUES), SQL_NULL),
        "queue": maybe(names()),
        "priority": maybe(INTS),
        "run_at": maybe(
            st.one_of(DATETIMES, SPECIAL_TIMESTAMPS, GARBAGE_TIMESTAMPS, OUT_OF_RANGE_TIMESTAMPS)
        ),
        "data": maybe(st.one_of(JSON_OBJECTS, JSON_VALUES), SQL_NULL),
        "maximum_retry_count": maybe(INTS),
    }
)
# One wild field in an otherwise valid call: each rule is met on its own.
ONE_BAD_FIELD_CALLS = st.builds(
    lambda good, wild, field: {**good, field: wild[field]},
    GOOD_ENQUEUE_CALLS,
    WILD_ENQUEUE_CALLS,
    st.sampled_from(FIELDS),
)
ENQUEUE_CALLS = st.one_of(GOOD_ENQUEUE_CALLS, ONE_BAD_FIELD_CALLS, WILD_ENQUEUE_CALLS)

# -- the oracle --------------------------------------------------------------------


def _walk(value: Any) -> Any:
    yield value
    if isinstance(value, list):
        for item in value:
            yield from _walk(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _walk(item)


def json_cast_errors(value: Any) -> set[str]:
    """SQLSTATEs the ::jsonb cast of this value raises (empty: it casts)."""
    errors = set()
    for item in _walk(value):
        if isinstance(item, float) and (math.isnan(item) or item in (float("inf"), float("-inf"))):
            errors.add("22P02")  # json.dumps writes NaN/Infinity: not JSON
        elif isinstance(item, str):
            if "\x00" in item:
                errors.add("22P05")
            if any(0xD800 <= ord(c) <= 0xDFFF for c in item):
                errors.add("22P02")  # an unpaired surrogate escape
    return errors


def is_client_side_refusal(error: BaseException, params: list[Any]) -> bool:
    """The driver refuses, before sending, a text parameter PostgreSQL cannot
    hold: NUL (psycopg.DataError without SQLSTATE) or a lone surrogate (the
    str is not valid Unicode: UnicodeEncodeError)."""
    texts = [p for p in params if isinstance(p, str)]
    if isinstance(error, UnicodeEncodeError):
        return any(any(0xD800 <= ord(c) <= 0xDFFF for c in t) for t in texts)
    if isinstance(error, psycopg.DataError) and error.sqlstate is None:
        return "NUL" in str(error) and any("\x00" in t for t in texts)
    return False


def _is_json_type(value: Any, kind: str) -> bool:
    if kind == "array":
        return isinstance(value, list)
    return isinstance(value, dict)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _text_problem(value: str | None, field: str, longest: int) -> tuple[str, str] | None:
    """The rules of a text field: not null, not empty, at most ``longest`` long."""
    if value is None:
        return "22004", field
    if value == "":
        return "22023", field
    if len(value) > longest:
        return "22001", field
    return None


def job_problem(fields: dict[str, Any]) -> tuple[str, str] | None:
    """conveyor.job_problem in Python: (SQLSTATE, field) of the first broken
    rule, in the same order, or None. Values here are already cast."""
    if problem := _text_problem(fields["job_class"], "job_class", 500):
        return problem
    args = fields["args"]
    if args is SQL_NULL:
        return "22004", "args"
    if not _is_json_type(args, "array"):
        return "22023", "args"
    if problem := _text_problem(fields["queue"], "queue", 100):
        return problem
    if fields["priority"] is None:
        return "22004", "priority"
    if not 0 <= fields["priority"] <= 32767:
        return "22003", "priority"
    if fields["run_at"] is None:
        return "22004", "run_at"
    if fields["data"] is SQL_NULL:
        return "22004", "data"
    if not _is_json_type(fields["data"], "object"):
        return "22023", "data"
    if fields["maximum_retry_count"] is None:
        return "22004", "maximum_retry_count"
    if fields["maximum_retry_count"] < 0:
        return "22023", "maximum_retry_count"
    return None


def run_at_cast_error(value: Any) -> str | None:
    if not isinstance(value, str) or value in ("infinity", "-infinity"):
        return None
    if value in ("300000-01-01T00:00:00+00:00", "4714-11-23 BC", "294277-01-01 00:00:00+00"):
        return "22008"
    if value.startswith("not a date ") or value in ("", " ", "1 January 20x"):
        return "22007"
    if value in ("2020-13-01", "2020-02-30", "99-99-99"):
        return "22008"
    return None  # an ISO string written by datetime.isoformat()


DEFAULTS = {
    "args": [],
    "queue": "default",
    "priority": 100,
    "data": {},
    "maximum_retry_count": 15,
}


def expected_enqueue_error(call: dict[str, Any]) -> set[str] | None:
    """The SQLSTATEs enqueue(**call) may raise, or None when it must succeed."""
    casts: set[str] = set()
    for name in ("args", "data"):
        value = call[name]
        if value is not OMIT and value is not SQL_NULL:
            casts |= json_cast_errors(value)
    for name in ("priority", "maximum_retry_count"):
        value = call[name]
        if value is not OMIT and value is not None and not -(2**31) <= value < 2**31:
            casts.add("22003")  # the ::integer cast
    if call["run_at"] is not OMIT and (code := run_at_cast_error(call["run_at"])):
        casts.add(code)
    if casts:
        # Parameters are cast before the function runs, in no promised order.
        return casts
    fields = {k: (DEFAULTS.get(k, "now") if v is OMIT else v) for k, v in call.items()}
    problem = job_problem(fields)
    return {problem[0]} if problem else None


# -- reading back ---------------------------------------------------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def exact_json(value: Any) -> Any:
    """A JSON value with every number as a Decimal, so that a float written as
    1.7976931348623157e+308 equals the integer jsonb prints for it."""
    return json.loads(json.dumps(value), parse_float=Decimal, parse_int=Decimal)


def exact_json_text(text: str) -> Any:
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def epoch_micros(value: Any) -> Decimal:
    """run_at as PostgreSQL's exact epoch microseconds (+-Infinity included)."""
    if isinstance(value, datetime):
        return Decimal((value - EPOCH) // timedelta(microseconds=1))
    if value == "infinity":
        return Decimal("Infinity")
    if value == "-infinity":
        return Decimal("-Infinity")
    return Decimal((datetime.fromisoformat(value) - EPOCH) // timedelta(microseconds=1))


READ_BACK = """
    SELECT job_class, args::text, queue, priority, extract(epoch FROM run_at) * 1000000,
           run_at = created_at, data::text, maximum_retry_count,
           error_count, finished_at, expired_at, last_error_message
      FROM conveyor.jobs WHERE id = %s
"""


def assert_reads_back(conn: psycopg.Connection[Any], job_id: int, given: dict[str, Any]) -> None:
    row = conn.execute(READ_BACK, [job_id]).fetchone()
    assert row is not None, f"job {job_id} was returned but is not in the table"
    (jc, args, queue, priority, run_at_us, run_at_is_now, data, mrc, errors, fin, exp, msg) = row
    want = {k: (DEFAULTS.get(k) if v is OMIT else v) for k, v in given.items()}
    assert jc == want["job_class"]
    assert queue == want["queue"]
    assert priority == want["priority"]
    assert mrc == want["maximum_retry_count"]
    assert exact_json_text(args) == exact_json(want["args"])
    assert exact_json_text(data) == exact_json(want["data"])
    if given["run_at"] is OMIT:
        assert run_at_is_now, "run_at defaults to now() (the enqueueing transaction's time)"
    else:
        assert run_at_us == epoch_micros(given["run_at"])
    assert (errors, fin, exp, msg) == (0, None, None, None)


def count_jobs(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone()
    assert row is not None
    return int(row[0])


def assert_connection_usable(conn: psycopg.Connection[Any]) -> None:
    assert conn.execute("SELECT 1").fetchone() == (1,)


# -- enqueue ---------------------------------------------------------------------------

CASTS = {
    "job_class": "%s::text",
    "args": "%s::jsonb",
    "queue": "%s::text",
    "priority": "%s::integer",
    "run_at": "%s::timestamptz",
    "data": "%s::jsonb",
    "maximum_retry_count": "%s::integer",
}


def enqueue_statement(call: dict[str, Any]) -> tuple[str, list[Any]]:
    given = {k: v for k, v in call.items() if v is not OMIT}
    sql = "SELECT id FROM conveyor.enqueue({})".format(
        ", ".join(f"{k} => {CASTS[k]}" for k in given)
    )
    params: list[Any] = []
    for name, value in given.items():
        if name in ("args", "data"):
            params.append(None if value is SQL_NULL else Jsonb(value))
        else:
            params.append(value)
    return sql, params


def check_enqueue(conn: psycopg.Connection[Any], call: dict[str, Any]) -> None:
    expected = expected_enqueue_error(call)
    statement, params = enqueue_statement(call)
    before = count_jobs(conn)
    try:
        row = conn.execute(statement, params).fetchone()
    except (psycopg.Error, UnicodeEncodeError) as error:
        event(f"enqueue: {getattr(error, 'sqlstate', None) or type(error).__name__}")
        if is_client_side_refusal(error, params):
            pass
        else:
            assert isinstance(error, psycopg.Error), error
            assert error.sqlstate in ENQUEUE_SQLSTATES, (error.sqlstate, str(error))
            assert expected is not None, f"enqueue({call!r}) should succeed, got {error!r}"
            assert error.sqlstate in expected, (error.sqlstate, expected, str(error))
        assert count_jobs(conn) == before, "a failed enqueue inserted a row"
        assert_connection_usable(conn)
        return
    event("enqueue: inserted")
    assert expected is None, f"enqueue({call!r}) should fail with {expected}, returned {row}"
    assert row is not None
    assert count_jobs(conn) == before + 1
    assert_reads_back(conn, row[0], call)


@FUZZ
@given(call=ENQUEUE_CALLS)
def test_enqueue_reads_back_or_fails_cleanly(
    conn: psycopg.Connection[Any], call: dict[str, Any]
) -> None:
    check_enqueue(conn, call)


@FUZZ
@given(
    call=ENQUEUE_CALLS.map(lambda c: {**c, "args": c["args"] if c["args"] is not SQL_NULL else []})
)
def test_enqueue_field_errors_name_the_field(
    conn: psycopg.Connection[Any], call: dict[str, Any]
) -> None:
    """A rule conveyor itself checks (not a cast) raises a message naming the field."""
    assume(expected_enqueue_error(call) is not None)
    statement, params = enqueue_statement(call)
    with pytest.raises((psycopg.Error, UnicodeEncodeError)) as caught:
        conn.execute(statement, params)
    error = caught.value
    if is_client_side_refusal(error, params):
        return
    assert isinstance(error, psycopg.Error)
    fields = {k: (DEFAULTS.get(k, "now") if v is OMIT else v) for k, v in call.items()}
    problem = job_problem(fields)
    message = error.diag.message_primary or ""
    if message.startswith("conveyor.enqueue:"):
        assert problem is not None, message
        code, field = problem
        assert error.sqlstate == code
        assert field in message, (field, message)


# -- enqueue_many -------------------------------------------------------------------------

BULK_KEYS = FIELDS

ISO_RUN_ATS = st.datetimes(
    timezones=st.builds(
        lambda m: timezone(timedelta(minutes=m)), st.integers(min_value=-14 * 60, max_value=14 * 60)
    )
).map(datetime.isoformat)

GOOD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "job_class": GOOD_NAMES.filter(lambda n: len(n) <= 500),
    "args": CLEAN_ARRAYS,
    "queue": GOOD_NAMES.filter(lambda n: len(n) <= 100),
    "priority": st.integers(min_value=0, max_value=32767),
    "run_at": st.one_of(ISO_RUN_ATS, SPECIAL_TIMESTAMPS),
    "data": CLEAN_OBJECTS,
    "maximum_retry_count": st.integers(min_value=0, max_value=2**31 - 1),
}
ANY_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "job_class": st.one_of(names(), JSON_SCALARS),
    "args": JSON_VALUES,
    "queue": st.one_of(names(), JSON_SCALARS),
    "priority": st.one_of(INTS, st.floats(), JSON_SCALARS),
    "run_at": st.one_of(
        ISO_RUN_ATS,
        SPECIAL_TIMESTAMPS,
        GARBAGE_TIMESTAMPS,
        OUT_OF_RANGE_TIMESTAMPS,
        JSON_NON_STRINGS,
    ),
    "data": JSON_VALUES,
    "maximum_retry_count": st.one_of(INTS, st.floats(), JSON_SCALARS),
}


@st.composite
def bulk_element(draw: st.DrawFn, wild: bool) -> Any:
    if wild and draw(st.integers(0, 9)) == 0:
        return draw(JSON_VALUES)  # maybe not even an object
    values = ANY_VALUES if wild else GOOD_VALUES
    keys = draw(st.lists(st.sampled_from(BULK_KEYS[1:]), unique=True))
    if not wild or draw(st.integers(0, 9)) > 0:
        keys.append("job_class")
    element = {key: draw(values[key]) for key in keys}
    if wild and draw(st.integers(0, 14)) == 0:
        element[draw(json_text().filter(lambda k: k not in BULK_KEYS))] = draw(JSON_SCALARS)
    return element


BULK_CALLS = st.one_of(
    st.lists(bulk_element(wild=False), max_size=20),
    st.lists(st.one_of(bulk_element(wild=False), bulk_element(wild=True)), max_size=20),
    st.lists(bulk_element(wild=True), min_size=1, max_size=5),
    JSON_VALUES,  # not an array at all
)


def jsonb_key_order(keys: Any) -> list[str]:
    """jsonb stores object keys shortest first, then by bytes."""
    return sorted(keys, key=lambda k: (len(k.encode()), k.encode()))  # valid UTF-8 here


def _exact_number(value: Any) -> Decimal:
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def bulk_element_error(element: Any) -> set[str] | None:
    """conveyor.job_json_problem in Python: the SQLSTATEs possible for this
    element, or None when it is a valid job."""
    if not isinstance(element, dict):
        return {"22023"}
    for key in jsonb_key_order(element):
        kind = _json_type(element[key])
        if key not in BULK_KEYS:
            return {"22023"}
        if kind == "null":
            return {"22004"}
        if key in ("job_class", "queue", "run_at") and kind != "string":
            return {"22023"}
        if key in ("priority", "maximum_retry_count") and kind != "number":
            return {"22023"}
    fields: dict[str, Any] = {
        "job_class": element.get("job_class"),
        "args": element.get("args", []),
        "queue": element.get("queue", "default"),
        "priority": 100,
        "run_at": "now",
        "data": element.get("data", {}),
        "maximum_retry_count": 15,
    }
    if "priority" in element:
        value = element["priority"]
        if not 0 <= _exact_number(value) <= 32767:
            return {"22003"}
        if isinstance(value, float):
            return {"22P02"}  # jsonb prints it with a decimal point: not an integer
        fields["priority"] = value
    if "maximum_retry_count" in element:
        value = element["maximum_retry_count"]
        if isinstance(value, float):
            return {"22P02", "22003"}
        if not -(2**31) <= value < 2**31:
            return {"22003"}
        fields["maximum_retry_count"] = value
    if "run_at" in element:
        if code := run_at_cast_error(element["run_at"]):
            return {code}
        fields["run_at"] = element["run_at"]
    problem = job_problem(fields)
    return {problem[0]} if problem else None


def check_enqueue_many(conn: psycopg.Connection[Any], jobs: Any) -> None:
    before = count_jobs(conn)
    casts = json_cast_errors(jobs)
    faults: list[tuple[int, set[str]]] = []
    if isinstance(jobs, list) and not casts:
        for index, element in enumerate(jobs):
            if (codes := bulk_element_error(element)) is not None:
                faults.append((index, codes))
    try:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM conveyor.enqueue_many(%s::jsonb) AS e(id)", [Jsonb(jobs)]
            ).fetchall()
        ]
    except psycopg.Error as error:
        event(f"enqueue_many: {error.sqlstate}")
        assert error.sqlstate in ENQUEUE_SQLSTATES, (error.sqlstate, str(error))
        message = error.diag.message_primary or ""
        if casts:
            assert error.sqlstate in casts, (error.sqlstate, casts, message)
        elif not isinstance(jobs, list):
            assert error.sqlstate == "22023", message
        else:
            assert faults, f"enqueue_many({jobs!r}) should succeed, got {error!r}"
            index, codes = faults[0]
            assert error.sqlstate in codes, (index, codes, error.sqlstate, message)
            assert f"jobs[{index}]" in message, (index, message)
        assert count_jobs(conn) == before, "a failed enqueue_many inserted rows"
        assert_connection_usable(conn)
        return
    event(f"enqueue_many: inserted {'0' if not jobs else '1+'}")
    assert not casts and isinstance(jobs, list) and not faults, (
        f"enqueue_many should have failed: casts={casts} faults={faults}"
    )
    assert len(ids) == len(jobs)
    assert ids == sorted(ids), "ids come back in input order, and identities increase"
    assert count_jobs(conn) == before + len(jobs)
    for job_id, element in zip(ids, jobs, strict=True):
        assert_reads_back(conn, job_id, {k: element.get(k, OMIT) for k in BULK_KEYS})


@FUZZ_BULK
@given(jobs=BULK_CALLS)
def test_enqueue_many_reads_back_or_inserts_nothing(
    conn: psycopg.Connection[Any], jobs: Any
) -> None:
    check_enqueue_many(conn, jobs)


# -- explicit edge cases (not left to chance) ---------------------------------------------


@pytest.mark.parametrize(
    ("call", "code"),
    [
        ({"job_class": "x" * 500}, None),
        ({"job_class": "\U0001f600" * 500}, None),  # 2,000 bytes, 500 characters
        ({"job_class": "\U0001f600" * 501}, "22001"),
        ({"job_class": "J", "queue": "\u00e9" * 100}, None),
        ({"job_class": "J", "queue": "\u00e9" * 101}, "22001"),
        ({"job_class": "J", "priority": 32767}, None),
        ({"job_class": "J", "priority": 32768}, "22003"),
        ({"job_class": "J", "priority": -1}, "22003"),
        ({"job_class": "J", "priority": 2**31}, "22003"),
        ({"job_class": "J", "maximum_retry_count": 0}, None),
        ({"job_class": "J", "maximum_retry_count": -1}, "22023"),
        ({"job_class": "J", "run_at": "infinity"}, None),
        ({"job_class": "J", "run_at": "-infinity"}, None),
        ({"job_class": "J", "run_at": "300000-01-01T00:00:00+00:00"}, "22008"),
        ({"job_class": "J", "args": [float("nan")]}, "22P02"),
        ({"job_class": "J", "args": ["\x00"]}, "22P05"),
        ({"job_class": "J", "data": {"\x00": 1}}, "22P05"),
        ({"job_class": "J", "args": ["\udfff"]}, "22P02"),
        ({"job_class": "J", "args": [1e308, -1e-308, 5e-324, 10**100]}, None),
        ({"job_class": "J", "args": {"not": "an array"}}, "22023"),
        ({"job_class": "J", "args": None}, "22023"),  # JSON null, not SQL NULL
        ({"job_class": "J", "args": SQL_NULL}, "22004"),
        ({"job_class": "J", "data": []}, "22023"),
        ({"job_class": None}, "22004"),
        ({"job_class": ""}, "22023"),
    ],
)
def test_enqueue_edges(
    conn: psycopg.Connection[Any], call: dict[str, Any], code: str | None
) -> None:
    full = {k: call.get(k, OMIT) for k in CASTS}
    assert (expected_enqueue_error(full) or {None}) == {code}, "the oracle agrees with the table"
    check_enqueue(conn, full)


@pytest.mark.parametrize("text", ["nul\x00inside", "\x00", "lone\ud800"])
@pytest.mark.parametrize("field", ["job_class", "queue"])
def test_text_the_driver_cannot_send_is_refused_cleanly(
    conn: psycopg.Connection[Any], field: str, text: str
) -> None:
    call = dict.fromkeys(CASTS, OMIT) | {"job_class": "J", field: text}
    statement, params = enqueue_statement(call)
    with pytest.raises((psycopg.DataError, UnicodeEncodeError)) as caught:
        conn.execute(statement, params)
    assert is_client_side_refusal(caught.value, params)
    assert count_jobs(conn) == 0
    assert_connection_usable(conn)


@pytest.mark.slow
def test_huge_arguments_read_back(conn: psycopg.Connection[Any]) -> None:
    big = "\U0001f600\u00e9x" * 1_000_000  # 3 M characters, 7 MB of UTF-8
    call = dict.fromkeys(CASTS, OMIT) | {
        "job_class": "Big",
        "args": [big, list(range(100_000)), {"k" * 10_000: big[:1000]}],
        "data": {"tags": ["t"] * 10_000},
    }
    check_enqueue(conn, call)
    check_enqueue_many(conn, [{"job_class": "Big", "args": [big]}] * 3)


def test_a_bad_last_element_inserts_nothing(conn: psycopg.Connection[Any]) -> None:
    jobs: list[Any] = [{"job_class": "Ok", "args": [i]} for i in range(2_000)]
    for bad, code in [
        ({"job_class": "Bad", "priority": 40_000}, "22003"),
        ({"job_class": "Bad", "unknown": 1}, "22023"),
        ({"job_class": "Bad", "run_at": "yesterday-ish"}, "22007"),
        ({"job_class": ""}, "22023"),
        ("not an object", "22023"),
        ({"args": []}, "22004"),
    ]:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SELECT * FROM conveyor.enqueue_many(%s::jsonb)", [Jsonb([*jobs, bad])])
        assert caught.value.sqlstate == code, str(caught.value)
        assert "jobs[2000]" in (caught.value.diag.message_primary or "")
        assert count_jobs(conn) == 0
    # The same inside the caller's transaction: the failed statement leaves
    # nothing behind for a savepoint rollback to miss.
    with conn.transaction():
        with pytest.raises(psycopg.Error), conn.transaction():
            conn.execute(
                "SELECT * FROM conveyor.enqueue_many(%s::jsonb)",
                [Jsonb([*jobs, {"job_class": "Bad", "priority": -1}])],
            )
        assert count_jobs(conn) == 0
        conn.execute("SELECT * FROM conveyor.enqueue_many(%s::jsonb)", [Jsonb(jobs[:10])])
    assert count_jobs(conn) == 10


def test_null_and_non_array_bulk_arguments(conn: psycopg.Connection[Any]) -> None:
    for value, code in [(None, "22004"), (Jsonb({}), "22023"), (Jsonb("x"), "22023")]:
        with pytest.raises(psycopg.Error) as caught:
            conn.execute("SELECT * FROM conveyor.enqueue_many(%s::jsonb)", [value])
        assert caught.value.sqlstate == code
    assert conn.execute("SELECT count(*) FROM conveyor.enqueue_many('[]')").fetchone() == (0,)
