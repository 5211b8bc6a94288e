"""The worker's index upkeep (conveyor.index_upkeep, --reindex-interval):
after a burst drains, the indexes it filled are rebuilt with REINDEX
CONCURRENTLY and shrink back; one worker at a time; a role that does not own
them is told once; an interrupted rebuild's leftover is dropped; jobs keep
being enqueued and worked meanwhile. Real PostgreSQL, a real `conveyor
worker` subprocess."""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from db_support import scalar, wait_for
from psycopg.conninfo import make_conninfo
from security_support import MakeRole

import conveyor
from conveyor.cleanup import CLEANUP_LOCK
from conveyor.cli import cli
from conveyor.index_upkeep import INDEX_UPKEEP_LOCK, IndexUpkeep

#: Small enough for a burst of a few ten thousand jobs to exceed.
SMALL = 256 * 1024


def burst_and_drain(conn: psycopg.Connection[Any], jobs: int) -> None:
    """A burst enqueued, then gone, then vacuumed: what a drained burst
    leaves behind (the indexes at its high-water mark)."""
    conn.execute(
        "SELECT count(*) FROM conveyor.enqueue_many((SELECT jsonb_agg(jsonb_build_object("
        "'job_class', 'Burst', 'queue', 'burst', 'args', jsonb_build_array(g)))"
        " FROM generate_series(1, %s) AS g))",
        [jobs],
    )
    conn.execute("DELETE FROM conveyor.jobs WHERE queue = 'burst'")
    conn.execute("VACUUM conveyor.jobs")


def size(conn: psycopg.Connection[Any], index: str) -> int:
    return int(scalar(conn, "SELECT pg_relation_size(%s::regclass)", [f"conveyor.{index}"]))


def bloated(conn: psycopg.Connection[Any], minimum_size: int) -> set[str]:
    rows = conn.execute(
        "SELECT index_name FROM conveyor.index_bloat(%s) WHERE NOT invalid", [minimum_size]
    ).fetchall()
    return {r[0] for r in rows}


def test_upkeep_shrinks_the_indexes_a_burst_left_and_keeps_them_valid(
    conn: psycopg.Connection[Any],
) -> None:
    kept = [conveyor.enqueue(conn, "Kept", i, queue="upkeep") for i in range(50)]
    burst_and_drain(conn, 30_000)
    before = size(conn, "jobs_ready_idx")
    assert bloated(conn, SMALL) == {"jobs_pkey", "jobs_ready_idx"}

    upkeep = IndexUpkeep(conn.info.dsn, interval=60, minimum_size=SMALL)
    assert upkeep.run_once() == 2
    assert sorted(upkeep.rebuilt) == ["jobs_pkey", "jobs_ready_idx"]
    after = size(conn, "jobs_ready_idx")
    assert after < before / 10, (before, after)
    assert bloated(conn, SMALL) == set()
    # Valid, and no leftover: the rebuilt indexes serve as before.
    assert scalar(
        conn,
        "SELECT count(*) FROM pg_index WHERE NOT indisvalid"
        " AND indrelid = 'conveyor.jobs'::regclass",
    ) == 0
    locked = conn.execute(
        "SELECT id FROM conveyor.lock_jobs(ARRAY['upkeep'], 100)"
    ).fetchall()
    assert sorted(r[0] for r in locked) == kept
    # Nothing more to do: the next run rebuilds nothing.
    assert upkeep.run_once() == 0
    assert upkeep.runs == 2


def test_one_worker_at_a_time_and_apart_from_the_cleanup(
    conn: psycopg.Connection[Any], connect: Callable[..., psycopg.Connection[Any]]
) -> None:
    burst_and_drain(conn, 30_000)
    before = size(conn, "jobs_ready_idx")
    other = connect()
    assert scalar(other, "SELECT pg_try_advisory_lock(%s, %s)", INDEX_UPKEEP_LOCK)
    upkeep = IndexUpkeep(conn.info.dsn, interval=60, minimum_size=SMALL)
    assert upkeep.run_once() is None  # another worker's turn
    assert upkeep.runs == 0
    assert size(conn, "jobs_ready_idx") == before
    other.execute("SELECT pg_advisory_unlock(%s, %s)", INDEX_UPKEEP_LOCK)
    # The cleanup's lock is another: holding it does not stop the upkeep.
    assert scalar(other, "SELECT pg_try_advisory_lock(%s, %s)", CLEANUP_LOCK)
    assert upkeep.run_once() == 2
    assert size(conn, "jobs_ready_idx") < before / 10


def test_a_role_that_does_not_own_the_indexes_is_told_once(
    conn: psycopg.Connection[Any],
    db_url: str,
    login_role: MakeRole,
    caplog: pytest.LogCaptureFixture,
) -> None:
    burst_and_drain(conn, 30_000)
    before = size(conn, "jobs_ready_idx")
    name, _ = login_role("conveyor_worker")
    upkeep = IndexUpkeep(make_conninfo(db_url, user=name), interval=60, minimum_size=SMALL)
    with caplog.at_level(logging.INFO, logger="conveyor"):
        assert upkeep.run_once() == 0
        assert upkeep.run_once() == 0
    refused = [r for r in caplog.records if r.msg == "index_upkeep_not_permitted"]
    assert len(refused) == 1, [r.msg for r in caplog.records]
    assert "must be owner of index" in refused[0].conveyor["error"]  # type: ignore[attr-defined]
    assert "index_upkeep_failed" not in [r.msg for r in caplog.records]
    assert size(conn, "jobs_ready_idx") == before  # untouched
    assert upkeep.runs == 2  # it held the lock and ran; it only could not rebuild


def test_a_schema_older_than_index_bloat_is_told_once(
    conn: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    # A worker of this version on a database not migrated yet: the upkeep
    # says so once and the worker goes on.
    conn.execute("DROP FUNCTION conveyor.index_bloat(bigint, double precision)")
    upkeep = IndexUpkeep(conn.info.dsn, interval=60)
    with caplog.at_level(logging.INFO, logger="conveyor"):
        assert upkeep.run_once() == 0
        assert upkeep.run_once() == 0
    events = [r.msg for r in caplog.records]
    assert events.count("index_upkeep_not_permitted") == 1, events
    assert "index_upkeep_failed" not in events


def test_a_leftover_of_an_interrupted_rebuild_is_dropped(
    conn: psycopg.Connection[Any],
) -> None:
    # What REINDEX CONCURRENTLY leaves when it is cancelled: an invalid copy
    # named *_ccnew, kept up to date by every write and used by no read.
    conn.execute("CREATE INDEX jobs_ready_idx_ccnew ON conveyor.jobs (queue, priority, run_at, id)")
    conn.execute(
        "UPDATE pg_index SET indisvalid = false"
        " WHERE indexrelid = 'conveyor.jobs_ready_idx_ccnew'::regclass"
    )
    upkeep = IndexUpkeep(conn.info.dsn, interval=60)
    assert upkeep.run_once() == 1
    assert upkeep.dropped == ["jobs_ready_idx_ccnew"]
    assert scalar(conn, "SELECT to_regclass('conveyor.jobs_ready_idx_ccnew')") is None


def test_the_worker_command_rebuilds_while_jobs_run(
    conn: psycopg.Connection[Any], spawn_worker: Callable[..., Any]
) -> None:
    # Over the default minimum size (4 MB): the worker uses the defaults.
    burst_and_drain(conn, 120_000)
    before = size(conn, "jobs_ready_idx")
    assert before > 4 * 1024 * 1024
    source = (
        "import conveyor\n\n"
        "class UpkeepJob(conveyor.Job):\n"
        "    def run(self, n):\n"
        "        pass\n"
    )
    proc = spawn_worker(source, "--queue-name", "upkeep", "--reindex-interval", "1s")
    enqueued = 0
    deadline = time.monotonic() + 30
    # Jobs are enqueued and worked all along the rebuild.
    while size(conn, "jobs_ready_idx") >= before / 10 and time.monotonic() < deadline:
        time.sleep(0.02)
        conn.execute(
            "SELECT count(*) FROM conveyor.enqueue_many((SELECT jsonb_agg(jsonb_build_object("
            "'job_class', 'UpkeepJob', 'queue', 'upkeep', 'args', jsonb_build_array(g)))"
            " FROM generate_series(1, 100) AS g))"
        )
        enqueued += 100
    assert size(conn, "jobs_ready_idx") < before / 10
    assert enqueued > 0
    wait_for(
        lambda: scalar(conn, "SELECT count(*) FROM conveyor.jobs WHERE queue = 'upkeep'") == 0,
        timeout=60,
        what="every job enqueued during the rebuild worked",
    )
    proc.popen.send_signal(signal.SIGTERM)
    assert proc.popen.wait(30) == 0, proc.output()
    output = proc.output()
    assert "index_reindexed" in output and "jobs_ready_idx" in output, output
    assert "index_upkeep_failed" not in output, output


def test_the_option_is_checked() -> None:
    result = CliRunner().invoke(
        cli, ["worker", "--database-url", "postgresql:///none", "--reindex-interval", "soon"]
    )
    assert result.exit_code == 2
    assert "not a duration: 'soon'" in result.output
    with pytest.raises(ValueError, match="reindex_interval must not be negative"):
        conveyor.Worker("postgresql:///none", reindex_interval=-1)
