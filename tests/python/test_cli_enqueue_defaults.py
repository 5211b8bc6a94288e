"""`conveyor enqueue` takes a job class's defaults when it can import the class
through --module or a dotted name, as from Python;
options given on the command line win."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_cli import one_line_error, run

JOBS = (
    "import conveyor\n"
    "class {name}(conveyor.Job):\n"
    "    queue = 'mail'\n"
    "    priority = 10\n"
    "    maximum_retry_count = 5\n"
    "    run_synchronously = True  # the CLI inserts it all the same\n"
    "    def run(self, user_id):\n"
    "        raise RuntimeError('ran in the enqueuing process')\n"
)


def _job(conn: psycopg.Connection[Any], output: str) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT job_class, args, queue, priority, maximum_retry_count FROM conveyor.jobs "
        "WHERE id = %s",
        (int(output),),
    ).fetchone()
    assert row is not None
    return tuple(row)


def _enqueue_process(cwd: Path, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db_url}
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "enqueue", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_module_gives_the_class_defaults_and_options_still_win(
    db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    jobs = tmp_path / "welcome_jobs_runner.py"
    jobs.write_text(JOBS.format(name="WelcomeRunner"))
    result = run("enqueue", "WelcomeRunner", "[42]", "-m", str(jobs), "--database-url", db_url)
    assert result.exit_code == 0, result.output
    assert _job(conn, result.output) == ("WelcomeRunner", [42], "mail", 10, 5)

    result = run(
        "enqueue",
        "WelcomeRunner",
        "[43]",
        "--module",
        str(jobs),
        "--priority",
        "3",
        "--queue",
        "urgent",
        "--database-url",
        db_url,
    )
    assert result.exit_code == 0, result.output
    assert _job(conn, result.output) == ("WelcomeRunner", [43], "urgent", 3, 5)

    result = run(
        "enqueue",
        "WelcomeRunner",
        "-m",
        str(jobs),
        "--maximum-retry-count",
        "0",
        "--database-url",
        db_url,
    )
    assert _job(conn, result.output)[2:] == ("mail", 10, 0)


def test_without_an_importable_class_the_sql_defaults_apply(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    # A plain name, and a dotted name that is no Python module (a job for a
    # worker in another language): stored as typed, with the SQL defaults.
    for name in ("SendWelcomeEmail", "com.example.jobs.Mailer", "Mailer::Deliver"):
        result = run("enqueue", name, "--database-url", db_url)
        assert result.exit_code == 0, result.output
        assert _job(conn, result.output) == (name, [], "default", 100, 15)


def test_a_dotted_name_imports_the_class_as_a_process(
    db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    (tmp_path / "welcome_jobs_process.py").write_text(JOBS.format(name="WelcomeProcess"))
    result = _enqueue_process(tmp_path, db_url, "welcome_jobs_process.WelcomeProcess", "[7]")
    assert result.returncode == 0, result.stderr
    assert _job(conn, result.stdout) == (
        "welcome_jobs_process.WelcomeProcess",
        [7],
        "mail",
        10,
        5,
    )
    result = _enqueue_process(
        tmp_path, db_url, "WelcomeProcess", "[8]", "-m", "welcome_jobs_process", "--priority", "1"
    )
    assert result.returncode == 0, result.stderr
    assert _job(conn, result.stdout) == ("WelcomeProcess", [8], "mail", 1, 5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Missing", "-m", "{jobs}"], "unknown job class 'Missing'"),
        (["welcome_jobs_errors.Missing"], "welcome_jobs_errors defines no conveyor.Job"),
        (["broken_jobs.Anything"], "cannot import broken_jobs: RuntimeError: broken"),
    ],
)
def test_a_class_that_cannot_be_found_is_one_line(
    db_url: str, conn: psycopg.Connection[Any], tmp_path: Path, args: list[str], message: str
) -> None:
    jobs = tmp_path / "welcome_jobs_errors.py"
    jobs.write_text(JOBS.format(name="WelcomeErrors"))
    (tmp_path / "broken_jobs.py").write_text("raise RuntimeError('broken')\n")
    result = _enqueue_process(tmp_path, db_url, *[a.format(jobs=jobs) for a in args])
    assert result.returncode == 1
    assert message in one_line_error(result)
    assert conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone() == (0,)
