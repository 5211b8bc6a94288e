"""Property-based tests of `conveyor enqueue`'s arguments.

Random JOB_CLASS, ARGS_JSON, --queue, --priority, --run-at, --data and
--maximum-retry-count, through click's CliRunner (many examples) and as a real
subprocess (a few, including bytes that are not UTF-8, as a shell can pass
them). Property: either exit status 0, the new id on stdout and a row that
reads back as given; or a non-zero exit status with a clear error line on
stderr (``conveyor: error: ...``, or click's ``Error: ...`` for a malformed
option) -- never a traceback, never a row.

argv cannot carry NUL, so the strategies leave it out of arguments; a NUL
*inside JSON* (\\u0000) is fuzzed. Bytes that are not UTF-8 reach Python as
lone surrogates (surrogateescape) and are fuzzed as such.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from test_fuzz_enqueue import FUZZ, SQL_LOOKING, exact_json

from conveyor.cli import cli

NO_NUL = st.characters(exclude_characters="\x00")
ARG_TEXT = st.one_of(
    st.text(NO_NUL, max_size=20),
    st.sampled_from(SQL_LOOKING),
    st.sampled_from(["", " ", "-", "--", "--queue", "-h", "\ud800", "caf\udce9", "\u202e"]),
    st.builds(lambda n: "x" * n, st.sampled_from([100, 101, 500, 501])),
)
JSON_TEXT = st.one_of(
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8)),
        lambda c: st.one_of(
            st.lists(c, max_size=3), st.dictionaries(st.text(max_size=5), c, max_size=3)
        ),
        max_leaves=8,
    ).map(json.dumps),
    ARG_TEXT,
    st.sampled_from(["[1,", "{]", "[1e400]", "[NaN]", '["\\u0000"]', '["\\ud800"]', "[" * 2000]),
)
INT_TEXT = st.one_of(
    st.integers(min_value=-(2**40), max_value=2**40).map(str),
    st.sampled_from(["0", "32767", "32768", "-1", "1.5", "1e3", "", "ten", "0x10", "٣"]),
)
RUN_AT_TEXT = st.one_of(
    st.datetimes().map(datetime.isoformat),
    st.sampled_from(
        [
            "2030-01-01T09:00:00+00:00",
            "2030-13-01",
            "now",
            "",
            "0000-01-01",
            "9999-12-31T23:59:59.999999-23:59",
        ]
    ),
    ARG_TEXT,
)
OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "--queue": ARG_TEXT,
        "--priority": INT_TEXT,
        "--run-at": RUN_AT_TEXT,
        "--data": JSON_TEXT,
        "--maximum-retry-count": INT_TEXT,
    },
)


def argv(job_class: str, args_json: str | None, options: dict[str, str]) -> list[str]:
    out = ["enqueue", "--database-url", "{url}"]
    for name, value in options.items():
        out.append(f"{name}={value}")  # = keeps values starting with '-' values
    out += ["--", job_class]
    if args_json is not None:
        out.append(args_json)
    return out


def count_jobs(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone()
    assert row is not None
    return int(row[0])


def check_outcome(
    conn: psycopg.Connection[Any],
    before: int,
    status: int,
    stdout: str,
    stderr: str,
    job_class: str,
    args_json: str | None,
    options: dict[str, str],
) -> None:
    assert "Traceback" not in stdout + stderr, stderr
    if status != 0:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert any(line.startswith(("conveyor: error: ", "Error: ")) for line in lines), (
            f"no clear error line in {stderr!r}"
        )
        # conveyor's own errors are one line.
        if lines and lines[-1].startswith("conveyor: error: "):
            assert len(lines) == 1, stderr
        assert count_jobs(conn) == before, "a failed enqueue left a row"
        return
    job_id = int(stdout.strip())
    row = conn.execute(
        "SELECT job_class, args::text, queue, priority, data::text, maximum_retry_count"
        " FROM conveyor.jobs WHERE id = %s",
        [job_id],
    ).fetchone()
    assert row is not None
    assert row[0] == job_class
    parsed = json.loads(args_json or "[]", parse_float=Decimal, parse_int=Decimal)
    assert json.loads(row[1], parse_float=Decimal, parse_int=Decimal) == parsed
    assert row[2] == options.get("--queue", "default")
    assert row[3] == int(options.get("--priority", "100"))
    if "--data" in options:
        given = json.loads(options["--data"])
        # `--data null` is taken as "no data" (the default, {}).
        expected = exact_json({} if given is None else given)
        assert json.loads(row[4], parse_float=Decimal, parse_int=Decimal) == expected
    assert row[5] == int(options.get("--maximum-retry-count", "15"))


@FUZZ
@given(
    job_class=st.one_of(ARG_TEXT, st.just("SendWelcomeEmail")),
    args_json=st.one_of(st.none(), JSON_TEXT),
    options=OPTIONS,
)
def test_cli_enqueue_with_clickrunner(
    conn: psycopg.Connection[Any],
    db_url: str,
    job_class: str,
    args_json: str | None,
    options: dict[str, str],
) -> None:
    before = count_jobs(conn)
    arguments = [a.replace("{url}", db_url) for a in argv(job_class, args_json, options)]
    result = CliRunner().invoke(cli, arguments, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {result.exception!r}: a traceback in real life")
    check_outcome(
        conn, before, result.exit_code, result.stdout, result.stderr, job_class, args_json, options
    )


@pytest.mark.parametrize(
    ("arguments", "ok"),
    [
        ([b"Job", b"[1, 2]", b"--queue=mail", b"--priority=5"], True),
        ([b"caf\xe9"], False),  # Latin-1, not UTF-8: a lone surrogate for Python
        ([b"Job", b'["\\u0000"]'], False),
        ([b"Job", b"{not json"], False),
        ([b"Job", b"[]", b"--priority=99999999999"], False),
        ([b"Job", b"[]", b"--run-at=yesterday"], False),
        ([b"Job", b"[]", b"--data=[1]"], False),
        ([b"x" * 501], False),
        ([b""], False),
    ],
)
def test_cli_enqueue_as_a_subprocess(
    conn: psycopg.Connection[Any], db_url: str, arguments: list[bytes], ok: bool
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["CONVEYOR_DATABASE_URL"] = db_url
    options = [a for a in arguments if a.startswith(b"--")]
    positional = [a for a in arguments if not a.startswith(b"--")]
    command = [
        sys.executable.encode(),
        b"-m",
        b"conveyor",
        b"enqueue",
        *options,
        b"--",
        *positional,
    ]
    result = subprocess.run(command, capture_output=True, env=env, timeout=60, check=False)
    stderr = result.stderr.decode(errors="replace")
    assert "Traceback" not in stderr
    assert (result.returncode == 0) is ok, stderr
    if ok:
        assert int(result.stdout) > 0
        assert count_jobs(conn) == 1
    else:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("conveyor: error: "), stderr
        assert count_jobs(conn) == 0
