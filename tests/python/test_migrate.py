"""`conveyor migrate`: install and upgrade in one transaction under a lock,
--check, the bundled plan, an install by an owner without CREATEROLE, and the
one line every command says about a database without the schema."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

import conveyor
from conveyor import migrations
from conveyor.errors import NOT_INSTALLED
from conveyor.plan import install_order, parse_plan
from migrate_support import RELEASED, ROOT, conveyor_cli, empty_db, psql_file, scalar

__all__ = ["empty_db"]  # the fixture, imported for pytest

PLAN = ROOT / "sqitch.plan"


def plan_keys(conninfo: str) -> set[tuple[str, dt.datetime]]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT change, planned_at FROM conveyor.schema_changes").fetchall()
    return {(name, at.astimezone(dt.UTC)) for name, at in rows}


# --- the plan -------------------------------------------------------------------------


def test_the_package_bundles_the_repositorys_sqitch_project() -> None:
    bundled = migrations.schema_dir()
    assert bundled.joinpath("sqitch.plan").read_bytes() == PLAN.read_bytes()
    for folder in ("deploy", "revert", "verify"):
        names = {p.name for p in (ROOT / folder).glob("*.sql")}
        assert {p.name for p in bundled.joinpath(folder).iterdir()} == names
    assert migrations.bundled_plan().project == "conveyor"


def test_an_install_runs_a_reworked_change_once_at_its_newest_version() -> None:
    plan = migrations.bundled_plan()
    order = install_order(plan)
    names = [c.name for c in order]
    assert names.count("roles") == 1  # twice in the plan
    assert set(names) == {c.name for c in plan.changes}
    # enqueue's rework needs the unique_key column, planned after the first
    # enqueue: both versions run, each at its place.
    assert names.count("enqueue") == 2
    roles = order[names.index("roles")]
    assert names.index("roles") == 1 and roles.script == "deploy/roles.sql"
    assert roles.planned_at == max(c.planned_at for c in plan.changes if c.name == "roles")
    released = next(c for c in plan.changes if c.name == "roles")
    assert released.script == "deploy/roles@v0.1.0.sql"


def test_plan_versions_name_releases_and_entries_after_them() -> None:
    plan = migrations.bundled_plan()
    keys = [c.key for c in plan.changes]
    tagged = next(i for i, c in enumerate(plan.changes) if "@v0.1.0" in c.tags)
    assert plan.version_of(set()) == "none"
    assert plan.version_of(set(keys[: tagged + 1])) == "0.1.0"
    assert plan.version_of(set(keys[: tagged + 3])) == "0.1.0+2"
    assert plan.version_of(set(keys[:3])) == "0+3"
    assert plan.version == f"0.1.0+{len(keys) - tagged - 1}"


def test_a_rework_that_needs_a_later_change_keeps_the_plans_order(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    for name in ("a", "a@v1", "b"):
        (tmp_path / "deploy" / f"{name}.sql").write_text("BEGIN;\nCOMMIT;\n")
    text = (
        "%project=p\n"
        "a 2026-01-01T00:00:00Z x <x@x> # a\n@v1 2026-01-01T00:00:01Z x <x@x> # v1\n"
        "b 2026-01-01T00:00:02Z x <x@x> # b\n"
        "a [a@v1 b] 2026-01-01T00:00:03Z x <x@x> # a again, using b\n"
    )
    plan = parse_plan(text, tmp_path)
    assert [c.script for c in plan.changes] == ["deploy/a@v1.sql", "deploy/b.sql", "deploy/a.sql"]
    assert [c.script for c in install_order(plan)] == [
        "deploy/a@v1.sql",
        "deploy/b.sql",
        "deploy/a.sql",
    ]


# --- install, up to date, check -------------------------------------------------------


def test_migrate_installs_records_every_entry_then_is_up_to_date(empty_db: Any) -> None:
    url = empty_db()
    result = conveyor.migrate(url)
    plan = migrations.bundled_plan()
    assert (result.status, result.before, result.record) == ("installed", "none", "none")
    assert len(result.pending) == len(plan.changes)
    assert plan_keys(url) == {c.key for c in plan.changes}
    again = conveyor_cli("migrate", "--database-url", url)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"conveyor schema {plan.version}: up to date"
    check = conveyor_cli("migrate", "--check", "--database-url", url)
    assert (check.returncode, check.stdout.strip()) == (0, again.stdout.strip())


def test_the_cli_says_installed_and_how_many_changes(empty_db: Any) -> None:
    url = empty_db()
    check = conveyor_cli("migrate", "--check", "--database-url", url)
    plan = migrations.bundled_plan()
    assert check.returncode == 1
    assert check.stdout.splitlines()[0] == (
        f"conveyor schema {plan.version}: not installed ({len(plan.changes)} changes pending)"
    )
    assert scalar(url, "SELECT to_regnamespace('conveyor')") is None  # --check changed nothing
    done = conveyor_cli("migrate", "--database-url", url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"conveyor schema {plan.version}: installed ({len(plan.changes)} changes)"
    )


def test_two_migrations_at_once_one_applies_the_other_finds_nothing(empty_db: Any) -> None:
    url = empty_db()
    results: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(conveyor.migrate(url).status)
        except BaseException as error:
            errors.append(error)

    # Hold the migration lock, so that both are waiting for it before either runs.
    with psycopg.connect(url) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (migrations.MIGRATION_LOCK_KEY,))
        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = dt.datetime.now() + dt.timedelta(seconds=20)
        while (
            holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            or (0,)
        )[0] < 2:
            assert dt.datetime.now() < deadline, "the two migrations never waited for the lock"
            time.sleep(0.01)
        holder.rollback()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert sorted(results) == ["installed", "up to date"]
    assert len(plan_keys(url)) == len(migrations.bundled_plan().changes)


@pytest.mark.parametrize("released", RELEASED, ids=lambda p: p.stem)
def test_check_lists_the_pending_changes_and_exits_1(empty_db: Any, released: Path) -> None:
    url = empty_db()
    psql_file(url, released)
    version = released.stem.removeprefix("conveyor-")
    plan = migrations.bundled_plan()
    tagged = next(i for i, c in enumerate(plan.changes) if f"@v{version}" in c.tags)
    pending = plan.changes[tagged + 1 :]
    result = conveyor_cli("migrate", "--check", "--database-url", url)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"conveyor schema {version}: upgrade to {plan.version} pending "
        f"({len(pending)} changes: {', '.join(c.name for c in pending)})"
    )
    assert lines[1:] == [f"  {c.name}: {c.note}" for c in pending]
    assert scalar(url, "SELECT to_regclass('conveyor.schema_changes')") is None
    api = conveyor.migrate(url, check=True)
    assert (api.status, api.before, api.pending) == ("pending", version, pending)


# --- failures change nothing; the owner without CREATEROLE ------------------------------


@pytest.fixture
def owner_role(admin_url: str) -> Any:
    """A LOGIN role with no attribute but LOGIN (no CREATEROLE, no superuser).
    Ask for it before empty_db, so its databases are dropped before it."""
    name = f"conveyor_owner_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    yield name
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _grant_create(admin_url: str, conninfo: str, role: str) -> str:
    """conninfo as ``role``, which may CREATE in that database and nothing more."""
    dbname = psycopg.conninfo.conninfo_to_dict(conninfo)["dbname"]
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(str(dbname)), sql.Identifier(role)
            )
        )
    return make_conninfo(conninfo, user=role)


def test_an_owner_without_createrole_installs_where_the_roles_exist(
    admin_url: str, owner_role: str, empty_db: Any
) -> None:
    # The superuser created the two roles once for the cluster (the template
    # database's install did here); the owner may only CREATE in its database.
    assert scalar(admin_url, "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'conveyor\\_%%er'")
    assert not scalar(
        admin_url,
        "SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = %s",
        (owner_role,),
    )
    url = _grant_create(admin_url, empty_db(), owner_role)
    result = conveyor_cli("migrate", "--database-url", url)
    assert result.returncode == 0, result.stderr
    assert "installed" in result.stdout
    assert (
        scalar(url, "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'conveyor'")
        == owner_role
    )
    # The job roles got their grants from the owner.
    for role, function in (
        (
            "conveyor_enqueuer",
            "conveyor.enqueue(text, jsonb, text, integer, timestamptz, jsonb, integer, text, text, text[], bigint)",
        ),
        ("conveyor_worker", "conveyor.lock_jobs(text[], integer, integer, bigint[])"),
    ):
        assert scalar(url, "SELECT has_function_privilege(%s, %s, 'execute')", (role, function))
    # And the owner upgrades too (nothing pending here, but it takes the lock and reads the record).
    assert conveyor.migrate(url).status == "up to date"


def test_a_migration_that_fails_part_way_leaves_nothing_behind(
    admin_url: str, owner_role: str, empty_db: Any
) -> None:
    plain = empty_db()
    url = _grant_create(admin_url, plain, owner_role)
    # A cluster lacking the roles: hide them (a rename keeps every grant of the
    # other databases), so the owner's install fails at CREATE ROLE, after it
    # created the schema.
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute("ALTER ROLE conveyor_enqueuer RENAME TO conveyor_enqueuer_hidden")
        admin.execute("ALTER ROLE conveyor_worker RENAME TO conveyor_worker_hidden")
        try:
            result = conveyor_cli("migrate", "--database-url", url)
        finally:
            admin.execute("ALTER ROLE conveyor_enqueuer_hidden RENAME TO conveyor_enqueuer")
            admin.execute("ALTER ROLE conveyor_worker_hidden RENAME TO conveyor_worker")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "conveyor_enqueuer and conveyor_worker are missing" in lines[0]
    assert f"{owner_role} may not create them" in lines[0]
    assert scalar(plain, "SELECT to_regnamespace('conveyor')") is None
    assert scalar(plain, "SELECT count(*) FROM pg_class WHERE relname = 'schema_changes'") == 0
    # The roles are back; the same owner's second run works.
    assert conveyor.migrate(url).status == "installed"


# --- a database without the schema ----------------------------------------------------


def test_stats_and_worker_without_the_schema_say_run_conveyor_migrate(empty_db: Any) -> None:
    url = empty_db()
    for args in (["stats"], ["stats", "--queues"], ["worker"]):
        result = conveyor_cli(*args, "--database-url", url, timeout=30)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert lines[-1] == f"conveyor: error: {NOT_INSTALLED}", result.stderr
        assert "Traceback" not in result.stderr


# --- the wheel ------------------------------------------------------------------------


@pytest.mark.slow
def test_conveyor_migrate_works_from_the_built_wheel(empty_db: Any, tmp_path: Path) -> None:
    """Build the wheel, unpack it, and run `python -m conveyor migrate` from
    it (the virtualenv gives the dependencies, the wheel gives conveyor)."""
    built = pip_wheel(tmp_path / "dist")
    with zipfile.ZipFile(built) as wheel:
        names = set(wheel.namelist())
        for folder in ("deploy", "revert", "verify"):
            for path in (ROOT / folder).glob("*.sql"):
                member = f"conveyor/schema/{folder}/{path.name}"
                assert member in names
                assert wheel.read(member) == path.read_bytes()
        assert wheel.read("conveyor/schema/sqitch.plan") == PLAN.read_bytes()
        wheel.extractall(tmp_path / "site")
    url = empty_db()
    env = {"PYTHONPATH": str(tmp_path / "site")}
    where = python_output("import conveyor; print(conveyor.__file__)", env)
    assert where.startswith(str(tmp_path / "site"))
    result = conveyor_cli("migrate", "--database-url", url, env=env)
    assert result.returncode == 0, result.stderr
    assert "installed" in result.stdout


def pip_wheel(dist: Path) -> Path:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(dist),
            str(ROOT / "client"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = dist.glob("conveyor-*.whl")
    return wheel


def python_output(code: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return done.stdout.strip()
