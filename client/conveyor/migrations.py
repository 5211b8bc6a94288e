"""Install and upgrade the conveyor schema from the sqitch project bundled in
the package.

The package ships the sqitch project (``conveyor/schema/``: ``sqitch.plan``
and the ``deploy/``, ``revert/``, ``verify/`` scripts), so ``conveyor migrate``
brings any released schema to the bundled one without sqitch or a checkout.

What a database holds is read, in this order, from

1. sqitch's registry (``sqitch.changes``, project ``conveyor``), when sqitch
   deployed the schema: such a database is upgraded by ``sqitch deploy`` on
   the bundled plan, so that the registry stays the record (sqitch must be on
   PATH);
2. ``conveyor.schema_changes``, which ``conveyor migrate`` and
   ``sql/conveyor.sql`` fill, one row per plan entry;
3. ``conveyor.schema_version()``, for an install of a release made before
   ``schema_changes`` existed (0.1.0): every entry up to that release's tag.

A plan entry is known by its name and planned-at time together: a reworked
change keeps its name, each of its entries has its own time.

Everything runs in ONE transaction that first takes a transaction-level
advisory lock (key :data:`MIGRATION_LOCK_KEY`): a second ``conveyor migrate``
waits for the first, then finds nothing to do, and a failure leaves the
database as it was. An install from nothing runs :func:`conveyor.plan.install_order`
(a reworked change at its newest version only); an upgrade runs the pending
entries in plan order, as sqitch would.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict

from . import sql
from .errors import NOT_INSTALLED, SchemaError
from .plan import Change, Plan, PlanError, install_order, parse_plan, strip_transaction

__all__ = [
    "MIGRATION_LOCK_KEY",
    "NOT_INSTALLED",
    "MigrationResult",
    "bundled_plan",
    "bundled_version",
    "migrate",
    "require_schema",
]

#: pg_advisory_xact_lock(bigint) key of ``conveyor migrate``: the one-bigint
#: key space, apart from the two-int keys of jobs. 'CONVMIGR' in ASCII.
MIGRATION_LOCK_KEY = 0x434F4E564D494752

Key = tuple[str, dt.datetime]


@dataclass(frozen=True)
class MigrationResult:
    """What :func:`migrate` found and did."""

    before: str  #: the version found: ``none``, ``0.1.0``, ``0.1.0+2`` ...
    after: str  #: the bundled version
    record: Literal["none", "sqitch", "schema_changes", "schema_version"]
    pending: tuple[Change, ...]  #: the entries that were pending, in plan order
    applied: bool  #: False with ``check=True`` (or when nothing was pending)

    @property
    def status(self) -> Literal["installed", "upgraded", "up to date", "pending"]:
        if not self.pending:
            return "up to date"
        if not self.applied:
            return "pending"
        return "installed" if self.before == "none" else "upgraded"

    def describe(self) -> str:
        """One line for people (``conveyor migrate`` prints it)."""
        names = ", ".join(c.name for c in self.pending)
        n = len(self.pending)
        changes = f"{n} change{'s' if n != 1 else ''}"
        if self.status == "up to date":
            return f"conveyor schema {self.after}: up to date"
        if self.status == "installed":
            return f"conveyor schema {self.after}: installed ({changes})"
        if self.status == "upgraded":
            return f"conveyor schema {self.after}: upgraded from {self.before} ({changes}: {names})"
        if self.before == "none":
            return f"conveyor schema {self.after}: not installed ({changes} pending)"
        return (
            f"conveyor schema {self.before}: upgrade to {self.after} pending ({changes}: {names})"
        )


def schema_dir() -> Traversable:
    """The bundled sqitch project (sqitch.plan, deploy/, revert/, verify/)."""
    return resources.files("conveyor").joinpath("schema")


def bundled_plan() -> Plan:
    root = schema_dir()
    try:
        return parse_plan(root.joinpath("sqitch.plan").read_text(encoding="utf-8"), root)
    except FileNotFoundError:
        raise SchemaError(f"the bundled sqitch plan is missing ({root})") from None
    except PlanError as error:
        raise SchemaError(f"the bundled sqitch plan: {error}") from None


def bundled_version() -> str:
    """The version the bundled plan installs (``0.1.0``, or ``0.1.0+N`` for
    N entries after the tag)."""
    return bundled_plan().version


def _scalar(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    return None if row is None else row[0]


def schema_installed(conn: psycopg.Connection[Any]) -> bool:
    return bool(_scalar(conn, sql.SCHEMA_EXISTS))


def require_schema(conn: psycopg.Connection[Any]) -> None:
    """Raise :class:`SchemaError` (:data:`NOT_INSTALLED`) when there is no
    conveyor schema."""
    if not schema_installed(conn):
        raise SchemaError(NOT_INSTALLED)


def _utc(rows: list[tuple[str, dt.datetime]]) -> set[Key]:
    return {(name, at.astimezone(dt.UTC)) for name, at in rows}


def installed_changes(
    conn: psycopg.Connection[Any], plan: Plan
) -> tuple[Literal["none", "sqitch", "schema_changes", "schema_version"], set[Key]]:
    """Where the record of what is installed came from, and its entries."""
    if _scalar(conn, "SELECT to_regclass('sqitch.changes') IS NOT NULL"):
        rows = conn.execute(
            "SELECT change, planned_at FROM sqitch.changes WHERE project = %s", (plan.project,)
        ).fetchall()
        if rows:
            return "sqitch", _utc(rows)
    if not schema_installed(conn):
        return "none", set()
    if _scalar(conn, "SELECT to_regclass('conveyor.schema_changes') IS NOT NULL"):
        rows = conn.execute("SELECT change, planned_at FROM conveyor.schema_changes").fetchall()
        if rows:
            return "schema_changes", _utc(rows)
    if _scalar(conn, sql.SCHEMA_VERSION_EXISTS):
        version = _scalar(conn, sql.SCHEMA_VERSION)
        for i, change in enumerate(plan.changes):
            if f"@v{version}" in change.tags:
                return "schema_version", {c.key for c in plan.changes[: i + 1]}
        raise SchemaError(
            f"the database has conveyor schema {version}, which this package does not know "
            f"(it knows {', '.join(plan.tags) or 'no release'}): upgrade the package"
        )
    raise SchemaError(
        "the database has a conveyor schema that is no install of a release (no "
        "conveyor.schema_changes, no conveyor.schema_version()); if it holds no jobs "
        "you need, drop it (DROP SCHEMA conveyor CASCADE) and run `conveyor migrate`"
    )


def _pending(plan: Plan, installed: set[Key]) -> tuple[Change, ...]:
    unknown = installed - {c.key for c in plan.changes}
    if unknown:
        names = ", ".join(sorted(name for name, _ in unknown))
        raise SchemaError(
            f"the database has conveyor changes this package does not know ({names}): "
            "a newer release installed them; upgrade the package"
        )
    return tuple(c for c in plan.changes if c.key not in installed)


def _run_script(conn: psycopg.Connection[Any], change: Change) -> None:
    path = schema_dir().joinpath(*change.script.split("/"))
    try:
        body = strip_transaction(path.read_text(encoding="utf-8"), change.script)
    except PlanError as error:
        raise SchemaError(str(error)) from None
    # No parameters: psycopg sends it with the simple query protocol, which
    # runs a script of many statements.
    conn.execute(body.encode())


def migrate(database_url: str, *, check: bool = False) -> MigrationResult:
    """Bring the database's conveyor schema to the bundled plan: install it
    where there is none, upgrade it where entries are pending, else do nothing.

    With ``check=True`` nothing is applied: the result's ``pending`` lists what
    would be (``status == "pending"``). Raises :class:`SchemaError` for a
    schema this package cannot upgrade, and psycopg's errors for a script
    that fails (the database is then as it was).
    """
    plan = bundled_plan()
    with psycopg.connect(database_url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        record, installed = installed_changes(conn, plan)
        before = plan.version_of(installed)
        pending = _pending(plan, installed)
        result = MigrationResult(before, plan.version, record, pending, applied=False)
        if check or not pending:
            conn.rollback()
            return result
        if record == "sqitch":
            # Under the lock still (the transaction stays open meanwhile),
            # so another conveyor migrate waits for sqitch to finish.
            _sqitch_deploy(database_url)
        else:
            for change in install_order(plan) if record == "none" else pending:
                _run_script(conn, change)
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO conveyor.schema_changes (change, planned_at) VALUES (%s, %s)"
                    " ON CONFLICT DO NOTHING",
                    [c.key for c in plan.changes],
                )
    return MigrationResult(before, plan.version, record, pending, applied=True)


def sqitch_target(database_url: str) -> tuple[str, dict[str, str]]:
    """A sqitch target URI for a libpq URL or conninfo string, and the
    environment that carries its password (kept out of the command line)."""
    params = {k: str(v) for k, v in conninfo_to_dict(database_url).items() if v is not None}
    env = {}
    if "password" in params:
        env["PGPASSWORD"] = params.pop("password")
    netloc = ""
    if "user" in params:
        netloc = urllib.parse.quote(params.pop("user"), safe="") + "@"
    host = params.get("host", "")
    if host and not host.startswith("/") and "," not in host:
        netloc += params.pop("host")
        if "port" in params:
            netloc += ":" + params.pop("port")
    dbname = urllib.parse.quote(params.pop("dbname", ""), safe="")
    query = urllib.parse.urlencode(params, safe="/")
    return f"db:pg://{netloc}/{dbname}" + (f"?{query}" if query else ""), env


def _sqitch_deploy(database_url: str) -> None:
    """Upgrade a sqitch-managed database with sqitch itself, on the bundled plan."""
    sqitch = shutil.which("sqitch")
    if sqitch is None:
        raise SchemaError(
            "sqitch deployed this database's conveyor schema (sqitch.changes records it), "
            "so sqitch must upgrade it, and sqitch is not on PATH: install sqitch, or run "
            "`sqitch deploy` from a conveyor checkout of this version"
        )
    target, extra_env = sqitch_target(database_url)
    env = {**os.environ, **extra_env}
    env.setdefault("SQITCH_FULLNAME", "conveyor migrate")
    env.setdefault("SQITCH_EMAIL", "conveyor-migrate@localhost")
    with tempfile.TemporaryDirectory(prefix="conveyor-sqitch-") as tmp:
        top = Path(tmp)
        for name in ("sqitch.plan", "deploy", "revert", "verify"):
            _copy(schema_dir().joinpath(name), top / name)
        (top / "sqitch.conf").write_text(
            "[core]\n\tengine = pg\n\tplan_file = sqitch.plan\n\ttop_dir = .\n"
            '[engine "pg"]\n\tregistry = sqitch\n\tclient = psql\n',
            encoding="utf-8",
        )
        done = subprocess.run(
            [sqitch, "deploy", "--verify", target],
            cwd=top,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise SchemaError(f"sqitch deploy failed: {output}")


def _copy(source: Traversable, dest: Path) -> None:
    if source.is_dir():
        dest.mkdir()
        for child in source.iterdir():
            _copy(child, dest / child.name)
    else:
        dest.write_bytes(source.read_bytes())
