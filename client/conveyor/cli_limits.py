"""``conveyor limits``: list, set and delete the limits of concurrency keys
(``conveyor.concurrency_limits``: perform_limit, enqueue_limit and the
throttle), through ``conveyor.set_concurrency_limit`` and
``conveyor.delete_concurrency_limit``. Registered in the ``conveyor.commands``
entry-point group (client/pyproject.toml)."""

from __future__ import annotations

import json

import click
import psycopg

from .cli_support import database_url_option, errors_as_one_line, require_url
from .errors import ConveyorError

__all__ = ["limits"]

LIMITS = (
    "SELECT key, perform_limit, enqueue_limit, perform_throttle, throttle_period::text"
    " FROM conveyor.concurrency_limits ORDER BY key"
)
HEADERS = ("key", "perform_limit", "enqueue_limit", "perform_throttle", "throttle_period")


def _describe(
    key: str, perform: int | None, enqueue: int | None, throttle: int | None, period: str | None
) -> str:
    """``key: perform_limit=2 throttle=10/00:01:00`` for the limits given."""
    parts = [
        f"perform_limit={perform}" if perform is not None else "",
        f"enqueue_limit={enqueue}" if enqueue is not None else "",
    ]
    if throttle is not None:
        parts.append(f"throttle={throttle}/{period}")
    return f"{key}: " + " ".join(part for part in parts if part)


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON array of the limits.")
@database_url_option
@errors_as_one_line
@click.pass_context
def limits(ctx: click.Context, as_json: bool, database_url: str | None) -> None:
    """List the limits of concurrency keys (a line per key), or set or delete
    them with the subcommands. See docs/how-to/concurrency-limits.md."""
    if ctx.invoked_subcommand is not None:
        return
    with psycopg.connect(require_url(database_url), autocommit=True) as conn:
        rows = conn.execute(LIMITS).fetchall()
    if as_json:
        click.echo(json.dumps([dict(zip(HEADERS, row, strict=True)) for row in rows], indent=2))
        return
    for row in rows:
        click.echo(_describe(*row))


@limits.command("set")
@click.argument("key")
@click.option(
    "--perform-limit", type=click.IntRange(min=0), help="Most jobs of the key locked at once."
)
@click.option("--enqueue-limit", type=click.IntRange(min=0), help="Most jobs of the key waiting.")
@click.option(
    "--throttle",
    type=click.IntRange(1, 1000),
    help="Most jobs of the key started per --per period.",
)
@click.option(
    "--per",
    "period",
    help="The throttle's period, as PostgreSQL reads an interval: '1 minute', '2s'.",
)
@database_url_option
@errors_as_one_line
def set_limit(
    key: str,
    perform_limit: int | None,
    enqueue_limit: int | None,
    throttle: int | None,
    period: str | None,
    database_url: str | None,
) -> None:
    """Set the limits of KEY (or of each key starting with a prefix, KEY ending
    in *), replacing all it had. Needs a role allowed to set limits (the
    schema owner or conveyor_admin)."""
    if (throttle is None) != (period is None):
        raise ConveyorError("give --throttle and --per together")
    with psycopg.connect(require_url(database_url), autocommit=True) as conn:
        conn.execute(
            "SELECT conveyor.set_concurrency_limit(%s, %s, %s, %s, %s::interval)",
            (key, perform_limit, enqueue_limit, throttle, period),
        )
        row = conn.execute(LIMITS.replace(" ORDER BY key", " WHERE key = %s"), (key,)).fetchone()
    assert row is not None
    click.echo(f"set: {_describe(*row)}")


@limits.command("delete")
@click.argument("key")
@database_url_option
@errors_as_one_line
def delete_limit(key: str, database_url: str | None) -> None:
    """Remove the limits of KEY (exactly as set: a prefix with its *)."""
    with psycopg.connect(require_url(database_url), autocommit=True) as conn:
        row = conn.execute("SELECT conveyor.delete_concurrency_limit(%s)", (key,)).fetchone()
    click.echo(f"deleted: {key}" if row and row[0] else f"no limits: {key}")
