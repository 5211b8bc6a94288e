"""The locker reports its buffer to conveyor.lockers (report_locker, the
change locker_buffer): the size follows the buffer within a few seconds, a
report is never sent per job, and the dashboard's processes page and
`conveyor top --json` show it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import conveyor
import psycopg
import pytest
from conveyor.locker_report import REPORT_EVERY
from dashboard_support import dashboard_client
from db_support import scalar, wait_for

release = threading.Event()


class ReportBlocker(conveyor.Job):
    def run(self, n: int) -> None:
        release.wait(60)


class ReportNoop(conveyor.Job):
    def run(self, n: int) -> None:
        pass


@pytest.fixture
def start_worker(db_url: str) -> Iterator[Callable[..., conveyor.Worker]]:
    started: list[conveyor.Worker] = []
    release.clear()

    def _start(**options: Any) -> conveyor.Worker:
        options.setdefault("poll_interval", 0.2)
        options.setdefault("wait_period", 0.01)
        worker = conveyor.Worker(db_url, **options)
        started.append(worker)
        worker.start()
        return worker

    yield _start
    release.set()
    for worker in started:
        worker.stop(timeout=5)


def reported(conn: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
    row = conn.execute(
        "SELECT buffer_size, maximum_buffer_size FROM conveyor.lockers"
    ).fetchone()
    return None if row is None else tuple(row)


def enqueue_many(conn: psycopg.Connection[Any], job_class: str, count: int) -> None:
    conn.execute(
        "INSERT INTO conveyor.jobs (job_class, args)"
        " SELECT %s, jsonb_build_array(i) FROM generate_series(1, %s) AS i",
        [job_class, count],
    )


def test_the_buffer_is_reported_and_shown_by_the_dashboard_and_top(
    db_url: str,
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., conveyor.Worker],
) -> None:
    enqueue_many(conn, "ReportBlocker", 10)
    worker = start_worker(worker_count=1, maximum_buffer_size=5, minimum_buffer_size=1)
    # One job runs, five wait in the buffer (its maximum), four stay ready.
    wait_for(lambda: worker.buffer.size == 5, timeout=30, what="a full buffer")
    wait_for(
        lambda: reported(conn) == (5, 5),
        timeout=REPORT_EVERY + 10,
        what="the report of 5/5",
    )
    assert scalar(conn, "SELECT reported_at IS NOT NULL FROM conveyor.lockers")

    with dashboard_client(db_url) as tc:
        page = tc.get("/processes").text
    assert '<th class="num">buffer</th>' in page
    assert "5 / 5</td>" in page

    env = {**os.environ, "CONVEYOR_DATABASE_URL": db_url}
    top = subprocess.run(
        [sys.executable, "-m", "conveyor", "top", "--json", "--once"],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    workers = json.loads(top.stdout.splitlines()[-1])["workers"]
    assert [(w["buffer_size"], w["maximum_buffer_size"]) for w in workers] == [(5, 5)]

    # The jobs finish: the buffer empties, and the report follows.
    release.set()
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM conveyor.jobs") == 0,
        timeout=60,
        what="the jobs drained",
    )
    wait_for(
        lambda: reported(conn) == (0, 5),
        timeout=REPORT_EVERY + 10,
        what="the report of 0/5",
    )


def test_a_worker_that_does_not_report_shows_a_question_mark(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(db_url, autocommit=True) as other:
        other.execute(
            "SELECT conveyor.register_locker('{default}', '{NULL}', 'silent-host', 4242)"
        )
        with dashboard_client(db_url) as tc:
            page = tc.get("/processes").text
    row = page[page.index("silent-host") :]
    row = row[: row.index("</tr>")]
    assert 'title="this worker does not report its buffer">?</span>' in row


def test_reports_are_rate_limited_not_per_job(
    conn: psycopg.Connection[Any], start_worker: Callable[..., conveyor.Worker]
) -> None:
    """With SQL middleware every statement of a cycle passes through it, so
    the reports can be counted: a drain of 2,000 jobs sends a handful."""
    statements: list[str] = []

    def count(query: str, params: Any, proceed: Callable[[], Any]) -> Any:
        statements.append(str(query))
        return proceed()

    enqueue_many(conn, "ReportNoop", 2000)
    started = time.monotonic()
    start_worker(worker_count=4, sql_middleware=[count])
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM conveyor.jobs") == 0,
        timeout=120,
        what="the jobs drained",
    )
    wait_for(lambda: reported(conn) is not None and reported(conn)[0] == 0, timeout=10)
    elapsed = time.monotonic() - started
    reports = sum("report_locker" in s for s in statements)
    cycles = sum("destroy_jobs" in s for s in statements)
    assert 1 <= reports <= elapsed / REPORT_EVERY + 2, (reports, elapsed)
    assert cycles > reports, (cycles, reports)
