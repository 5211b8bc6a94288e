"""The Node.js example worker (examples/node-worker/worker.js), written from
docs/reference/protocol.md alone, works jobs enqueued from psql against a real
database: exactly once, retries with the error recorded, finish and expire,
and a clean SIGTERM. It proves the protocol document is enough."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from db_support import scalar, wait_for

ROOT = Path(__file__).resolve().parents[2]
WORKER_DIR = ROOT / "examples" / "node-worker"
# The advisory-lock key1 of conveyor's job locks (protocol.md, "Advisory-lock keys").
# The worker registry's table (the one line to change if it is renamed).
REGISTRY = "conveyor.lockers"
CONVEYOR_LOCKS = "locktype = 'advisory' AND objsubid = 2 AND classid = 1129270870"


def psql(db_url: str, statement: str) -> str:
    """Run one statement with psql, as an application in any language would."""
    result = subprocess.run(
        ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db_url, "-c", statement],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


class NodeWorker:
    def __init__(self, db_url: str, **env: str) -> None:
        self.process = subprocess.Popen(
            ["node", "worker.js"],
            cwd=WORKER_DIR,
            env={**os.environ, "DATABASE_URL": db_url, "POLL_INTERVAL_MS": "300", **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.signalled = False

    def terminate(self) -> None:
        """One SIGTERM (a second one would kill it at once, by design)."""
        if not self.signalled:
            self.process.send_signal(signal.SIGTERM)
            self.signalled = True

    def stop(self, timeout: float = 20.0) -> tuple[int, list[dict[str, Any]], str]:
        """SIGTERM; its exit code, its JSON log lines and its stderr."""
        self.terminate()
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, [json.loads(line) for line in out.splitlines()], err


@pytest.fixture
def start_worker(db_url: str) -> Iterator[Callable[..., NodeWorker]]:
    if shutil.which("node") is None:
        pytest.fail("node is not installed: scripts/setup installs nodejs", pytrace=False)
    if not (WORKER_DIR / "node_modules" / "pg").is_dir():
        pytest.fail(
            f"the npm package pg is missing from {WORKER_DIR / 'node_modules'}: scripts/setup "
            "installs it (cd examples/node-worker && npm ci)",
            pytrace=False,
        )
    psql(db_url, "CREATE TABLE node_worker_effects (job_id bigint NOT NULL, value text)")
    started: list[NodeWorker] = []

    def _start(**env: str) -> NodeWorker:
        worker = NodeWorker(db_url, **env)
        started.append(worker)
        return worker

    yield _start
    for worker in started:
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.communicate()


def worker_pid(conn: psycopg.Connection[Any]) -> int | None:
    """The backend pid of the registered locker session, once registered."""
    row = conn.execute(f"SELECT pid FROM {REGISTRY}").fetchone()
    return None if row is None else int(row[0])


def locked_ids(conn: psycopg.Connection[Any], pid: int) -> set[int]:
    rows = conn.execute(f"SELECT objid FROM pg_locks WHERE {CONVEYOR_LOCKS} AND pid = %s", (pid,))
    return {int(objid) for (objid,) in rows}


def test_jobs_from_psql_are_worked_once_retried_finished_and_expired(
    db_url: str, start_worker: Callable[..., NodeWorker], connect: Callable[..., Any]
) -> None:
    conn = connect()
    # 20 jobs before the worker starts: found by its first poll.
    before = psql(
        db_url,
        "SELECT conveyor.enqueue_many((SELECT jsonb_agg(jsonb_build_object("
        "'job_class', 'RecordEffect', 'args', jsonb_build_array('before ' || i))) "
        "FROM generate_series(1, 20) AS i))",
    ).split()
    worker = start_worker()
    wait_for(lambda: worker_pid(conn), 20, "the node worker to register")
    # 20 more while it runs, one statement each: announced by NOTIFY.
    during = [
        psql(db_url, f"""SELECT (conveyor.enqueue('RecordEffect', '["during {i}"]')).id""")
        for i in range(20)
    ]
    flaky = psql(db_url, """SELECT (conveyor.enqueue('Flaky', '["flaky"]')).id""")
    # kwargs come from data.kwargs: fail_times 0 means "do not fail".
    steady = psql(
        db_url,
        """SELECT (conveyor.enqueue('Flaky', '["steady"]', """
        """data => '{"kwargs": {"fail_times": 0}}')).id""",
    )
    unknown = psql(db_url, "SELECT (conveyor.enqueue('NoSuchClass', '[]')).id")
    finished = psql(db_url, "SELECT (conveyor.enqueue('Sleep', '[10]')).id")
    expired = psql(db_url, "SELECT (conveyor.enqueue('Obsolete', '[]')).id")

    # Flaky fails once (retry_job: error recorded, run_at 4 s later), then works.
    wait_for(
        lambda: scalar(conn, "SELECT count(*) = 42 FROM node_worker_effects"),
        30,
        "every RecordEffect and Flaky job to record its effect",
    )
    code, events, stderr = worker.stop()

    assert code == 0, stderr
    assert events[-1]["event"] == "worker_stopped"
    effects = conn.execute("SELECT job_id, count(*) FROM node_worker_effects GROUP BY job_id")
    assert dict(effects.fetchall()) == {int(i): 1 for i in [*before, *during, flaky, steady]}, (
        "each job's effect exactly once"
    )
    outcomes = [(e["id"], e["outcome"]) for e in events if e["event"] == "job_worked"]
    assert outcomes.count((flaky, "retried")) == 1
    assert (steady, "retried") not in outcomes

    jobs = {
        str(row[0]): row[1:]
        for row in conn.execute(
            "SELECT id, error_count, last_error_message, last_error_backtrace LIKE '%worker.js%',"
            " finished_at IS NOT NULL, expired_at IS NOT NULL FROM conveyor.jobs"
        )
    }
    # The unknown class's job stays, with its error recorded for its next run
    # (a retry 4 s later may have failed again).
    error_count, *rest = jobs.pop(unknown)
    assert error_count >= 1
    assert rest == ["unknown job class NoSuchClass", True, False, False]
    assert jobs.pop(finished) == (0, None, None, True, False)
    assert jobs.pop(expired) == (0, None, None, False, True)
    assert jobs == {}, "every RecordEffect and Flaky job destroyed"
    assert scalar(conn, f"SELECT count(*) FROM {REGISTRY}") == 0, "unregistered"
    assert scalar(conn, f"SELECT count(*) FROM pg_locks WHERE {CONVEYOR_LOCKS}") == 0


def test_sigterm_gives_buffered_jobs_back_finishes_the_running_one_and_exits_0(
    db_url: str, start_worker: Callable[..., NodeWorker], connect: Callable[..., Any]
) -> None:
    conn = connect()
    sleep = psql(db_url, "SELECT (conveyor.enqueue('Sleep', '[3000]', priority => 1)).id")
    waiting = psql(
        db_url,
        "SELECT conveyor.enqueue_many((SELECT jsonb_agg(jsonb_build_object("
        "'job_class', 'RecordEffect', 'args', jsonb_build_array(i))) "
        "FROM generate_series(1, 5) AS i))",
    ).split()
    worker = start_worker(WORKER_COUNT="1")
    pid = wait_for(lambda: worker_pid(conn), 20, "the node worker to register")
    # One slot runs Sleep; the buffer (two jobs for one slot) holds another.
    held = wait_for(lambda: len(locked_ids(conn, pid)) >= 2 and locked_ids(conn, pid), 10)
    assert int(sleep) in held

    worker.terminate()
    # Buffered jobs are given back at once, while Sleep still runs.
    wait_for(lambda: locked_ids(conn, pid) == {int(sleep)}, 2, "buffered jobs to be unlocked")
    assert worker.process.poll() is None, "the worker waits for its running job"
    code, events, stderr = worker.stop()

    assert code == 0, stderr
    assert [e["event"] for e in events][-3:] == ["worker_stopping", "job_worked", "worker_stopped"]
    assert scalar(conn, "SELECT finished_at IS NOT NULL FROM conveyor.jobs WHERE id = %s", (sleep,))
    assert scalar(conn, "SELECT count(*) FROM node_worker_effects") == 0
    rows = conn.execute("SELECT id, error_count FROM conveyor.jobs WHERE id <> %s", (sleep,))
    assert sorted(rows.fetchall()) == [(int(i), 0) for i in waiting], "untouched, ready"
    assert scalar(conn, f"SELECT count(*) FROM {REGISTRY}") == 0, "unregistered"
    assert scalar(conn, f"SELECT count(*) FROM pg_locks WHERE {CONVEYOR_LOCKS}") == 0
