"""Any language can enqueue: one job from psql, one from Node.js (npm's `pg`),
each a single statement inside a transaction; another session locks both."""

from __future__ import annotations

import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

ROOT = Path(__file__).resolve().parents[2]
NODE_DIR = ROOT / "tests" / "node"
ENQUEUE_JS = NODE_DIR / "enqueue.js"


def as_url(conninfo: str) -> str:
    """A postgresql:// URL for `conninfo` (node's pg takes URLs only)."""
    if conninfo.startswith(("postgresql://", "postgres://")):
        return conninfo
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    user = urllib.parse.quote(params.pop("user", ""), safe="")
    password = params.pop("password", "")
    if password:
        user += ":" + urllib.parse.quote(password, safe="")
    dbname = urllib.parse.quote(params.pop("dbname", ""), safe="")
    query = urllib.parse.urlencode(params, safe="/")
    return f"postgresql://{user}{'@' if user else ''}/{dbname}" + (f"?{query}" if query else "")


def run(args: list[str], what: str) -> str:
    result = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
    return result.stdout


def test_jobs_enqueued_from_psql_and_node_are_locked_by_another_session(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    # Setup installs these; a missing one is a broken setup, not a reason to skip.
    if shutil.which("node") is None:
        pytest.fail("node is not installed: scripts/setup installs nodejs", pytrace=False)
    if not (NODE_DIR / "node_modules" / "pg").is_dir():
        pytest.fail(
            f"the npm package pg is missing from {NODE_DIR / 'node_modules'}: scripts/setup "
            "installs it (cd tests/node && npm install)",
            pytrace=False,
        )

    run(
        [
            "psql",
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "--dbname",
            db_url,
            "-c",
            "BEGIN; SELECT conveyor.enqueue('FromPsql', '[1]'); COMMIT;",
        ],
        "enqueue from psql",
    )
    node_id = int(run(["node", str(ENQUEUE_JS), as_url(db_url)], "enqueue from node").strip())

    rows = conn.execute(
        "SELECT id, job_class, args FROM conveyor.lock_jobs(max_jobs => 10) ORDER BY job_class"
    ).fetchall()
    assert [(job_class, args) for _, job_class, args in rows] == [
        ("FromNode", ["x"]),
        ("FromPsql", [1]),
    ]
    assert rows[0][0] == node_id
    held = conn.execute("SELECT conveyor.held_job_ids()").fetchone()
    assert held is not None
    assert sorted(held[0]) == sorted(row[0] for row in rows)


@pytest.mark.parametrize(
    ("conninfo", "url"),
    [
        ("postgresql://postgres@127.0.0.1:5432/x", "postgresql://postgres@127.0.0.1:5432/x"),
        (
            "host=/run/pg port=5433 user=postgres dbname=x",
            "postgresql://postgres@/x?host=/run/pg&port=5433",
        ),
    ],
)
def test_as_url(conninfo: str, url: str) -> None:
    assert as_url(conninfo) == url
