"""``conveyor schedules``: list, add, remove, enable, disable and run-now
recurring jobs (the ``conveyor.schedules`` table). Loaded on demand,
registered in the ``conveyor.commands`` entry-point group (client/pyproject.toml)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import click
import psycopg

from . import schedules as _schedules
from .cli_support import database_url_option, errors_as_one_line, json_arg, require_url, table
from .errors import ConveyorError

__all__ = ["schedules"]


@click.group()
def schedules() -> None:
    """Recurring jobs: conveyor.schedules (docs/how-to/recurring-jobs.md).

    add, remove, enable and disable need a role allowed to change schedules
    (the schema owner unless granted); list and run-now work as conveyor_worker."""


@schedules.command("list")
@database_url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@errors_as_one_line
def list_(database_url: str | None, as_json: bool) -> None:
    """List the schedules with their next run."""
    with psycopg.connect(require_url(database_url), autocommit=True) as conn:
        rows = _schedules.list_schedules(conn)
    if as_json:
        click.echo(json.dumps([asdict(row) for row in rows], default=str, indent=2))
        return
    headers = [
        "name",
        "cron",
        "time_zone",
        "job_class",
        "queue",
        "enabled",
        "catch_up",
        "last_run_at",
        "next_run_at",
    ]
    click.echo(
        table(
            headers,
            [
                (
                    r.name,
                    r.cron,
                    r.time_zone,
                    r.job_class,
                    r.queue,
                    "yes" if r.enabled else "no",
                    "yes" if r.catch_up else "no",
                    r.last_run_at,
                    r.next_run_at,
                )
                for r in rows
            ],
        )
    )


@schedules.command()
@click.argument("name")
@click.argument("cron")
@click.argument("job_class")
@click.argument("args_json", default="[]", metavar="[ARGS_JSON]")
@database_url_option
@click.option("--queue", help="Queue of the jobs. [default: default]")
@click.option("--priority", type=int, help="Priority of the jobs. [default: 100]")
@click.option("--data", "data_json", metavar="JSON", help="A JSON object of metadata.")
@click.option("--time-zone", default="UTC", show_default=True, help="Wall clock to read CRON on.")
@click.option("--catch-up", is_flag=True, help="After downtime, enqueue every missed run.")
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@errors_as_one_line
def add(
    name: str,
    cron: str,
    job_class: str,
    args_json: str,
    database_url: str | None,
    queue: str | None,
    priority: int | None,
    data_json: str | None,
    time_zone: str,
    catch_up: bool,
    disabled: bool,
) -> None:
    """Create or replace schedule NAME: JOB_CLASS with ARGS_JSON (a JSON
    array) at each occurrence of CRON (5 fields or @daily etc., quoted)."""
    args = json_arg(args_json, "ARGS_JSON")
    if not isinstance(args, list):
        raise ConveyorError("ARGS_JSON must be a JSON array, such as '[1, \"two\"]'")
    data: Any = json_arg(data_json, "--data") if data_json is not None else {}
    if not isinstance(data, dict):
        raise ConveyorError("--data must be a JSON object")
    item = _schedules.Schedule(
        name=name,
        cron=cron,
        job_class=job_class,
        args=tuple(args),
        queue=queue,
        priority=priority,
        data=data,
        time_zone=time_zone,
        enabled=not disabled,
        catch_up=catch_up,
    )
    with psycopg.connect(require_url(database_url)) as conn:
        _schedules.apply_schedules(conn, [item])
        row = next(r for r in _schedules.list_schedules(conn) if r.name == name)
    click.echo(f"{name}: next run {row.next_run_at}")


def _named(action: str) -> Callable[[Callable[..., None]], click.Command]:
    """A subcommand taking a schedule NAME and --database-url."""

    def decorate(func: Callable[..., None]) -> click.Command:
        wrapped = click.argument("name")(database_url_option(errors_as_one_line(func)))
        return schedules.command(action)(wrapped)

    return decorate


@_named("remove")
def remove(name: str, database_url: str | None) -> None:
    """Delete schedule NAME (jobs it enqueued stay)."""
    with psycopg.connect(require_url(database_url)) as conn:
        if not _schedules.delete_schedule(conn, name):
            raise ConveyorError(f"no schedule named {name!r}")
    click.echo(f"{name}: removed")


@_named("enable")
def enable(name: str, database_url: str | None) -> None:
    """Enable schedule NAME; it resumes at its next occurrence from now."""
    with psycopg.connect(require_url(database_url)) as conn:
        if not _schedules.set_schedule_enabled(conn, name, True):
            raise ConveyorError(f"no schedule named {name!r}")
    click.echo(f"{name}: enabled")


@_named("disable")
def disable(name: str, database_url: str | None) -> None:
    """Disable schedule NAME."""
    with psycopg.connect(require_url(database_url)) as conn:
        if not _schedules.set_schedule_enabled(conn, name, False):
            raise ConveyorError(f"no schedule named {name!r}")
    click.echo(f"{name}: disabled")


@_named("run-now")
def run_now(name: str, database_url: str | None) -> None:
    """Enqueue one job of schedule NAME now, outside its timetable (data.schedule
    has the name and "at": null), and print its id. Its occurrences are untouched."""
    with psycopg.connect(require_url(database_url)) as conn:
        job_id = _schedules.enqueue_schedule_now(conn, name)
    if job_id is None:
        raise ConveyorError(f"no schedule named {name!r}")
    click.echo(job_id)
