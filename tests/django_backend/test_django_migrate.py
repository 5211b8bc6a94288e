"""`manage.py migrate` installs conveyor's schema (the app's migration) and
upgrades an older one (post_migrate), with conveyor's own migrate code; and
`manage.py conveyor_worker` takes conveyor worker's options."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import conveyor
import psycopg
from conftest import manage, recreate, with_dbname

RELEASED = (
    Path(__file__).resolve().parents[2] / "sql" / "released" / "conveyor-0.1.0.sql"
)


def test_migrate_installs_then_finds_it_up_to_date(admin_url: str) -> None:
    name = "conveyor_django_install"
    recreate(admin_url, name)
    url = with_dbname(admin_url, name)
    try:
        done = manage(url, "migrate", "--no-input")
        assert done.returncode == 0, done.stderr
        assert "Applying conveyor.0001_conveyor_schema" in done.stdout
        assert ": installed (" in done.stdout
        assert conveyor.migrate(url, check=True).status == "up to date"
        shown = manage(url, "showmigrations", "conveyor")
        assert "[X] 0001_conveyor_schema" in shown.stdout
        again = manage(url, "migrate", "--no-input")
        assert again.returncode == 0 and "No migrations to apply" in again.stdout
    finally:
        recreate(admin_url, name, drop_only=True)


def test_migrate_upgrades_a_released_schema(admin_url: str) -> None:
    name = "conveyor_django_upgrade"
    recreate(admin_url, name)
    url = with_dbname(admin_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(RELEASED.read_bytes())
            conn.execute("SELECT conveyor.enqueue('KeptAcrossTheUpgrade', '[1]')")
        assert conveyor.migrate(url, check=True).status == "pending"
        done = manage(url, "migrate", "--no-input")
        assert done.returncode == 0, done.stderr
        assert "upgraded from 0.1.0" in done.stdout
        assert conveyor.migrate(url, check=True).status == "up to date"
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT job_class, args FROM conveyor.jobs").fetchone()
        assert row == ("KeptAcrossTheUpgrade", [1])
    finally:
        recreate(admin_url, name, drop_only=True)


def test_migrate_upgrades_after_the_migration_ran(admin_url: str) -> None:
    """A project whose 0001 ran with an older conveyor: `manage.py migrate`
    with no Django migration to run still upgrades the schema (post_migrate)."""
    name = "conveyor_django_post_migrate"
    recreate(admin_url, name)
    url = with_dbname(admin_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(RELEASED.read_bytes())
        # --fake: 0001 is recorded, its RunPython not run (as if it had run
        # with conveyor 0.1.0); post_migrate follows all the same.
        faked = manage(url, "migrate", "conveyor", "0001", "--fake", "--no-input")
        assert faked.returncode == 0, faked.stderr
        assert "FAKED" in faked.stdout
        assert "upgraded from 0.1.0" in faked.stdout
        assert conveyor.migrate(url, check=True).status == "up to date"
        again = manage(url, "migrate", "--no-input")
        assert again.returncode == 0, again.stderr
        assert (
            "No migrations to apply" in again.stdout and "upgraded" not in again.stdout
        )
    finally:
        recreate(admin_url, name, drop_only=True)


def test_worker_command_takes_conveyor_worker_options(django_db_url: str) -> None:
    shown = manage(django_db_url, "conveyor_worker", "--help")
    assert shown.returncode == 0, shown.stderr
    for option in (
        "--queue-name",
        "--worker-count",
        "--poll-interval",
        "--shutdown-timeout",
    ):
        assert option in shown.stdout
    assert "manage.py conveyor_worker" in shown.stdout
    bad = manage(django_db_url, "conveyor_worker", "--backend", "nope")
    assert bad.returncode != 0 and "nope" in bad.stderr
    wrong = manage(django_db_url, "conveyor_worker", "--worker-count", "0")
    assert wrong.returncode == 2 and "--worker-count" in wrong.stderr


def test_worker_runs_for_a_second_backend(start_worker: Any) -> None:
    """--backend other: the worker connects through that backend's alias
    (a queue no other worker works, so this worker is the one that ran it)."""
    from django_support import wait_finished
    from shop.tasks import search_path

    result = search_path.using(queue_name="other-solo").enqueue()
    worker = start_worker("--backend", "other", "-q", "other-solo")
    done = wait_finished(search_path, result.id)
    assert done.return_value == "shop_schema"
    assert done.worker_ids[-1].endswith(f":{worker.process.pid}")
