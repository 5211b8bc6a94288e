"""The shared fixtures do what the other tests rely on."""

from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict


def test_clone_has_the_conveyor_schema(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute(
        "SELECT schema_name FROM information_schema.schemata WHERE schema_name = 'conveyor'"
    ).fetchone()
    assert row == ("conveyor",)


def test_db_url_keeps_the_admin_connection_but_not_its_database(
    db_url: str, admin_url: str
) -> None:
    clone, admin = conninfo_to_dict(db_url), conninfo_to_dict(admin_url)
    assert str(clone.pop("dbname")).startswith("conveyor_test_")
    admin.pop("dbname", None)
    assert clone == admin


def _has_table(conn: psycopg.Connection[Any], name: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone() == (True,)


def test_clones_are_isolated(conn: psycopg.Connection[Any], new_db: Callable[[], str]) -> None:
    conn.execute("CREATE TABLE public.only_in_this_clone (id int)")
    with psycopg.connect(new_db()) as other:
        assert not _has_table(other, "public.only_in_this_clone")
    assert _has_table(conn, "public.only_in_this_clone")
