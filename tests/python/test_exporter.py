"""`conveyor exporter`: queue gauges from conveyor.queue_stats(), parsed from
its Prometheus text and compared with the database -- in process
(CliRunner, --once), and as a subprocess serving HTTP."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from conveyor.cli import cli
from conveyor.cli_exporter import QueueStatsCollector
from db_support import enqueue, scalar, wait_for
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from security_support import MakeRole

Page = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(text: str) -> Page:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def gauge(page: Page, name: str, **labels: str) -> float:
    return page[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def known_jobs(
    conn: psycopg.Connection[Any], connect: Callable[..., Any]
) -> Iterator[None]:
    """default: 3 ready, 2 scheduled, 1 retrying (errored, scheduled), 1 expired,
    1 finished, 2 running (locked by another session); mail: 1 ready that has
    waited ten minutes, 1 errored and ready again."""
    for n in range(5):
        enqueue(conn, "ExporterJob", [n])
    for n in range(2):
        enqueue(conn, "ExporterJob", [n], run_at="2999-01-01T00:00:00Z")
    retrying = enqueue(conn, "ExporterJob", ["retrying"])
    conn.execute(
        "UPDATE conveyor.jobs SET error_count = 1, run_at = now() + interval '1 hour'"
        " WHERE id = %s",
        [retrying],
    )
    expired = enqueue(conn, "ExporterJob", ["expired"])
    conn.execute("UPDATE conveyor.jobs SET expired_at = now() WHERE id = %s", [expired])
    finished = enqueue(conn, "ExporterJob", ["finished"])
    conn.execute(
        "UPDATE conveyor.jobs SET finished_at = now() WHERE id = %s", [finished]
    )
    waited = enqueue(conn, "ExporterJob", ["old"], queue="mail")
    conn.execute(
        "UPDATE conveyor.jobs SET run_at = now() - interval '10 minutes' WHERE id = %s",
        [waited],
    )
    again = enqueue(conn, "ExporterJob", ["again"], queue="mail")
    conn.execute("UPDATE conveyor.jobs SET error_count = 2 WHERE id = %s", [again])
    locker = connect()
    locked = locker.execute(
        "SELECT id FROM conveyor.lock_jobs(ARRAY['default'], 2, NULL, '{}')"
    ).fetchall()
    assert len(locked) == 2
    yield
    locker.close()


def expected_from_database(conn: psycopg.Connection[Any]) -> Page:
    """The gauges as conveyor.queue_stats() says them, read independently."""
    page: Page = {}
    for row in conn.execute(
        "SELECT queue, ready, scheduled, working, expired, finished, errored,"
        " extract(epoch FROM oldest_ready_age) FROM conveyor.queue_stats()"
    ):
        queue = row[0]
        for state, count in zip(
            ["ready", "scheduled", "running", "expired", "finished"],
            row[1:6],
            strict=True,
        ):
            page[("conveyor_queue_jobs", (("queue", queue), ("state", state)))] = float(
                count
            )
        page[("conveyor_queue_errored_jobs", (("queue", queue),))] = float(row[6])
        page[("conveyor_queue_oldest_ready_age_seconds", (("queue", queue),))] = float(
            row[7] or 0
        )
    return page


def assert_matches_database(page: Page, conn: psycopg.Connection[Any]) -> None:
    expected = expected_from_database(conn)
    exported = {
        key: v for key, v in page.items() if key[0].startswith("conveyor_queue_")
    }
    assert exported.keys() == expected.keys()
    for key, want in expected.items():
        if key[0] == "conveyor_queue_oldest_ready_age_seconds":
            assert exported[key] == pytest.approx(want, abs=30), (
                key
            )  # read moments apart
        else:
            assert exported[key] == want, key


@pytest.mark.usefixtures("known_jobs")
def test_once_prints_the_queue_gauges_of_the_database(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    result = CliRunner().invoke(cli, ["exporter", "--once", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    page = samples(result.output)
    assert gauge(page, "conveyor_exporter_up") == 1
    # What the fixture made, by hand...
    jobs = "conveyor_queue_jobs"
    assert gauge(page, jobs, queue="default", state="ready") == 3
    assert (
        gauge(page, jobs, queue="default", state="scheduled") == 3
    )  # the retrying one too
    assert gauge(page, jobs, queue="default", state="running") == 2
    assert gauge(page, jobs, queue="default", state="expired") == 1
    assert gauge(page, jobs, queue="default", state="finished") == 1
    assert gauge(page, "conveyor_queue_errored_jobs", queue="default") == 1
    assert gauge(page, jobs, queue="mail", state="ready") == 2
    assert gauge(page, "conveyor_queue_errored_jobs", queue="mail") == 1
    age = gauge(page, "conveyor_queue_oldest_ready_age_seconds", queue="mail")
    assert (
        timedelta(minutes=10).total_seconds()
        <= age
        < timedelta(minutes=15).total_seconds()
    )
    # ...and every gauge as the database's queue_stats() has it.
    assert_matches_database(page, conn)


def test_once_without_the_schema_is_one_clear_line(schemaless_db_url: str) -> None:
    result = CliRunner().invoke(
        cli, ["exporter", "--once", "--database-url", schemaless_db_url]
    )
    assert result.exit_code == 1
    assert result.output == (
        "conveyor: error: the conveyor schema is not installed in this database: "
        "run `conveyor migrate`\n"
    )


def test_scrapes_within_min_interval_share_one_query(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    enqueue(conn, "ExporterJob", [1])
    collector = QueueStatsCollector(db_url, min_interval=3600)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    try:
        first = samples(generate_latest(registry).decode())
        enqueue(conn, "ExporterJob", [2])
        second = samples(generate_latest(registry).decode())
        ready = ("conveyor_queue_jobs", (("queue", "default"), ("state", "ready")))
        assert first[ready] == second[ready] == 1  # the cached read
        collector._min_interval = 0  # the next scrape reads again
        assert samples(generate_latest(registry).decode())[ready] == 2
    finally:
        collector.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=10
        ) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            return str(response.read().decode())
    except OSError:
        return None


@pytest.mark.usefixtures("known_jobs")
def test_subprocess_serves_http_as_a_worker_role_and_follows_the_database(
    db_url: str, conn: psycopg.Connection[Any], login_role: MakeRole, tmp_path: Path
) -> None:
    """Run as a role with conveyor_worker's grants only; SIGTERM exits 0."""
    role, _ = login_role("conveyor_worker")
    url = psycopg.conninfo.make_conninfo(db_url, user=role)
    port = _free_port()
    log = (tmp_path / "exporter.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "exporter", "--database-url", url,
         "--port", str(port), "--host", "127.0.0.1", "--min-interval", "0"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        page = samples(wait_for(lambda: _scrape(port), timeout=30, what="the exporter"))
        assert gauge(page, "conveyor_exporter_up") == 1
        assert_matches_database(page, conn)
        enqueue(conn, "ExporterJob", ["one more"], queue="reports")
        page = samples(_scrape(port) or "")
        assert gauge(page, "conveyor_queue_jobs", queue="reports", state="ready") == 1
        assert_matches_database(page, conn)
        # The database goes away for the exporter: up 0, still serving.
        scalar(
            conn,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s",
            [role],
        )
        conn.execute(f'ALTER ROLE "{role}" NOLOGIN')
        page = samples(_scrape(port) or "")
        assert gauge(page, "conveyor_exporter_up") == 0
        assert not [key for key in page if key[0] == "conveyor_queue_jobs"]
        conn.execute(f'ALTER ROLE "{role}" LOGIN')
        page = samples(_scrape(port) or "")
        assert gauge(page, "conveyor_exporter_up") == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        log.close()
    output = (tmp_path / "exporter.log").read_text()
    assert code == 0, output
    assert "exporter_query_failed" in output


def test_every_metric_the_docs_and_the_dashboard_name_is_exported(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    """The how-to's tables and the Grafana dashboard's queries name only
    metrics a worker or the exporter really serves (one of each made here)."""
    import json
    import re

    import conveyor
    from conveyor.metrics import WorkerCollector

    enqueue(conn, "ExporterJob", [1])
    families: set[str] = set()
    with conveyor.Worker(db_url, queues=["nothing"], metrics=True) as worker:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(WorkerCollector(worker))
        families |= {
            f.name
            for f in text_string_to_metric_families(generate_latest(registry).decode())
        }
    collector = QueueStatsCollector(db_url, min_interval=0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    families |= {
        f.name
        for f in text_string_to_metric_families(generate_latest(registry).decode())
    }
    collector.close()
    docs = Path(__file__).resolve().parents[2] / "docs" / "how-to"
    text = (docs / "health-checks-and-metrics.md").read_text()
    dashboard = json.loads((docs / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    named = set(re.findall(r"\bconveyor_[a-z_]+", text + "\n".join(exprs)))
    named -= {"conveyor_worker", "conveyor_bench"}  # the role, the distribution
    assert len(named) > 15
    unknown = {
        name
        for name in named
        if re.sub(r"_(total|bucket|count|sum)$", "", name) not in families
    }
    assert not unknown, f"named in the docs but not exported: {sorted(unknown)}"
