"""A smoke run of the benchmark, so it cannot rot.

Tiny N, one repeat, a few scenarios including a real drain by a `conveyor
worker` subprocess: the command must finish, write the JSON report with the
structure docs/performance.md relies on, and prove in the database that the
drained jobs each ran exactly once. The figures themselves are not checked:
this is not a timed test.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from conveyor_bench import bench
from conveyor_bench.db import Server
from conveyor_bench.procs import WorkerProcesses
from conveyor_bench.scenarios import Context, run_backlog

pytestmark = [pytest.mark.bench, pytest.mark.timeout(120)]


def _run(admin_url: str, tmp_path: Path, *args: str) -> dict[str, Any]:
    report = tmp_path / "bench.json"
    result = CliRunner().invoke(
        bench,
        ["--database-url", admin_url, "--repeat", "1", "--json", str(report), *args],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "\ngoals\n" in result.output
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def _scenario(report: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in report["scenarios"] if s["name"] == name]
    assert len(found) == 1, [s["name"] for s in report["scenarios"]]
    return found[0]


def _figure(scenario: dict[str, Any], system: str, variant: str, metric: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        r
        for r in scenario["results"]
        if (r["system"], r["variant"], r["metric"]) == (system, variant, metric)
    ]
    assert len(found) == 1, scenario["results"]
    return found[0]


def test_smoke_run_reports_figures_and_drain_ran_each_job_once(
    admin_url: str, tmp_path: Path
) -> None:
    report = _run(
        admin_url,
        tmp_path,
        "--scenario",
        "enqueue_single,enqueue_bulk",
        "--scenario",
        "drain",
        "--jobs",
        "300",
        "--compare",
        "none",
    )

    assert report["format"] == 1
    assert report["options"] == {
        "scenarios": ["enqueue_single", "enqueue_bulk", "drain"],
        "jobs": 300,
        "repeat": 1,
        "compare": [],
    }
    machine = report["machine"]
    assert machine["cores"] >= 1
    assert machine["postgresql"]["version"].startswith("PostgreSQL")
    for setting in ("shared_buffers", "synchronous_commit", "fsync"):
        assert machine["postgresql"]["settings"][setting]
    assert set(report["systems"]) == {"conveyor", "raw"}
    assert [s["name"] for s in report["scenarios"]] == ["enqueue_single", "enqueue_bulk", "drain"]

    for name in ("enqueue_single", "enqueue_bulk"):
        scenario = _scenario(report, name)
        assert scenario["failures"] == []
        for system in ("conveyor", "raw"):
            figure = _figure(scenario, system, "", "throughput")
            assert figure["unit"] == "jobs/s"
            assert len(figure["samples"]) == 1
            assert figure["min"] <= figure["median"] <= figure["max"]
            assert figure["median"] > 0 and math.isfinite(figure["median"])

    drain = _scenario(report, "drain")
    assert drain["failures"] == []
    assert drain["jobs"] == 300
    for variant in ("", "buffer 2000/1000"):
        assert _figure(drain, "conveyor", variant, "throughput")["median"] > 0
    assert len(drain["runs"]) == 2
    for run in drain["runs"]:
        verification = run["details"]["verification"]
        assert verification == {
            "jobs": 300,
            "ran": 300,
            "distinct": 300,
            "duplicates": 0,
            "missing": 0,
            "unexpected": 0,
            "exactly_once": True,
        }
        assert run["details"]["queue_drained"] is True
        assert run["details"]["exit_codes"] == [0]

    goals = {g["goal"]: g for g in report["goals"]}
    assert goals["single-row enqueue within 10% of the plain INSERT"]["met"] in (True, False)
    assert goals["latency_idle p50 <= 1 ms"]["met"] is None  # not run


def test_smoke_run_of_the_peers_drains_each_job_once(admin_url: str, tmp_path: Path) -> None:
    report = _run(
        admin_url,
        tmp_path,
        "--scenario",
        "drain",
        "--jobs",
        "100",
        "--compare",
        "procrastinate,pgqueuer",
    )
    assert set(report["systems"]) == {"conveyor", "raw", "procrastinate", "pgqueuer"}
    for peer in ("procrastinate", "pgqueuer"):
        assert report["systems"][peer]["version"]
        assert report["systems"][peer]["config"]["worker"]
    drain = _scenario(report, "drain")
    assert drain["failures"] == []
    assert {run["system"] for run in drain["runs"]} == {"conveyor", "procrastinate", "pgqueuer"}
    for run in drain["runs"]:
        assert run["details"]["verification"]["exactly_once"] is True, run


def test_worker_processes_share_the_benchmark_session(tmp_path: Path) -> None:
    """Each worker has a process group of its own (so it can be killed with its
    children) but stays in the benchmark's session: under Linux autogroup a
    session is a scheduling group, and a session per worker would give every
    worker as much CPU as the whole PostgreSQL server."""
    workers = WorkerProcesses(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        dict(os.environ),
        2,
        tmp_path / "logs",
        "sleeper",
    )
    workers.start()
    try:
        assert len(workers.pids) == 2
        for pid in workers.pids:
            assert os.getsid(pid) == os.getsid(0)
            assert os.getpgid(pid) == pid != os.getpgid(0)
    finally:
        codes = workers.stop(timeout=10)
    assert codes == [-signal.SIGTERM, -signal.SIGTERM]


def test_backlog_case_of_destroyed_jobs_not_vacuumed(admin_url: str, tmp_path: Path) -> None:
    """backlog_scaling's no-goal case: the destroyed jobs are gone from the
    table but, with no vacuum since, still in the ready index's head."""
    server = Server(admin_url)
    try:
        result = run_backlog(
            Context(server=server, workdir=tmp_path),
            ready=200,
            finished=0,
            destroyed=3_000,
            cycles=20,
            batch=10,
        )
    finally:
        server.close()
    variant = "200 ready after 3,000 destroyed, not vacuumed"
    assert {m.variant for m in result.measurements} == {variant}
    assert {m.metric for m in result.measurements} == {
        "lock+destroy 100",
        "lock_jobs 100",
        "destroy_jobs 100",
    }
    assert all(m.value > 0 for m in result.measurements)
    assert result.details["destroyed_not_vacuumed"] == 3_000
    assert result.details["cycles"] == 20
