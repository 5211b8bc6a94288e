"""``conveyor pause`` and ``conveyor resume``: pause and resume a queue, a job
class or a label (``conveyor.pause`` / ``conveyor.resume``), and the lines
``conveyor stats`` prints about what is paused. The two commands are
registered in the ``conveyor.commands`` entry-point group
(client/pyproject.toml); cli.py imports only :func:`paused_lines`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import psycopg

from .cli_support import database_url_option, errors_as_one_line, require_url
from .errors import ConveyorError

__all__ = ["pause", "paused_lines", "resume"]

PAUSES = "SELECT queue, job_class, label, paused_at FROM conveyor.pauses ORDER BY paused_at, id"


def _what(queue: str | None, job_class: str | None, label: str | None) -> str:
    """``queue=mail job_class=Report`` for the names given."""
    given = {"queue": queue, "job_class": job_class, "label": label}
    return " ".join(f"{name}={value}" for name, value in given.items() if value is not None)


def _names(command: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        (
            click.option("--queue", "-q", help="The queue to pause or resume."),
            click.option("--job-class", "-c", help="The job class (in any queue, or in --queue)."),
            click.option("--label", "-l", help="Jobs carrying this label."),
        )
    ):
        command = option(command)
    return command


def _call(
    function: str,
    database_url: str | None,
    queue: str | None,
    job_class: str | None,
    label: str | None,
) -> bool:
    if queue is None and job_class is None and label is None:
        raise ConveyorError("name a --queue, a --job-class or a --label")
    with psycopg.connect(require_url(database_url), autocommit=True) as conn:
        row = conn.execute(
            f"SELECT conveyor.{function}(queue => %s, job_class => %s, label => %s)",
            (queue, job_class, label),
        ).fetchone()
    return bool(row and row[0])


@click.command()
@_names
@database_url_option
@errors_as_one_line
def pause(
    queue: str | None, job_class: str | None, label: str | None, database_url: str | None
) -> None:
    """Pause jobs: those of a queue, of a job class, carrying a label, or
    matching all the names given. Paused jobs stay queued and no worker
    locks them; running jobs finish. Needs a role allowed to pause (the
    schema owner unless granted). See docs/how-to/pausing.md."""
    what = _what(queue, job_class, label)
    if _call("pause", database_url, queue, job_class, label):
        click.echo(f"paused: {what}")
    else:
        click.echo(f"already paused: {what}")


@click.command()
@_names
@database_url_option
@errors_as_one_line
def resume(
    queue: str | None, job_class: str | None, label: str | None, database_url: str | None
) -> None:
    """Resume what `conveyor pause` paused with the same names; listening
    workers are woken at once."""
    what = _what(queue, job_class, label)
    if _call("resume", database_url, queue, job_class, label):
        click.echo(f"resumed: {what}")
    else:
        click.echo(f"not paused: {what}")


def paused_lines(conn: psycopg.Connection[Any]) -> list[str]:
    """One line per pause, for ``conveyor stats``; none on a schema without
    conveyor.pauses (older than this version)."""
    exists = conn.execute("SELECT to_regclass('conveyor.pauses') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    return [
        f"paused: {_what(queue, job_class, label)} (since {paused_at:%Y-%m-%d %H:%M:%S %Z})"
        for queue, job_class, label, paused_at in conn.execute(PAUSES).fetchall()
    ]
