"""sql/conveyor.sql, the single-file install generated from the plan, gives the
same schema as `sqitch deploy`, and is up to date with the plan."""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

ROOT = Path(__file__).resolve().parents[2]
INSTALL_SQL = ROOT / "sql" / "conveyor.sql"
GEN_SQL = ROOT / "scripts" / "gen-sql"


def run(args: list[str], what: str, env: dict[str, str] | None = None) -> str:
    missing = shutil.which(args[0]) is None and not Path(args[0]).exists()
    if missing:
        pytest.fail(f"{args[0]} is not installed: scripts/setup installs it")
    result = subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, check=False, env=env, timeout=120
    )
    if result.returncode != 0:
        pytest.fail(
            f"{what} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}",
            pytrace=False,
        )
    return result.stdout


def sqitch_target(admin_url: str, dbname: str) -> str:
    """A db:pg: URI for `dbname` on the admin URL's server. A unix-socket host
    (or none) goes in the query, which sqitch hands to libpq as keywords."""
    params = {k: str(v) for k, v in conninfo_to_dict(admin_url).items() if v is not None}
    params.pop("dbname", None)
    user = params.pop("user", "")
    password = params.pop("password", "")
    host = params.pop("host", "")
    port = params.pop("port", "")
    userinfo = urllib.parse.quote(user, safe="")
    if password:
        userinfo += ":" + urllib.parse.quote(password, safe="")
    if userinfo:
        userinfo += "@"
    query = dict(params)
    if host and not host.startswith("/") and "," not in host:
        netloc = urllib.parse.quote(host, safe="") + (f":{port}" if port else "")
    else:
        netloc = ""
        if host:
            query["host"] = host
        if port:
            query["port"] = port
    uri = f"db:pg://{userinfo}{netloc}/{urllib.parse.quote(dbname, safe='')}"
    if query:
        uri += "?" + urllib.parse.urlencode(query, safe="/")
    return uri


def dump_schema(conninfo: str) -> str:
    args = ["pg_dump", "--schema-only", "--schema=conveyor", "--no-password"]
    # pg_dump from 15.14/16.10/17.6 on writes \restrict with a random key
    # unless given one; a fixed key keeps two dumps comparable.
    if "--restrict-key" in run(["pg_dump", "--help"], "pg_dump --help"):
        args.append("--restrict-key=conveyorcompare")
    text = run([*args, "--dbname", conninfo], "pg_dump")
    # Comment lines only: pg_dump's headers ("-- Name: ...; Owner: ...").
    return "".join(line for line in text.splitlines(True) if not line.startswith("--"))


@pytest.fixture
def two_empty_databases(admin_url: str) -> Iterator[tuple[str, str]]:
    names = (f"conveyor_install_file_{os.getpid()}", f"conveyor_install_sqitch_{os.getpid()}")

    def drop_all() -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for name in names:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )

    drop_all()
    with psycopg.connect(admin_url, autocommit=True) as admin:
        for name in names:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield names
    finally:
        drop_all()


def test_sql_install_file_gives_the_same_schema_as_sqitch_deploy(
    admin_url: str, two_empty_databases: tuple[str, str]
) -> None:
    file_db, sqitch_db = two_empty_databases
    file_conninfo = make_conninfo(admin_url, dbname=file_db)
    sqitch_conninfo = make_conninfo(admin_url, dbname=sqitch_db)

    run(
        [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            str(INSTALL_SQL),
            "--dbname",
            file_conninfo,
        ],
        f"psql -f {INSTALL_SQL.relative_to(ROOT)}",
    )
    env = dict(os.environ)
    # sqitch records who deployed; give it a name where git has none.
    env.setdefault("SQITCH_FULLNAME", "conveyor tests")
    env.setdefault("SQITCH_EMAIL", "tests@conveyor.invalid")
    run(
        ["sqitch", "deploy", "--verify", sqitch_target(admin_url, sqitch_db)],
        "sqitch deploy",
        env=env,
    )

    from_file = dump_schema(file_conninfo)
    from_sqitch = dump_schema(sqitch_conninfo)
    # The dumps must hold the schema, not two equal nothings.
    for needle in (
        "CREATE TABLE conveyor.jobs",
        "CREATE FUNCTION conveyor.lock_jobs(",
        "CREATE TRIGGER _900_notify",
    ):
        assert needle in from_file
    diff = "".join(
        difflib.unified_diff(
            from_sqitch.splitlines(True),
            from_file.splitlines(True),
            "sqitch deploy",
            "sql/conveyor.sql",
        )
    )
    assert from_file == from_sqitch, f"the schemas differ:\n{diff}"


def test_sql_install_file_is_up_to_date_with_the_plan() -> None:
    assert GEN_SQL.exists(), "scripts/gen-sql is missing: it generates sql/conveyor.sql"
    run([sys.executable, str(GEN_SQL), "--check"], "scripts/gen-sql --check")


@pytest.mark.parametrize(
    ("url", "dbname", "target"),
    [
        ("postgresql://postgres@127.0.0.1:5432/postgres", "x", "db:pg://postgres@127.0.0.1:5432/x"),
        (
            "postgresql://u:p%40ss@db.example:6543/postgres?sslmode=require",
            "x",
            "db:pg://u:p%40ss@db.example:6543/x?sslmode=require",
        ),
        (
            "postgresql://postgres@/postgres?host=/tmp/conveyor-pg.ab12&port=5433",
            "x",
            "db:pg://postgres@/x?host=/tmp/conveyor-pg.ab12&port=5433",
        ),
        (
            "host=/var/run/postgresql user=postgres dbname=postgres",
            "y",
            "db:pg://postgres@/y?host=/var/run/postgresql",
        ),
    ],
)
def test_sqitch_target_keeps_host_port_and_user(url: str, dbname: str, target: str) -> None:
    assert sqitch_target(url, dbname) == target
