"""`conveyor pause`, `conveyor resume` and the paused lines of `conveyor stats`,
in-process (CliRunner) and as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psycopg
from click.testing import CliRunner
from conveyor.cli import cli


def invoke(db_url: str, *args: str) -> Any:
    return CliRunner().invoke(cli, [*args, "--database-url", db_url])


def pauses(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT queue, job_class, label FROM conveyor.pauses ORDER BY id"
    ).fetchall()


def test_pause_and_resume_in_process(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    result = invoke(db_url, "pause", "--queue", "mail")
    assert result.exit_code == 0, result.output
    assert result.output == "paused: queue=mail\n"
    assert (
        invoke(db_url, "pause", "--queue", "mail").output
        == "already paused: queue=mail\n"
    )
    result = invoke(db_url, "pause", "--job-class", "Report", "--label", "slow")
    assert result.output == "paused: job_class=Report label=slow\n"
    assert pauses(conn) == [("mail", None, None), (None, "Report", "slow")]

    stats = invoke(db_url, "stats")
    assert stats.exit_code == 0, stats.output
    lines = [line for line in stats.output.splitlines() if line.startswith("paused: ")]
    assert [line.split(" (since")[0] for line in lines] == [
        "paused: queue=mail",
        "paused: job_class=Report label=slow",
    ]
    assert "paused" not in invoke(db_url, "stats", "--json").output

    assert invoke(db_url, "resume", "--queue", "mail").output == "resumed: queue=mail\n"
    assert (
        invoke(db_url, "resume", "--queue", "mail").output == "not paused: queue=mail\n"
    )
    assert pauses(conn) == [(None, "Report", "slow")]


def test_a_pause_without_a_name_is_one_line_error(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    result = invoke(db_url, "pause")
    assert result.exit_code == 1
    assert "name a --queue, a --job-class or a --label" in result.output
    result = invoke(db_url, "pause", "--queue", "")
    assert result.exit_code == 1
    assert "must not be empty" in result.output
    assert pauses(conn) == []


def test_pause_and_resume_as_a_subprocess(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args, "--database-url", db_url],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    result = run("pause", "-l", "nightly")
    assert (result.returncode, result.stdout) == (0, "paused: label=nightly\n"), (
        result.stderr
    )
    assert pauses(conn) == [(None, None, "nightly")]
    result = run("resume", "-l", "nightly")
    assert (result.returncode, result.stdout) == (0, "resumed: label=nightly\n"), (
        result.stderr
    )
    assert pauses(conn) == []
