"""The `conveyor` command line: through click's CliRunner and as a process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

import conveyor
import conveyor.migrations
from conveyor.cli import cli

UNREACHABLE = "postgresql://nobody@127.0.0.1:1/nowhere?connect_timeout=1"


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def conveyor_process(
    *args: str, env: dict[str, str] | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    if env is not None:  # an explicit environment replaces the database settings
        full_env.pop("DATABASE_URL", None)
        full_env.pop("CONVEYOR_DATABASE_URL", None)
        full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        check=False,
    )


def one_line_error(result: Any) -> str:
    """The error output must be a single line and no traceback."""
    stderr = result.stderr if isinstance(result.stderr, str) else result.output
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert lines[0].startswith("conveyor: error: "), stderr
    return lines[0]


def test_help_lists_the_commands_and_every_worker_option() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("worker", "migrate", "stats", "enqueue"):
        assert command in result.output
    result = run("worker", "--help")
    assert result.exit_code == 0
    for option in (
        "-i, --poll-interval",
        "-l, --log-level",
        "-p, --worker-priorities",
        "-q, --queue-name",
        "-w, --worker-count",
        "-v, --version",
        "--connection-url",
        "--log-internals",
        "--maximum-buffer-size",
        "--minimum-buffer-size",
        "--wait-period",
        "--shutdown-timeout",
        "--database-url",
        "CONVEYOR_POLL_INTERVAL",
        "CONVEYOR_QUEUE_NAME",
        "DATABASE_URL",
    ):
        assert option in result.output, option


def test_the_package_version_is_the_schema_version(conn: psycopg.Connection[Any]) -> None:
    installed = conn.execute("SELECT conveyor.schema_version()").fetchone()
    assert installed == (conveyor.__version__,)
    assert conveyor.migrations.bundled_version() == conveyor.__version__


def test_version() -> None:
    for args in (["-v"], ["--version"], ["worker", "-v"]):
        result = run(*args)
        assert result.exit_code == 0
        assert result.output.strip() == f"conveyor, version {conveyor.__version__}"


def test_enqueue_and_stats(db_url: str, conn: psycopg.Connection[Any]) -> None:
    result = run(
        "enqueue",
        "Hello",
        '["world", 2]',
        "--queue",
        "mail",
        "--priority",
        "5",
        "--data",
        '{"tags": ["x"]}',
        "--database-url",
        db_url,
    )
    assert result.exit_code == 0, result.output
    job_id = int(result.output)
    row = conn.execute(
        "SELECT job_class, args, queue, priority, data FROM conveyor.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("Hello", ["world", 2], "mail", 5, {"tags": ["x"]})
    run(
        "enqueue",
        "Hello",
        "--run-at",
        "2999-01-01T00:00:00+00:00",
        env={"DATABASE_URL": db_url},
    )
    result = run("stats", "--database-url", db_url)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "job_class",
        "count",
        "count_locked",
        "count_errored",
        "highest_error_count",
        "oldest_run_at",
    ]
    assert lines[2].split()[:5] == ["Hello", "2", "0", "0", "0"]
    result = run("stats", "--json", "--database-url", db_url)
    stats = json.loads(result.output)
    assert stats[0]["job_class"] == "Hello" and stats[0]["count"] == 2
    result = run("stats", "--queues", "--json", "--database-url", db_url)
    queues = {q["queue"]: q for q in json.loads(result.output)}
    assert queues["mail"]["ready"] == 1 and queues["default"]["scheduled"] == 1
    assert queues["mail"]["locked"] == 0 and "working" not in queues["mail"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["enqueue", "Hello", "not json"], "ARGS_JSON is not valid JSON"),
        (["enqueue", "Hello", '{"a": 1}'], "ARGS_JSON must be a JSON array"),
        (["enqueue", "Hello", "--data", "[1]"], "--data must be a JSON object"),
        (["enqueue", "Hello", "--run-at", "tomorrow"], "not an ISO 8601 time"),
        (
            ["enqueue", "Hello", "--priority", "-3"],
            "priority must be between 0 and 32767",
        ),
    ],
)
def test_enqueue_errors_are_one_line(db_url: str, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, [*args, "--database-url", db_url])
    assert result.exit_code == 1
    assert message in one_line_error(result)


def test_migrate_installs_then_is_a_no_op_then_refuses_another_version(
    new_db: Callable[[], str],
) -> None:
    url = new_db()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("DROP SCHEMA conveyor CASCADE")
    result = run("migrate", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "conveyor schema 0.1.0: installed"
    with psycopg.connect(url) as check:
        assert check.execute("SELECT conveyor.schema_version()").fetchone() == ("0.1.0",)
    assert run("migrate", "--database-url", url).output.strip() == (
        "conveyor schema 0.1.0: up to date"
    )
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "CREATE OR REPLACE FUNCTION conveyor.schema_version() RETURNS text"
            " LANGUAGE sql AS $$ SELECT '0.0.9' $$"
        )
    result = CliRunner().invoke(cli, ["migrate", "--database-url", url])
    assert result.exit_code == 1
    assert "has conveyor schema 0.0.9" in one_line_error(result)


def test_an_unreachable_database_is_one_line() -> None:
    for args in (["stats"], ["migrate"], ["enqueue", "Hello"]):
        result = conveyor_process(*args, "--database-url", UNREACHABLE)
        assert result.returncode == 1
        assert "cannot connect to the database" in one_line_error(result)


def test_debug_prints_the_traceback_of_an_expected_error() -> None:
    result = conveyor_process("--debug", "stats", "--database-url", UNREACHABLE)
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "psycopg.OperationalError" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("conveyor: error: cannot connect to the database")
    result = conveyor_process("stats", "--database-url", UNREACHABLE, env={"CONVEYOR_DEBUG": "1"})
    assert "Traceback" in result.stderr


def test_a_bug_is_not_hidden_behind_one_line() -> None:
    # A command with a bug in it, behind the same error wrapper as every command;
    # a ValueError, which the wrapper once turned into one line too.
    code = (
        "import conveyor.cli as c\n"
        "@c.cli.command()\n"
        "@c._errors_as_one_line\n"
        "def buggy():\n"
        "    return int('a bug')\n"
        "c.main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "buggy"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("ValueError: invalid literal")
    assert "conveyor: error" not in result.stderr


def test_no_database_is_one_line() -> None:
    result = conveyor_process("stats", env={})
    assert result.returncode == 1
    assert "no database" in one_line_error(result)


def test_a_missing_module_is_one_line(db_url: str, tmp_path: Path) -> None:
    result = conveyor_process("worker", "no_such_module_xyz", "--database-url", db_url)
    assert result.returncode == 1
    assert "cannot import no_such_module_xyz" in one_line_error(result)
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('broken at import')\n")
    result = conveyor_process("worker", str(broken), "--database-url", db_url)
    assert result.returncode == 1
    assert "broken at import" in one_line_error(result)


def test_bad_options_are_usage_errors(db_url: str) -> None:
    result = CliRunner().invoke(cli, ["worker", "-p", "10,high", "--database-url", db_url])
    assert result.exit_code == 2 and "invalid worker priority" in result.output
    result = CliRunner().invoke(
        cli, ["worker", "--minimum-buffer-size", "9", "--database-url", db_url]
    )
    assert result.exit_code == 2 and "must not exceed" in result.output


def test_a_schema_less_database_stops_the_worker_with_one_line(
    new_db: Callable[[], str],
) -> None:
    url = new_db()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("DROP SCHEMA conveyor CASCADE")
    result = conveyor_process("worker", "--database-url", url)
    assert result.returncode == 1
    assert "conveyor migrate" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr + result.stdout


def test_the_worker_reads_options_from_the_environment_and_works_jobs(
    db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    (tmp_path / "cli_jobs.py").write_text(
        "import conveyor\n"
        "class CliJob(conveyor.Job):\n"
        "    def run(self, value):\n"
        "        with self.connection() as conn:\n"
        "            conn.execute('INSERT INTO cli_results VALUES (%s)', (value,))\n"
    )
    conn.execute("CREATE TABLE cli_results (value int)")
    conveyor.enqueue(conn, "CliJob", 7, queue="cli")
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "CONVEYOR_QUEUE_NAME": "cli other",
        "CONVEYOR_WORKER_PRIORITIES": "5,any",
        "CONVEYOR_WORKER_COUNT": "3",
        "CONVEYOR_MAXIMUM_BUFFER_SIZE": "4",
        "CONVEYOR_LOG_INTERNALS": "1",
        "CONVEYOR_LOG_LEVEL": "debug",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "cli_jobs"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while conn.execute("SELECT count(*) FROM cli_results").fetchone() != (1,):
            assert time.monotonic() < deadline, "the job did not run"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines()]
    started = next(e for e in events if e["event"] == "worker_started")
    assert started["queues"] == ["cli", "other"]
    assert started["worker_priorities"] == [5, None, None]
    assert started["maximum_buffer_size"] == 4
    assert any(e["event"] == "locker_cycle" for e in events)  # --log-internals
    worked = next(e for e in events if e["event"] == "job_worked")  # DEBUG level
    assert worked["job_class"] == "CliJob" and worked["thread"].startswith("conveyor-worker-")
    assert events[-1]["event"] == "worker_stopped" and events[-1]["clean"] is True


def test_the_worker_keeps_trying_an_unreachable_database() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "--database-url", UNREACHABLE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        unreachable = 0
        deadline = time.monotonic() + 10
        while unreachable < 2:
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline
            unreachable += json.loads(line)["event"] == "database_unreachable"
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "Traceback" not in stdout + stderr


def test_the_installed_script_runs() -> None:
    script = shutil.which("conveyor", path=str(Path(sys.executable).parent))
    assert script is not None, "the conveyor entry point is not installed"
    result = subprocess.run([script, "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert result.stdout.strip() == f"conveyor, version {conveyor.__version__}"


def test_the_example_jobs_run_in_a_worker(db_url: str, conn: psycopg.Connection[Any]) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "jobs.py"
    hello = conveyor.enqueue(conn, "Hello", "tests")
    greeting = conveyor.enqueue(conn, "RecordGreeting", "ada")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor",
            "worker",
            str(examples),
            "--database-url",
            db_url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone() != (0,):
            assert time.monotonic() < deadline, "the example jobs did not run"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    assert conn.execute("SELECT name FROM greetings").fetchall() == [("ada",)]
    worked = [json.loads(line) for line in stdout.splitlines()]
    assert any(e["event"] == "job_worked" and e["job_id"] == hello for e in worked)
    assert greeting is not None
