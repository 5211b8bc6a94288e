"""ConveyorBackend through PgBouncer in transaction mode, as Django's default
(no prepared statements) is meant to allow: two Django connections take
turns enqueueing through the pooler, so their statements share server
connections. The same with OPTIONS prepare_threshold shows that the test
would see a prepared statement (PgBouncer 1.18 cannot route them)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
from pgbouncer_support import PgBouncer

PROJECT = Path(__file__).resolve().parent / "project"

# Two threads, each with its own Django connection, enqueue in turn (each
# enqueue in autocommit, its own transaction for the pooler).
TAKE_TURNS = """
import sys, threading
from django.conf import settings
if sys.argv[-1] != "none":
    settings.DATABASES["default"]["OPTIONS"]["prepare_threshold"] = int(sys.argv[-1])
from django.db import connections
from shop.tasks import add

turns = [threading.Semaphore(1), threading.Semaphore(0)]
ids, errors = [], []

def client(k):
    for i in range(10):
        turns[k].acquire()
        try:
            if not errors:
                ids.append(int(add.enqueue(k, i).id))
        except Exception as error:
            errors.append(type(error.__cause__ or error).__name__)
        finally:
            turns[1 - k].release()
    connections.close_all()

threads = [threading.Thread(target=client, args=(k,)) for k in (0, 1)]
for t in threads: t.start()
for t in threads: t.join()
print("ids", ",".join(map(str, ids)))
print("errors", ",".join(errors))
"""


@pytest.fixture
def pgbouncer(django_db_url: str) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(django_db_url)
    bouncer.start()
    yield bouncer
    bouncer.close()


def take_turns(url: str, prepare_threshold: str) -> tuple[list[int], list[str]]:
    env = dict(os.environ)
    env["CONVEYOR_DJANGO_DATABASE"] = url
    env["DJANGO_SETTINGS_MODULE"] = "djproject.settings"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import django; django.setup()\n{TAKE_TURNS}",
            prepare_threshold,
        ],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    ids = [int(i) for i in lines.get("ids", "").split(",") if i]
    errors = [e for e in lines.get("errors", "").split(",") if e]
    return ids, errors


def test_enqueue_through_transaction_pooling_on_djangos_defaults(
    pgbouncer: PgBouncer, django_db_url: str
) -> None:
    ids, errors = take_turns(pgbouncer.transaction_url, "none")
    assert errors == []
    assert len(set(ids)) == 20
    with psycopg.connect(django_db_url) as conn:
        found = conn.execute(
            "SELECT count(*) FROM conveyor.jobs WHERE id = ANY(%s)", [ids]
        ).fetchone()
    assert found == (20,)


def test_a_prepare_threshold_breaks_under_transaction_pooling(
    pgbouncer: PgBouncer,
) -> None:
    """The control: with statements prepared (the 2nd execution on each
    connection), the two clients' ``_pg3_0`` collide on a shared server
    connection or miss it on another one."""
    ids, errors = take_turns(pgbouncer.transaction_url, "1")
    assert errors, ids
    assert errors[0] in ("DuplicatePreparedStatement", "InvalidSqlStatementName"), (
        errors
    )
