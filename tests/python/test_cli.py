"""The `conveyor` command line: through click's CliRunner and as a process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from chaos_support import WorkerProcess, critical_events
from click.testing import CliRunner
from db_support import wait_for

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


def work_until(
    worker: WorkerProcess,
    workers: list[WorkerProcess],
    done: Callable[[], Any],
    what: str,
) -> list[dict[str, Any]]:
    """Let the worker run until ``done()``, stop it with SIGTERM (it must exit
    0) and return its log events, none of them critical."""
    workers.append(worker)
    wait_for(done, what=what, timeout=15)
    assert worker.stop(timeout=10) == 0, worker.stderr()
    events = worker.events()
    assert critical_events(events) == []
    return events


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
        "--async-concurrency",
        "--async-block-threshold",
        "--database-url",
        "CONVEYOR_POLL_INTERVAL",
        "CONVEYOR_QUEUE_NAME",
        "DATABASE_URL",
    ):
        assert option in result.output, option


def test_the_package_version_is_the_schema_version(
    conn: psycopg.Connection[Any],
) -> None:
    installed = conn.execute("SELECT conveyor.schema_version()").fetchone()
    assert installed == (conveyor.__version__,)
    # The bundled plan's last release; "+N" counts the plan entries after it
    # (unreleased changes, until the next tag).
    assert conveyor.migrations.bundled_version().split("+")[0] == conveyor.__version__


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
def test_enqueue_errors_are_one_line(
    db_url: str, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(cli, [*args, "--database-url", db_url])
    assert result.exit_code == 1
    assert message in one_line_error(result)


def test_migrate_is_up_to_date_then_refuses_an_unknown_release(
    new_db: Callable[[], str],
) -> None:
    url = new_db()
    version = conveyor.migrations.bundled_version()
    result = run("migrate", "--database-url", url)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"conveyor schema {version}: up to date"
    # An install of a release without conveyor.schema_changes, which this
    # package does not know.
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("DROP TABLE conveyor.schema_changes")
        admin.execute(
            "CREATE OR REPLACE FUNCTION conveyor.schema_version() RETURNS text"
            " LANGUAGE sql AS $$ SELECT '0.0.9' $$"
        )
    result = CliRunner().invoke(cli, ["migrate", "--database-url", url])
    assert result.exit_code == 1
    assert (
        "has conveyor schema 0.0.9, which this package does not know"
        in one_line_error(result)
    )


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
    result = conveyor_process(
        "stats", "--database-url", UNREACHABLE, env={"CONVEYOR_DEBUG": "1"}
    )
    assert "Traceback" in result.stderr


def test_a_bug_is_not_hidden_behind_one_line() -> None:
    # A command with a bug in it, behind the same error wrapper as every command;
    # a ValueError, which the wrapper once turned into one line too.
    code = (
        "import conveyor.cli as c\n"
        "import conveyor.cli_support as s\n"
        "@c.cli.command()\n"
        "@s.errors_as_one_line\n"
        "def buggy():\n"
        "    return int('a bug')\n"
        "c.main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "buggy"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert (
        result.stderr.strip().splitlines()[-1].startswith("ValueError: invalid literal")
    )
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
    result = CliRunner().invoke(
        cli, ["worker", "-p", "10,high", "--database-url", db_url]
    )
    assert result.exit_code == 2 and "invalid worker priority" in result.output
    result = CliRunner().invoke(
        cli,
        ["worker", "--minimum-buffer-size", "9", "--maximum-buffer-size", "8"]
        + ["--database-url", db_url],
    )
    assert result.exit_code == 2 and "must not exceed" in result.output


def test_a_schema_less_database_stops_the_worker_with_one_line(
    schemaless_db_url: str,
) -> None:
    url = schemaless_db_url
    result = conveyor_process("worker", "--database-url", url)
    assert result.returncode == 1
    assert "conveyor migrate" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr + result.stdout


def test_the_worker_reads_options_from_the_environment_and_works_jobs(
    db_url: str,
    conn: psycopg.Connection[Any],
    tmp_path: Path,
    workers: list[WorkerProcess],
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
        "DATABASE_URL": db_url,
        "PYTHONPATH": str(tmp_path),  # cli_jobs, imported by name
        "CONVEYOR_QUEUE_NAME": "cli other",
        "CONVEYOR_WORKER_PRIORITIES": "5,any",
        "CONVEYOR_WORKER_COUNT": "3",
        "CONVEYOR_MAXIMUM_BUFFER_SIZE": "4",
        "CONVEYOR_LOG_INTERNALS": "1",
        "CONVEYOR_LOG_LEVEL": "debug",
    }
    worker = WorkerProcess(
        None, ["cli_jobs"], name="cli-env", log_dir=tmp_path, env=env
    )
    events = work_until(
        worker,
        workers,
        lambda: conn.execute("SELECT count(*) FROM cli_results").fetchone() == (1,),
        "the job to run",
    )
    started = next(e for e in events if e["event"] == "worker_started")
    assert started["queues"] == ["cli", "other"]
    assert started["worker_priorities"] == [5, None, None]
    assert started["maximum_buffer_size"] == 4
    assert any(e["event"] == "locker_cycle" for e in events)  # --log-internals
    worked = next(e for e in events if e["event"] == "job_worked")  # DEBUG level
    assert worked["job_class"] == "CliJob" and worked["thread"].startswith(
        "conveyor-worker-"
    )
    assert events[-1]["event"] == "worker_stopped" and events[-1]["clean"] is True


def test_the_worker_keeps_trying_an_unreachable_database(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    worker = WorkerProcess(UNREACHABLE, [], name="cli-unreachable", log_dir=tmp_path)
    workers.append(worker)
    wait_for(
        lambda: [e for e in worker.events() if e["event"] == "database_unreachable"][
            1:
        ],
        what="two connection attempts",
    )
    assert worker.alive()
    assert worker.stop(timeout=10) == 0, worker.stderr()
    assert critical_events(worker.events()) == []
    assert "Traceback" not in worker.stdout_path.read_text() + worker.stderr()


def test_the_installed_script_runs() -> None:
    script = shutil.which("conveyor", path=str(Path(sys.executable).parent))
    assert script is not None, "the conveyor entry point is not installed"
    result = subprocess.run(
        [script, "--version"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"conveyor, version {conveyor.__version__}"


def test_the_example_jobs_run_in_a_worker(
    db_url: str,
    conn: psycopg.Connection[Any],
    tmp_path: Path,
    workers: list[WorkerProcess],
) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples" / "jobs.py"
    hello = conveyor.enqueue(conn, "Hello", "tests")
    greeting = conveyor.enqueue(conn, "RecordGreeting", "ada")
    worker = WorkerProcess(
        db_url, [str(examples)], name="cli-examples", log_dir=tmp_path
    )
    events = work_until(
        worker,
        workers,
        lambda: conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone() == (0,),
        "the example jobs to run",
    )
    assert conn.execute("SELECT name FROM greetings").fetchall() == [("ada",)]
    worked = {e.get("job_id") for e in events if e["event"] == "job_worked"}
    errored = {e.get("job_id") for e in events if e["event"] == "job_errored"}
    # At the default level (info), job_worked shows for Hello, whose
    # log_level says INFO, and not for RecordGreeting (DEBUG by default).
    assert hello in worked
    assert greeting not in worked
    assert errored == set(), "RecordGreeting ran once, without an error"
