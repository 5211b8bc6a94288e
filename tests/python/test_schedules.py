"""Recurring jobs from Python: conveyor.schedules (declaration, upsert,
enqueue) and the `conveyor schedules` commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import conveyor
import psycopg
import pytest
from click.testing import CliRunner
from conveyor import schedules as schedules_module
from conveyor.cli import cli
from conveyor.schedules import (
    apply_schedules,
    declared_schedules,
    enqueue_due_schedules,
    list_schedules,
    next_schedule_at,
    schedule,
)


class NightlyReport(conveyor.Job):
    queue = "reports"
    priority = 7

    def run(self, kind: str) -> None:
        pass


@pytest.fixture(autouse=True)
def _forget_declared_schedules() -> Iterator[None]:
    """Declarations are process-wide, and a Worker started by a later test
    applies them: leave none behind."""
    yield
    schedules_module._declared.clear()


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_declared_schedule_is_upserted_with_the_class_defaults(
    conn: psycopg.Connection[Any],
) -> None:
    declared = schedule(
        "nightly-report", "0 3 * * *", NightlyReport, "full", time_zone="Europe/Berlin"
    )
    assert declared in declared_schedules()
    assert apply_schedules(conn, [declared]) == ["nightly-report"]
    (row,) = list_schedules(conn)
    assert (row.job_class, row.args, row.queue, row.priority, row.time_zone) == (
        "NightlyReport",
        ["full"],
        "reports",
        7,
        "Europe/Berlin",
    )
    assert next_schedule_at(conn) == row.next_run_at
    assert row.next_run_at.astimezone(ZoneInfo("Europe/Berlin")).hour == 3


def test_applying_again_keeps_the_pending_occurrence(
    conn: psycopg.Connection[Any],
) -> None:
    declared = schedule("tick", "* * * * *", "Tick")
    apply_schedules(conn, [declared])
    conn.execute(
        "UPDATE conveyor.schedules SET next_run_at = now() - interval '10 minutes'"
    )
    (before,) = list_schedules(conn)
    apply_schedules(conn, [declared])
    (after,) = list_schedules(conn)
    assert after.next_run_at == before.next_run_at, "a restart must not drop a due run"
    ids = enqueue_due_schedules(conn)
    assert len(ids) == 1
    (data,) = (
        conn.execute(
            "SELECT data FROM conveyor.jobs WHERE id = %s", (ids[0],)
        ).fetchone()
        or ()
    )
    assert data["schedule"]["name"] == "tick"
    assert enqueue_due_schedules(conn) == []


def test_a_bad_expression_is_refused_naming_the_field(
    conn: psycopg.Connection[Any],
) -> None:
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="hour field"):
        apply_schedules(conn, [schedule("bad", "0 25 * * *", "X")])
    with pytest.raises(TypeError):
        schedule("bad", "* * * * *", 42)  # type: ignore[arg-type]


def test_cli_add_list_disable_enable_run_now_remove(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    url = ["--database-url", db_url]
    result = run(
        "schedules", "add", "sync", "*/15 * * * *", "Sync", "[1]", "--queue", "s", *url
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("sync: next run ")

    result = run("schedules", "list", *url)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["name", "cron", "time_zone"]
    assert lines[2].startswith("sync  */15 * * * *  UTC")

    result = run("schedules", "disable", "sync", *url)
    assert (result.exit_code, result.output) == (0, "sync: disabled\n")
    (listed,) = json.loads(run("schedules", "list", "--json", *url).output)
    assert (listed["name"], listed["enabled"], listed["args"]) == ("sync", False, [1])

    assert run("schedules", "enable", "sync", *url).output == "sync: enabled\n"

    result = run("schedules", "run-now", "sync", *url)
    assert result.exit_code == 0, result.output
    job = conn.execute(
        "SELECT job_class, args, queue, data FROM conveyor.jobs WHERE id = %s",
        (int(result.output),),
    ).fetchone()
    assert job == ("Sync", [1], "s", {"schedule": {"name": "sync", "at": None}})

    assert run("schedules", "remove", "sync", *url).output == "sync: removed\n"
    result = run("schedules", "remove", "sync", *url)
    assert result.exit_code == 1
    assert "no schedule named 'sync'" in result.output


def test_cli_add_refuses_a_bad_time_zone_in_one_line(db_url: str) -> None:
    result = CliRunner().invoke(
        cli,
        [
            "schedules",
            "add",
            "x",
            "* * * * *",
            "X",
            "--time-zone",
            "Mars/Base",
            "--database-url",
            db_url,
        ],
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        'conveyor: error: time zone "Mars/Base" not recognized'
    ]
