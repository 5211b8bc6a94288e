"""`conveyor enqueue` with the flow options: unique key, concurrency key,
labels and batch, in-process and as a subprocess; a full enqueue_limit is a
line on stderr and exit status 3, with nothing inserted. And any command
against a database without the schema says to run `conveyor migrate`."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from test_cli import conveyor_process, run


def test_enqueue_takes_the_flow_options(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    batch = conn.execute("SELECT conveyor.create_batch('from the CLI')").fetchone()[0]  # type: ignore[index]
    conn.commit()
    result = run(
        "enqueue",
        "Hello",
        "[1]",
        "--unique-key",
        "hello-1",
        "--concurrency-key",
        "greetings",
        "--label",
        "cli",
        "--label",
        "flow",
        "--batch-id",
        str(batch),
        "--database-url",
        db_url,
    )
    assert result.exit_code == 0, result.output
    job_id = int(result.output)
    row = conn.execute(
        "SELECT unique_key, concurrency_key, labels, batch_id FROM conveyor.jobs WHERE id = %s",
        (job_id,),
    ).fetchone()
    assert row == ("hello-1", "greetings", ["cli", "flow"], batch)
    # The same unique key: nothing inserted, the unresolved job's id printed.
    again = conveyor_process(
        "enqueue", "Hello", "[2]", "--unique-key", "hello-1", "--database-url", db_url
    )
    assert again.returncode == 0, again.stderr
    assert int(again.stdout) == job_id
    assert conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone() == (1,)


def test_a_full_enqueue_limit_is_exit_status_3(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("SELECT conveyor.set_concurrency_limit('reports', enqueue_limit => 1)")
    conn.commit()
    first = conveyor_process(
        "enqueue", "Report", "--concurrency-key", "reports", "--database-url", db_url
    )
    assert first.returncode == 0, first.stderr
    second = conveyor_process(
        "enqueue", "Report", "--concurrency-key", "reports", "--database-url", db_url
    )
    assert second.returncode == 3, (second.stdout, second.stderr)
    assert second.stdout == ""
    assert second.stderr.strip() == (
        "conveyor: not enqueued: the enqueue_limit of concurrency key 'reports' is full"
    )
    assert conn.execute("SELECT count(*) FROM conveyor.jobs").fetchone() == (1,)


def test_a_batch_that_does_not_exist_is_one_line(db_url: str) -> None:
    result = conveyor_process(
        "enqueue", "Hello", "--batch-id", "999999", "--database-url", db_url
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("conveyor: error: "), result.stderr
    assert "999999" in lines[0]


@pytest.mark.parametrize(
    "command",
    [
        ["jobs"],
        ["pause", "--queue", "mail"],
        ["schedules", "list"],
        ["enqueue", "Hello"],
    ],
    ids=" ".join,
)
def test_a_database_without_the_schema_says_run_migrate(
    schemaless_db_url: str, command: list[str]
) -> None:
    result = conveyor_process(*command, "--database-url", schemaless_db_url)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("conveyor: error: "), result.stderr
    assert lines[0].endswith("run `conveyor migrate`)"), result.stderr
