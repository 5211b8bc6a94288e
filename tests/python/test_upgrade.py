"""Upgrades from every released schema (sql/released/conveyor-VERSION.sql, the
install file of that release, frozen): jobs in every state survive `conveyor
migrate` and are worked after it, and the upgraded schema is a fresh install's.
A sqitch-deployed release is upgraded through sqitch, whose registry then
lists every change."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
import pytest
from psycopg.conninfo import conninfo_to_dict

import conveyor
from conveyor import migrations
from migrate_support import RELEASED, ROOT, conveyor_cli, empty_db, psql_file, scalar
from test_sql_install import dump_schema, sqitch_target

__all__ = ["empty_db"]  # the fixture, imported for pytest

ran: list[int] = []
ran_lock = threading.Lock()


class UpgradeCount(conveyor.Job):
    job_class = "UpgradeCount"

    def run(self, n: int) -> None:
        with ran_lock:
            ran.append(n)


def version_of(path: Path) -> str:
    return path.stem.removeprefix("conveyor-")


def test_there_is_a_released_schema_to_start_from() -> None:
    assert RELEASED, "sql/released/ holds no conveyor-VERSION.sql"


@pytest.mark.parametrize("released", RELEASED, ids=lambda p: p.stem)
def test_the_frozen_file_is_the_released_one(
    admin_url: str, empty_db: Callable[[], str], released: Path
) -> None:
    """The frozen install file gives the schema that `sqitch deploy --to
    @vVERSION` gives (the plan's tag, with the reworked changes' @VERSION
    files): checked everywhere, git tags or not. Where the git tag is here
    too, the file is byte for byte the tagged release's sql/conveyor.sql."""
    from_file, from_sqitch = empty_db(), empty_db()
    psql_file(from_file, released)
    target = sqitch_target(admin_url, str(conninfo_to_dict(from_sqitch)["dbname"]))
    _sqitch(
        "deploy",
        "--verify",
        "--to",
        f"@v{version_of(released)}",
        target,
        env=_sqitch_env(from_sqitch),
    )
    file_dump, sqitch_dump = dump_schema(from_file), dump_schema(from_sqitch)
    assert "CREATE FUNCTION conveyor.lock_jobs(" in file_dump
    assert file_dump == sqitch_dump
    tag = f"v{version_of(released)}"
    shown = subprocess.run(
        ["git", "show", f"{tag}:sql/conveyor.sql"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if shown.returncode == 0:
        assert released.read_bytes() == shown.stdout


def jobs_table(
    conninfo: str, columns: list[str] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(the column names, the rows) of conveyor.jobs: every column, or the
    given ones (the columns a release had, read again after its upgrade)."""
    chosen = (
        sql.SQL("*")
        if columns is None
        else sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with psycopg.connect(conninfo) as conn:
        cursor = conn.execute(
            sql.SQL("SELECT {} FROM conveyor.jobs ORDER BY id").format(chosen)
        )
        return [column.name for column in cursor.description or []], cursor.fetchall()


@pytest.mark.parametrize("how", ["cli", "api"])
@pytest.mark.parametrize("released", RELEASED, ids=lambda p: p.stem)
def test_an_upgrade_keeps_every_job_and_gives_a_fresh_install_schema(
    empty_db: Callable[[], str], released: Path, how: str
) -> None:
    url = empty_db()
    psql_file(url, released)
    with psycopg.connect(url, autocommit=True) as conn:
        ready = [
            conn.execute(
                "SELECT (conveyor.enqueue('UpgradeCount', %s::jsonb)).id", (f"[{n}]",)
            ).fetchone()[0]  # type: ignore[index]
            for n in range(5)
        ]
        conn.execute(
            "SELECT conveyor.enqueue('UpgradeCount', '[100]', run_at => now() + interval '1 day')"
        )
        errored = conn.execute(
            "SELECT (conveyor.enqueue('UpgradeCount', '[200]', queue => 'errors')).id"
        ).fetchone()[0]  # type: ignore[index]
        assert conn.execute(
            "SELECT count(*) FROM conveyor.lock_jobs(ARRAY['errors'], 1)"
        ).fetchone() == (1,)
        conn.execute(
            "SELECT conveyor.retry_job(%s, 'RuntimeError: boom', 'a backtrace')",
            (errored,),
        )
        held = conn.execute(
            "SELECT (conveyor.enqueue('UpgradeCount', '[300]', priority => 1)).id"
        ).fetchone()[0]  # type: ignore[index]
    # Another live session holds the job `held` while the upgrade runs.
    with psycopg.connect(url, autocommit=True) as holder:
        assert holder.execute(
            "SELECT id FROM conveyor.lock_jobs_by_id(ARRAY[%s]::bigint[])", (held,)
        ).fetchall() == [(held,)]
        columns, before = jobs_table(url)
        if how == "cli":
            result = conveyor_cli("migrate", "--database-url", url)
            assert result.returncode == 0, result.stderr
            out = result.stdout.strip()
        else:
            out = conveyor.migrate(url).describe()
        plan = migrations.bundled_plan()
        assert out.startswith(
            f"conveyor schema {plan.version}: upgraded from {version_of(released)} ("
        ), out
        # Every job keeps every value it had; columns added since hold their
        # defaults (no job had a unique_key before there were keys).
        assert jobs_table(url, columns)[1] == before
        assert (
            scalar(
                url, "SELECT count(*) FROM conveyor.jobs WHERE unique_key IS NOT NULL"
            )
            == 0
        )
        assert conveyor.migrate(url).status == "up to date"

        # Workable: a worker runs the ready jobs exactly once, and not the
        # held, the scheduled or the retrying one.
        ran.clear()
        worker = conveyor.Worker(
            url, worker_count=2, poll_interval=0.2, wait_period=0.01
        )
        worker.start()
        try:
            deadline = time.monotonic() + 20
            while sorted(ran) != list(range(5)):
                assert time.monotonic() < deadline, f"ran {ran}"
                time.sleep(0.02)
            time.sleep(0.5)  # time for a second run of any job to show
        finally:
            assert worker.stop(timeout=10)
        assert sorted(ran) == list(range(5))
        left = {row[0] for row in jobs_table(url)[1]}
        assert left.isdisjoint(ready) and {held, errored} <= left and len(left) == 3
        with psycopg.connect(url) as conn:
            assert conn.execute(
                "SELECT error_count, last_error_message FROM conveyor.jobs WHERE id = %s",
                (errored,),
            ).fetchone() == (1, "RuntimeError: boom")
        # The holder still holds its job, and resolves it on the new schema.
        assert holder.execute(
            "SELECT conveyor.destroy_job(%s)", (held,)
        ).fetchone() == (True,)

    fresh = empty_db()
    conveyor.migrate(fresh)
    upgraded_dump, fresh_dump = dump_schema(url), dump_schema(fresh)
    assert "CREATE TABLE conveyor.schema_changes" in upgraded_dump
    assert upgraded_dump == fresh_dump


def _sqitch_env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("SQITCH_FULLNAME", "conveyor tests")
    env.setdefault("SQITCH_EMAIL", "tests@conveyor.invalid")
    return env


def _sqitch(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["sqitch", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_sqitch_deployed_release_is_upgraded_by_sqitch(
    admin_url: str, empty_db: Callable[[], str], tmp_path: Path
) -> None:
    if shutil.which("sqitch") is None:
        pytest.fail("sqitch is not installed: scripts/setup installs it")
    url = empty_db()
    target = sqitch_target(admin_url, str(conninfo_to_dict(url)["dbname"]))
    env = _sqitch_env(url)
    _sqitch("deploy", "--verify", "--to", "@v0.1.0", target, env=env)
    with psycopg.connect(url, autocommit=True) as conn:
        job = conn.execute(
            "SELECT (conveyor.enqueue('UpgradeCount', '[1]')).id"
        ).fetchone()

    # Without sqitch on PATH: one clear line, nothing changed.
    bare = tmp_path / "bin"
    bare.mkdir()
    result = conveyor_cli(
        "migrate",
        "--database-url",
        url,
        env={"PATH": str(bare)},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "conveyor: error: sqitch deployed this database's conveyor schema (sqitch.changes "
        "records it), so sqitch must upgrade it, and sqitch is not on PATH: install sqitch, "
        "or run `sqitch deploy` from a conveyor checkout of this version"
    ]
    assert "Nothing to deploy" not in _sqitch("status", target, env=env)

    result = conveyor_cli("migrate", "--database-url", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"conveyor schema {migrations.bundled_plan().version}: upgraded from 0.1.0 ("
    )
    status = _sqitch("status", target, env=env)
    assert "Nothing to deploy (up-to-date)" in status, status
    plan = migrations.bundled_plan()
    assert scalar(
        url, "SELECT count(*) FROM sqitch.changes WHERE project = 'conveyor'"
    ) == len(plan.changes)
    assert scalar(url, "SELECT count(*) FROM conveyor.jobs WHERE id = %s", job) == 1
    assert conveyor.migrate(url).status == "up to date"
