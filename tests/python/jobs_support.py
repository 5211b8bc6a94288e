"""Jobs in every state, made through the SQL a worker calls, for the tests of
`conveyor jobs` and `conveyor top`; and the `conveyor` command as a process."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import psycopg
from db_support import enqueue, lock_key

BACKTRACE = 'Traceback (most recent call last):\n  File "jobs.py", line 7, in run\n{}'


@dataclass
class JobsInEveryState:
    """Ids of jobs made in each state; ``holder`` is the session that holds
    the running job's lock (keep it open for the job to stay running)."""

    ready: int
    scheduled: int
    retrying: int
    expired: int
    finished: int
    running: int
    holder: psycopg.Connection[Any]


def fail_once(
    conn: psycopg.Connection[Any], job_id: int, message: str, *, delay: float, expire: bool = False
) -> None:
    """Record an error on the job as a worker does (conveyor.retry_job)."""
    conn.execute(
        "SELECT conveyor.retry_job(%s::bigint, %s::text, %s::text, %s::double precision,"
        " %s::boolean)",
        (job_id, message, BACKTRACE.format(message), delay, expire),
    )


def hold(holder: psycopg.Connection[Any], job_id: int) -> None:
    """Take the job's advisory lock in ``holder``'s session, as a locker does."""
    holder.execute("SELECT pg_advisory_lock(%s, %s)", lock_key(job_id))


def make_jobs_in_every_state(
    conn: psycopg.Connection[Any],
    holder: psycopg.Connection[Any],
    *,
    prefix: str,
    queue: str = "default",
) -> JobsInEveryState:
    """One job per state in ``queue``, of classes ``<prefix>Ready`` etc."""

    def job(name: str, **options: Any) -> int:
        return enqueue(
            conn,
            f"{prefix}{name}",
            [name.lower(), 1],
            queue=queue,
            data={"made_for": name},
            **options,
        )

    ready = job("Ready")
    scheduled = conn.execute(
        "SELECT id FROM conveyor.enqueue(%s, '[]', queue => %s,"
        " run_at => now() + interval '1 day')",
        (f"{prefix}Scheduled", queue),
    ).fetchone()[0]  # type: ignore[index]
    retrying = job("Retrying")
    fail_once(conn, retrying, "ValueError: first failure", delay=3600)
    expired = job("Expired")
    fail_once(conn, expired, "ValueError: first failure", delay=0)
    fail_once(conn, expired, "ValueError: second failure", delay=0, expire=True)
    finished = job("Finished")
    conn.execute("SELECT conveyor.finish_job(%s::bigint)", (finished,))
    running = job("Running")
    hold(holder, running)
    return JobsInEveryState(ready, int(scheduled), retrying, expired, finished, running, holder)


def states(conn: psycopg.Connection[Any]) -> dict[int, str]:
    """Every job's state by id, as conveyor.jobs_view says."""
    return dict(conn.execute("SELECT id, state FROM conveyor.jobs_view").fetchall())


def conveyor_process(
    *args: str,
    database_url: str,
    timeout: float = 60,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m conveyor ARGS --database-url URL`` as a process (stdin not a terminal)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CONVEYOR_DATABASE_URL")
    }
    env["CONVEYOR_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
        input=stdin if stdin is not None else "",
    )
