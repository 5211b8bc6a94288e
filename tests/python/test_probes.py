"""Health probes and /metrics (conveyor.probes, conveyor.metrics): real HTTP
against a worker in this process and against a `conveyor worker`
subprocess; the metrics checked against jobs of known outcome; the
/status/connected flip to 503 while the locker's session is killed and
cannot come back, and back to 200 once it can."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import conveyor
import psycopg
import pytest
from chaos_support import WorkerSubprocess
from click.testing import CliRunner
from conveyor.cli import cli
from conveyor.probes import ProbeServer
from db_support import enqueue, scalar, wait_for
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from security_support import MakeRole


class ProbesOk(conveyor.Job):
    def run(self, *args: Any) -> None:
        pass


class ProbesFail(conveyor.Job):
    def run(self) -> None:
        raise RuntimeError("probes: failing on purpose")

    def handle_error(self, error: BaseException) -> bool:
        self.retry_in(3600)  # not again during the test
        return True


class ProbesExpire(conveyor.Job):
    def run(self) -> None:
        self.expire()


def get(port: int, path: str) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path: (status, body); 5xx and 4xx included."""
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}{path}", timeout=10
        ) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page: (name, sorted labels) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    page: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return page.get((name, tuple(sorted(labels.items()))), 0.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def worker_with_probes(
    db_url: str,
) -> Iterator[Callable[..., tuple[conveyor.Worker, ProbeServer]]]:
    made: list[tuple[conveyor.Worker, ProbeServer]] = []

    def make(**options: Any) -> tuple[conveyor.Worker, ProbeServer]:
        options.setdefault("poll_interval", 0.2)
        options.setdefault("wait_period", 0.01)
        worker = conveyor.Worker(db_url, **options)
        probes = ProbeServer(worker, port=0, host="127.0.0.1")
        probes.start()
        made.append((worker, probes))
        return worker, probes

    yield make
    for worker, probes in made:
        worker.stop(timeout=5)
        probes.stop()


def test_in_process_probes_follow_the_worker_and_metrics_count_known_jobs(
    worker_with_probes: Callable[..., tuple[conveyor.Worker, ProbeServer]],
    conn: psycopg.Connection[Any],
) -> None:
    worker, probes = worker_with_probes(
        queues=["default", "mail"], worker_count=3, metrics=True
    )
    port = probes.port
    # Not started yet: the process answers, the worker is neither started nor connected.
    assert get(port, "/status") == (200, "running\n")
    assert get(port, "/") == (200, "running\n")
    assert get(port, "/status/started")[0] == 503
    assert get(port, "/status/connected")[0] == 503
    assert get(port, "/nowhere")[0] == 404

    for n in range(3):
        enqueue(conn, "ProbesOk", [n])
    for n in range(2):
        enqueue(conn, "ProbesOk", [n], queue="mail")
    enqueue(conn, "ProbesFail", maximum_retry_count=5)
    enqueue(conn, "ProbesFail", maximum_retry_count=5)
    enqueue(
        conn, "ProbesFail", queue="mail", maximum_retry_count=0
    )  # errored and expired
    enqueue(conn, "ProbesExpire", queue="mail")  # worked and expired
    worker.start()
    assert get(port, "/status/started") == (200, "started\n")
    assert get(port, "/status/connected") == (200, "connected\n")

    # Every job ran once: the ok ones are destroyed, the failed ones wait to
    # retry (an hour away at least) or are expired.
    wait_for(
        lambda: (
            scalar(
                conn,
                "SELECT count(*) = 0 FROM conveyor.jobs"
                " WHERE error_count = 0 AND expired_at IS NULL",
            )
            and scalar(conn, "SELECT count(*) FROM conveyor.jobs WHERE error_count = 1")
            == 3
            and worker.buffer.running == 0
        ),
        timeout=30,
        what="every job worked once",
    )
    status, text = get(port, "/metrics")
    assert status == 200
    page = samples(text)
    expected = {
        ("conveyor_jobs_worked_total", "default", "ProbesOk"): 3,
        ("conveyor_jobs_worked_total", "mail", "ProbesOk"): 2,
        ("conveyor_jobs_worked_total", "mail", "ProbesExpire"): 1,
        ("conveyor_jobs_errored_total", "default", "ProbesFail"): 2,
        ("conveyor_jobs_errored_total", "mail", "ProbesFail"): 1,
        ("conveyor_jobs_expired_total", "mail", "ProbesFail"): 1,
        ("conveyor_jobs_expired_total", "mail", "ProbesExpire"): 1,
    }
    counted = {
        (name, dict(labels)["queue"], dict(labels)["job_class"]): v
        for (name, labels), v in page.items()
        if name.startswith("conveyor_jobs_") and name.endswith("_total")
    }
    assert counted == expected
    # Durations: one observation per job run, by queue and class.
    runs = {("default", "ProbesOk"): 3, ("mail", "ProbesOk"): 2, ("default", "ProbesFail"): 2,
            ("mail", "ProbesFail"): 1, ("mail", "ProbesExpire"): 1}  # fmt: skip
    for (queue, job_class), count in runs.items():
        labels = {"queue": queue, "job_class": job_class}
        assert value(page, "conveyor_job_duration_seconds_count", **labels) == count
        assert (
            value(page, "conveyor_job_duration_seconds_bucket", le="+Inf", **labels)
            == count
        )
        assert (
            value(page, "conveyor_job_duration_seconds_bucket", le="3600.0", **labels)
            == count
        )
    assert value(page, "conveyor_job_start_delay_seconds_count", queue="default") == 5
    assert value(page, "conveyor_job_start_delay_seconds_count", queue="mail") == 4
    # The jobs waited for the worker to start: a positive delay, under a minute here.
    assert (
        0
        < value(page, "conveyor_job_start_delay_seconds_sum", queue="default")
        < 5 * 60
    )
    assert value(page, "conveyor_locker_round_trip_seconds_count") > 0
    assert value(page, "conveyor_locker_reconnects_total") == 0
    assert value(page, "conveyor_locker_connected") == 1
    assert value(page, "conveyor_buffer_maximum_jobs") == 8
    assert value(page, "conveyor_worker_threads") == 3
    assert ("conveyor_buffer_jobs", ()) in page
    assert ("conveyor_running_jobs", ()) in page
    assert value(page, "process_resident_memory_bytes") > 0

    worker.stop(timeout=5)
    assert get(port, "/status") == (200, "running\n")
    assert get(port, "/status/started")[0] == 503
    assert get(port, "/status/connected")[0] == 503


def test_metrics_are_not_served_unless_asked_for(
    worker_with_probes: Callable[..., tuple[conveyor.Worker, ProbeServer]],
) -> None:
    worker, probes = worker_with_probes()
    worker.start()
    assert worker.metrics is None
    assert get(probes.port, "/status/connected")[0] == 200
    assert get(probes.port, "/metrics")[0] == 404


def test_a_taken_port_is_a_clear_error(
    worker_with_probes: Callable[..., tuple[conveyor.Worker, ProbeServer]],
) -> None:
    worker, probes = worker_with_probes()
    worker.start()
    with pytest.raises(
        conveyor.ConveyorError, match=f"cannot listen on 127.0.0.1:{probes.port}"
    ):
        ProbeServer(worker, port=probes.port, host="127.0.0.1")


def test_cli_metrics_needs_a_probe_port(db_url: str) -> None:
    result = CliRunner().invoke(cli, ["worker", "--database-url", db_url, "--metrics"])
    assert result.exit_code == 2
    assert "--metrics" in result.output and "needs --probe-port" in result.output


JOBS = """
import conveyor

class ProbesSubOk(conveyor.Job):
    def run(self, *args):
        pass

class ProbesSubFail(conveyor.Job):
    def run(self):
        raise ValueError("probes: subprocess failure")

    def handle_error(self, error):
        self.retry_in(3600)
        return True
"""


def _role_url(db_url: str, role: str) -> str:
    return psycopg.conninfo.make_conninfo(db_url, user=role)


def test_subprocess_connected_probe_flips_to_503_while_the_locker_reconnects(
    spawn_worker: Callable[..., WorkerSubprocess],
    login_role: MakeRole,
    admin_url: str,
    db_url: str,
    conn: psycopg.Connection[Any],
) -> None:
    """The locker's session is terminated (pg_terminate_backend) while its
    role may not open a new one (CONNECTION LIMIT 0: "too many connections",
    which the locker retries): /status/connected says 503 until the limit is
    lifted, then 200 again; /status and /status/started stay 200."""
    role, _ = login_role("conveyor_worker")
    port = free_port()
    proc = spawn_worker(
        JOBS,
        "--database-url", _role_url(db_url, role),
        "--probe-port", str(port), "--probe-host", "127.0.0.1", "--metrics",
        "--worker-count", "2", "--poll-interval", "0.2", "--log-format", "json",
    )  # fmt: skip
    try:
        wait_for(lambda: _answers(port, "/status/connected") == 200, timeout=30,
                 what="the worker connected")  # fmt: skip
        assert get(port, "/status/started")[0] == 200
        for n in range(4):
            enqueue(conn, "ProbesSubOk", [n], queue="default")
        enqueue(conn, "ProbesSubFail", maximum_retry_count=3)
        wait_for(lambda: scalar(conn, "SELECT count(*) FROM conveyor.jobs WHERE error_count = 0") == 0,
                 timeout=30, what="the jobs worked")  # fmt: skip
        page = samples(wait_for(lambda: _metrics_once_counted(port, 5), timeout=10,
                                what="metrics of the 5 jobs"))  # fmt: skip
        assert (
            value(
                page,
                "conveyor_jobs_worked_total",
                queue="default",
                job_class="ProbesSubOk",
            )
            == 4
        )
        assert (
            value(
                page,
                "conveyor_jobs_errored_total",
                queue="default",
                job_class="ProbesSubFail",
            )
            == 1
        )

        with psycopg.connect(
            admin_url, dbname=conn.info.dbname, autocommit=True
        ) as admin:
            role_id = sql.Identifier(role)
            admin.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT 0").format(role_id))
            killed = scalar(
                admin,
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s",
                [role],
            )
            assert killed >= 1
            wait_for(lambda: _answers(port, "/status/connected") == 503, timeout=30,
                     what="/status/connected 503")  # fmt: skip
            # It stays 503 while no session can be opened; the process still runs.
            for _ in range(5):
                assert get(port, "/status/connected") == (503, "not connected\n")
                assert get(port, "/status")[0] == 200
                assert get(port, "/status/started")[0] == 200
            page = samples(get(port, "/metrics")[1])
            assert value(page, "conveyor_locker_connected") == 0
            assert value(page, "conveyor_locker_reconnects_total") == 1
            admin.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT -1").format(role_id))
        wait_for(lambda: _answers(port, "/status/connected") == 200, timeout=30,
                 what="/status/connected back to 200")  # fmt: skip
        page = samples(get(port, "/metrics")[1])
        assert value(page, "conveyor_locker_connected") == 1
        # LISTENing again: a new job is announced and worked.
        enqueue(conn, "ProbesSubOk", ["after"])
        wait_for(lambda: scalar(conn, "SELECT count(*) FROM conveyor.jobs WHERE error_count = 0") == 0,
                 timeout=30, what="a job after the reconnect")  # fmt: skip
        assert "locker_connection_lost" in proc.output()
    finally:
        proc.popen.terminate()
        assert proc.popen.wait(30) == 0, proc.output()


def _answers(port: int, path: str) -> int | None:
    try:
        return get(port, path)[0]
    except OSError:  # not listening yet
        return None


def _metrics_once_counted(port: int, jobs: int) -> str | None:
    text = get(port, "/metrics")[1]
    page = samples(text)
    counted = sum(
        v
        for (name, _), v in page.items()
        if name == "conveyor_job_duration_seconds_count"
    )
    return text if counted >= jobs else None


def test_subprocess_metrics_without_prometheus_client_is_a_clear_error(
    db_url: str, tmp_path: Any
) -> None:
    """A Python where prometheus_client cannot be imported (a stub that
    raises ImportError first on the path): one line saying what to install."""
    blocker = tmp_path / "blocked"
    blocker.mkdir()
    (blocker / "prometheus_client.py").write_text(
        "raise ImportError('not installed')\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "conveyor", "worker", "--database-url", db_url,
         "--probe-port", "0", "--metrics"],
        env={**os.environ, "PYTHONPATH": str(blocker)}, check=False,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "pip install 'conveyor[metrics]'" in result.stderr
