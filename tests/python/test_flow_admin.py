"""The operator role runs flow control, and jobs_view shows paused jobs:
`conveyor pause`/`resume` and `conveyor jobs --state paused` as a real LOGIN
member of conveyor_admin (in-process and as a subprocess), with a worker role
that cannot lock what is paused."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from conveyor.cli import cli
from db_support import enqueue, scalar
from psycopg import errors
from psycopg.conninfo import make_conninfo


def state_of(conn: psycopg.Connection[Any], job_id: int) -> str:
    return scalar(conn, "SELECT state FROM conveyor.jobs_view WHERE id = %s", [job_id])


def test_an_operator_pauses_and_resumes_as_conveyor_admin(
    login_role: Any, db_url: str, conn: psycopg.Connection[Any]
) -> None:
    ready = enqueue(conn, "FlowAdminJob", queue="flow_admin")
    later = enqueue(conn, "FlowAdminJob", queue="flow_admin", run_at="2100-01-01")
    elsewhere = enqueue(conn, "FlowAdminJob", queue="flow_admin_other")
    admin_name, as_admin = login_role("conveyor_admin")
    _, as_worker = login_role("conveyor_worker")
    admin, worker = as_admin(), as_worker()
    admin_url = make_conninfo(db_url, user=admin_name)

    paused = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "pause",
            "--queue",
            "flow_admin",
            "--database-url",
            admin_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout == "paused: queue=flow_admin\n"

    assert [state_of(admin, j) for j in (ready, later, elsewhere)] == [
        "paused",
        "paused",
        "ready",
    ]
    listed = CliRunner().invoke(
        cli, ["jobs", "--state", "paused", "--json", "--database-url", admin_url]
    )
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert sorted((row["id"], row["state"]) for row in rows) == [
        (ready, "paused"),
        (later, "paused"),
    ]
    assert (
        worker.execute(
            "SELECT id FROM conveyor.lock_jobs(ARRAY['flow_admin'], 10)"
        ).fetchall()
        == []
    )

    resumed = CliRunner().invoke(
        cli, ["resume", "--queue", "flow_admin", "--database-url", admin_url]
    )
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output == "resumed: queue=flow_admin\n"
    assert [state_of(admin, j) for j in (ready, later)] == ["ready", "scheduled"]
    assert worker.execute(
        "SELECT id FROM conveyor.lock_jobs(ARRAY['flow_admin'], 10)"
    ).fetchall() == [(ready,)]
    assert state_of(admin, ready) == "running"


def test_an_operator_sets_concurrency_limits_and_workers_cannot(
    login_role: Any, conn: psycopg.Connection[Any]
) -> None:
    _, as_admin = login_role("conveyor_admin")
    _, as_worker = login_role("conveyor_worker")
    _, as_enqueuer = login_role("conveyor_enqueuer")
    admin = as_admin()
    admin.execute(
        "SELECT conveyor.set_concurrency_limit('flow-admin-key', perform_limit => 1)"
    )
    assert admin.execute(
        "SELECT key, perform_limit, enqueue_limit FROM conveyor.concurrency_limits"
    ).fetchall() == [("flow-admin-key", 1, None)]
    assert scalar(admin, "SELECT count(*) FROM conveyor.pauses") == 0
    for connect in (as_worker, as_enqueuer):
        other = connect()
        with pytest.raises(errors.InsufficientPrivilege):
            other.execute("SELECT conveyor.set_concurrency_limit('flow-admin-key', 5)")
        with pytest.raises(errors.InsufficientPrivilege):
            other.execute("SELECT conveyor.pause('flow_admin')")
    assert (
        scalar(admin, "SELECT conveyor.delete_concurrency_limit('flow-admin-key')")
        is True
    )
    assert scalar(conn, "SELECT count(*) FROM conveyor.concurrency_limits") == 0
