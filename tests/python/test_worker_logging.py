"""The worker's logs: job code's plain loggers come
out in the worker's format at its level, once; --log-format text|json, text
by default at a terminal (tested in a real pty), JSON otherwise."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from click.testing import CliRunner
from db_support import scalar

import conveyor
from conveyor.cli import cli

JOBS = """\
import logging

import conveyor

logger = logging.getLogger(__name__)


class LoggingJob(conveyor.Job):
    def run(self, value):
        logger.info("info from job code: %s", value)
        logger.warning("warning from job code")
        logger.debug("debug from job code")


class FailingJob(conveyor.Job):
    def run(self):
        raise ValueError("it broke")
"""


def _enqueue_both(conn: psycopg.Connection[Any]) -> None:
    conveyor.enqueue(conn, "LoggingJob", 7)
    conveyor.enqueue(conn, "FailingJob", maximum_retry_count=0)


def _all_done(conn: psycopg.Connection[Any]) -> bool:
    return bool(
        scalar(conn, "SELECT NOT EXISTS (SELECT FROM conveyor.jobs WHERE expired_at IS NULL)")
    )


def _env(db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_LOG")}
    return {**env, "DATABASE_URL": db_url, **extra}


def _run_worker(
    tmp_path: Path, conn: psycopg.Connection[Any], env: dict[str, str], *args: str
) -> tuple[str, str]:
    """Run a worker on the job module until both jobs are resolved; its
    stdout and stderr after SIGTERM."""
    (tmp_path / "logging_jobs.py").write_text(JOBS)
    _enqueue_both(conn)
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "logging_jobs", "-w", "1", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not _all_done(conn):
            assert proc.poll() is None and time.monotonic() < deadline, "the jobs did not run"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    return stdout, stderr


def test_job_code_loggers_come_out_as_json_once_at_the_workers_level(
    db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    stdout, stderr = _run_worker(tmp_path, conn, _env(db_url))  # a pipe: JSON
    assert stderr == ""  # nothing raw through logging's last-resort handler
    events = [json.loads(line) for line in stdout.splitlines()]
    plain = [e for e in events if e["event"] == "log"]
    assert [(e["logger"], e["level"], e["message"]) for e in plain] == [
        ("logging_jobs", "info", "info from job code: 7"),
        ("logging_jobs", "warning", "warning from job code"),
    ]
    assert plain[0]["thread"] == "conveyor-worker-1"
    names = [e["event"] for e in events]
    for once in ("worker_started", "locker_connected", "job_errored", "worker_stopped"):
        assert names.count(once) == 1, names

    stdout, _ = _run_worker(tmp_path, conn, _env(db_url, CONVEYOR_LOG_LEVEL="warning"))
    messages = [json.loads(line).get("message") for line in stdout.splitlines()]
    assert "warning from job code" in messages
    assert "info from job code: 7" not in messages


def test_text_format_prints_tracebacks_as_tracebacks(
    db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    stdout, stderr = _run_worker(tmp_path, conn, _env(db_url), "--log-format", "text")
    assert stderr == ""
    lines = stdout.splitlines()
    assert not any(line.startswith("{") for line in lines)
    started = next(line for line in lines if " worker_started " in line)
    assert started.split()[2:4] == ["INFO", "MainThread"]
    assert "queues=" in started
    assert any(
        line.endswith("logging_jobs: info from job code: 7") and " conveyor-worker-1 " in line
        for line in lines
    )
    errored = next(i for i, line in enumerate(lines) if " job_errored " in line)
    assert "error_class=ValueError" in lines[errored]
    assert 'error_message="it broke"' in lines[errored]
    assert lines[errored + 1] == "Traceback (most recent call last):"
    assert lines[errored + 2].startswith('  File "')
    # The traceback runs to its last line, the exception, before the next event.
    rest = lines[errored + 3 :]
    end = next((i for i, line in enumerate(rest) if not line.startswith(" ")), len(rest))
    assert rest[end] == "ValueError: it broke"


def test_the_format_comes_from_the_environment(
    db_url: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    stdout, _ = _run_worker(tmp_path, conn, _env(db_url, CONVEYOR_LOG_FORMAT="text"))
    assert " worker_started " in stdout and "{" not in stdout.splitlines()[0]


def test_an_unknown_format_is_a_usage_error(db_url: str) -> None:
    result = CliRunner().invoke(cli, ["worker", "--log-format", "xml", "--database-url", db_url])
    assert result.exit_code == 2 and "'xml' is not one of 'text', 'json'" in result.output


def test_text_is_the_default_at_a_terminal_and_json_one_flag_away(
    db_url: str, tmp_path: Path
) -> None:
    def first_lines(*args: str) -> list[str]:
        controller, terminal = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "worker", "-w", "1", *args],
            cwd=tmp_path,
            env=_env(db_url),
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=subprocess.PIPE,
        )
        os.close(terminal)
        output = b""
        try:
            deadline = time.monotonic() + 20
            while b"locker_connected" not in output:
                assert time.monotonic() < deadline, output
                ready, _, _ = select.select([controller], [], [], 0.5)
                if ready:
                    output += os.read(controller, 65536)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()
            os.close(controller)
        return output.decode().splitlines()

    text = first_lines()
    assert " INFO  MainThread worker_started queues=" in text[0], text
    as_json = first_lines("--log-format", "json")
    assert json.loads(as_json[0])["event"] == "worker_started"
