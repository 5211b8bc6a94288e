"""``conveyor jobs``: list jobs, show one, retry, discard and reschedule them,
through the SQL of the job-history contract (:mod:`conveyor.management`).
Loaded on demand, registered in the ``conveyor.commands`` entry-point group
(client/pyproject.toml).

Exit statuses say what the database refused (the SQLSTATE it raised), so a
script can tell a missing job from a busy one: see :data:`EXIT_CODES`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import click
import psycopg

from . import management
from .cli_support import database_url_option, errors_as_one_line, fail, require_url, table
from .errors import ConveyorError
from .management import JobActionError, JobFilter

__all__ = ["EXIT_CODES", "jobs", "parse_duration"]

#: Exit status by SQLSTATE, for the refusals of a job action. Other expected
#: errors exit 1, click's usage errors 2.
EXIT_CODES = {
    "P0002": 3,  # no such job
    "55006": 4,  # a worker holds the job now
    "55000": 5,  # the job's state does not allow the action
    "42501": 6,  # the role may not manage jobs
}

#: Columns of the job list, in order.
LIST_COLUMNS = (
    "id",
    "state",
    "queue",
    "job_class",
    "priority",
    "run_at",
    "error_count",
    "last_error_message",
)
#: Left out of the list's JSON (``jobs show`` has them): they can be large.
LIST_JSON_OMITS = frozenset({"errors", "last_error_backtrace"})

_PAST = {"retry": "retried", "discard": "discarded"}
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``2h``, ``1d``, ``1w``, ``1h30m``."""
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds >= 0 and seconds != float("inf"):
            return seconds
        raise ConveyorError(f"{text!r} is not a duration such as 90s, 15m, 2h, 1d or 1h30m")
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ConveyorError(f"{text!r} is not a duration such as 90s, 15m, 2h, 1d or 1h30m")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def _iso_time(text: str, what: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ConveyorError(f"{what} {text!r} is not an ISO 8601 time") from None


def _connect(database_url: str | None) -> psycopg.Connection[Any]:
    return psycopg.connect(require_url(database_url), autocommit=True)


def _json(value: Any) -> str:
    return json.dumps(value, default=str, indent=2)


def _short(value: Any, width: int = 60) -> str:
    text = "" if value is None else " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --- listing -------------------------------------------------------------------------


@click.group(invoke_without_command=True)
@click.option(
    "--state",
    help="Only jobs in this state: ready, scheduled, running, retrying, paused, finished, expired.",
)
@click.option("--queue", help="Only jobs of this queue.")
@click.option("--class", "job_class", help="Only jobs of this job class.")
@click.option("--search", help="Case-insensitive text in the class, args, data or last error.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=50, show_default=True, help="Jobs per page."
)
@click.option(
    "--before",
    "before_id",
    type=int,
    metavar="ID",
    help="The page after the one that ended at job ID (keyset pagination).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@database_url_option
@click.pass_context
@errors_as_one_line
def jobs(
    ctx: click.Context,
    state: str | None,
    queue: str | None,
    job_class: str | None,
    search: str | None,
    limit: int,
    before_id: int | None,
    as_json: bool,
    database_url: str | None,
) -> None:
    """List jobs, newest first, or manage them (show, retry, discard, reschedule).

    Without a subcommand: one page of conveyor.list_jobs, with each job's
    state from conveyor.jobs_view. When the page is full, the command for the
    next one is printed on stderr. Exit statuses of the subcommands: 3 no
    such job, 4 a worker holds the job, 5 its state does not allow the
    action, 6 permission denied, 1 any other error."""
    if ctx.invoked_subcommand is not None:
        given = [
            p.opts[0]
            for p in ctx.command.params
            if ctx.params.get(p.name or "") not in (None, False, p.default)
            and p.name not in ("database_url",)
        ]
        if given:
            raise click.UsageError(f"{', '.join(given)} list jobs: not with a subcommand")
        return
    with _connect(database_url) as conn:
        rows = management.list_jobs(
            conn,
            state=state,
            queue=queue,
            job_class=job_class,
            search=search,
            before_id=before_id,
            limit=limit,
        )
    if as_json:
        click.echo(_json([{k: v for k, v in r.items() if k not in LIST_JSON_OMITS} for r in rows]))
    else:
        click.echo(
            table(list(LIST_COLUMNS), [tuple(_short(r.get(c)) for c in LIST_COLUMNS) for r in rows])
        )
    if len(rows) == limit:
        filters = " ".join(
            f"--{n} {v!r}"
            for n, v in (
                ("state", state),
                ("queue", queue),
                ("class", job_class),
                ("search", search),
            )
            if v is not None
        )
        hint = f"conveyor jobs {filters} --limit {limit} --before {rows[-1]['id']}"
        click.echo(f"next page: {' '.join(hint.split())}", err=True)


# --- show ------------------------------------------------------------------------------


def _block(title: str, value: Any) -> str:
    return f"{title}:\n" + "\n".join("  " + line for line in str(value).splitlines())


def render_job(job: dict[str, Any]) -> str:
    """A job as ``conveyor jobs show`` prints it: the fields, then args, data,
    result and the error history, each error with its backtrace."""
    skip = {"args", "data", "result", "errors", "last_error_message", "last_error_backtrace"}
    width = max(len(k) for k in job)
    lines = [f"{k.ljust(width)}  {'' if v is None else v}" for k, v in job.items() if k not in skip]
    parts = ["\n".join(lines)]
    for name in ("args", "data", "result"):
        if name in job:
            parts.append(_block(name, json.dumps(job[name], indent=2, default=str)))
    errors = job.get("errors") or []
    if errors:
        shown = [f"errors ({len(errors)} kept of {job.get('error_count')}), oldest first:"]
        for entry in errors:
            head = (
                f"  #{entry.get('attempt')} at {entry.get('at')}"
                f"{' by ' + str(entry['worker']) if entry.get('worker') else ''}: "
                f"{entry.get('message')}"
            )
            shown.append(head)
            shown.extend("      " + line for line in str(entry.get("backtrace") or "").splitlines())
        parts.append("\n".join(shown))
    elif job.get("last_error_message"):
        parts.append(_block("last error", job["last_error_message"]))
        if job.get("last_error_backtrace"):
            parts.append(_block("backtrace", job["last_error_backtrace"]))
    else:
        parts.append("errors: none")
    return "\n\n".join(parts)


@jobs.command()
@click.argument("job_id", type=int, metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the job as a JSON object.")
@database_url_option
@errors_as_one_line
def show(job_id: int, as_json: bool, database_url: str | None) -> None:
    """Show job ID: every column, its state, args, data, result and error
    history (each error's backtrace). Exit status 3 when there is no such job."""
    with _connect(database_url) as conn:
        job = management.get_job(conn, job_id)
    if job is None:
        _refusal(JobActionError(job_id, "P0002", "no such job"))
        sys.exit(EXIT_CODES["P0002"])
    click.echo(_json(job) if as_json else render_job(job))


# --- actions ---------------------------------------------------------------------------


def _refusal(error: JobActionError) -> None:
    reason = management.REASONS.get(error.sqlstate or "", "")
    said = str(error)
    detail = said if reason.lower() in said.lower() else f"{reason}: {said}" if reason else said
    who = f"job {error.job_id}: " if error.job_id is not None else ""
    click.echo(f"conveyor: error: {who}{detail} [SQLSTATE {error.sqlstate}]", err=True)


def _each(
    ids: Iterable[int],
    action: Callable[[psycopg.Connection[Any], int], str],
    database_url: str | None,
) -> None:
    """Run ``action`` on each id, one line per job (its new state, or why it
    was refused); exit with the status of the first refusal."""
    status = 0
    with _connect(database_url) as conn:
        for job_id in ids:
            try:
                state = action(conn, job_id)
            except JobActionError as error:
                _refusal(error)
                status = status or EXIT_CODES.get(error.sqlstate or "", 1)
                continue
            click.echo(f"job {job_id}: {state}")
    if status:
        sys.exit(status)


def _filter_options(func: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(
        [
            click.option("--state", help="Filter: jobs in this state (e.g. expired, retrying)."),
            click.option("--queue", help="Filter: jobs of this queue."),
            click.option("--class", "job_class", help="Filter: jobs of this job class."),
            click.option(
                "--error-like",
                metavar="PATTERN",
                help="Filter: last error message ILIKE PATTERN (% and _ wildcards).",
            ),
            click.option(
                "--since",
                metavar="TIME|AGE",
                help="Filter: jobs created at or after TIME (ISO 8601) or AGE ago (24h).",
            ),
            click.option("--yes", "-y", is_flag=True, help="Do it without asking."),
            click.option("--dry-run", is_flag=True, help="Only say how many jobs it would change."),
        ]
    ):
        func = option(func)
    return func


def _since(conn: psycopg.Connection[Any], text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ConveyorError:
        return _iso_time(text, "--since")
    return management.seconds_ago(conn, seconds)


def _bulk(
    verb: str,
    ids: tuple[int, ...],
    filters: dict[str, Any],
    yes: bool,
    dry_run: bool,
    database_url: str | None,
    one: Callable[[psycopg.Connection[Any], int], str],
    where: Callable[[psycopg.Connection[Any], JobFilter], int],
) -> None:
    """IDs act one by one at once; a filter is a bulk action: counted by a
    dry run of the same SQL function (rolled back, so the count is exactly
    what the function would change now, and no lock is held while asking),
    confirmed on a terminal unless --yes, refused elsewhere without --yes."""
    given = {k: v for k, v in filters.items() if v is not None}
    if ids and given:
        raise click.UsageError("give job IDs or filters, not both")
    if ids:
        if dry_run:
            raise click.UsageError("--dry-run counts the jobs a filter matches; not with IDs")
        _each(ids, one, database_url)
        return
    if not given:
        raise click.UsageError(
            f"give job IDs, or filters (--state, --queue, --class, --error-like, --since) "
            f"to {verb} the jobs they match"
        )
    with _connect(database_url) as conn:
        where_ = JobFilter(
            state=filters["state"],
            queue=filters["queue"],
            job_class=filters["job_class"],
            error_like=filters["error_like"],
            since=_since(conn, filters["since"]),
        )
        try:
            with conn.transaction(force_rollback=True):
                count = where(conn, where_)
        except JobActionError as error:
            _refusal(error)
            sys.exit(EXIT_CODES.get(error.sqlstate or "", 1))
        if dry_run or count == 0:
            click.echo(
                f"{count} job(s) would be {_PAST[verb]} ({where_.describe()})"
                if dry_run
                else f"no job to {verb} ({where_.describe()})"
            )
            return
        if not yes:
            if not sys.stdin.isatty():
                fail(
                    f"{verb} {count} job(s) ({where_.describe()}): not on a terminal, so "
                    "pass --yes to confirm"
                )
            if not click.confirm(f"{verb.capitalize()} {count} job(s) ({where_.describe()})?"):
                click.echo("nothing changed")
                return
        changed = where(conn, where_)
    click.echo(f"{changed} job(s) {_PAST[verb]}")


@jobs.command()
@click.argument("ids", nargs=-1, type=int, metavar="[ID]...")
@_filter_options
@database_url_option
@errors_as_one_line
def retry(
    ids: tuple[int, ...], yes: bool, dry_run: bool, database_url: str | None, **filters: Any
) -> None:
    """Make jobs ready now: a scheduled, retrying or expired job runs as soon
    as a worker is free (an expired one is un-expired; its error history stays).

    Either job IDs (each at once, one line each), or filters for a bulk retry
    (conveyor.retry_jobs_where), e.g. `--state expired --class Mailer --since 24h`:
    running jobs are skipped; on a terminal it asks first (--yes skips)."""
    _bulk(
        "retry",
        ids,
        filters,
        yes,
        dry_run,
        database_url,
        management.retry_now,
        management.retry_jobs_where,
    )


@jobs.command()
@click.argument("ids", nargs=-1, type=int, metavar="[ID]...")
@_filter_options
@click.option(
    "--reason",
    default="discarded by an operator",
    show_default=True,
    help="Recorded in the job's error history and last error message.",
)
@database_url_option
@errors_as_one_line
def discard(
    ids: tuple[int, ...],
    yes: bool,
    dry_run: bool,
    reason: str,
    database_url: str | None,
    **filters: Any,
) -> None:
    """Expire jobs now, recording a reason; a job a worker holds is refused
    (exit status 4). `conveyor jobs retry` brings a discarded job back.

    Either job IDs or filters for a bulk discard (conveyor.discard_jobs_where),
    which asks first on a terminal (--yes skips)."""
    _bulk(
        "discard",
        ids,
        filters,
        yes,
        dry_run,
        database_url,
        lambda conn, job_id: management.discard_job(conn, job_id, reason),
        lambda conn, where: management.discard_jobs_where(conn, where, reason),
    )


@jobs.command()
@click.argument("job_id", type=int, metavar="ID")
@click.option(
    "--at",
    "at_time",
    metavar="TIME",
    help="Run at TIME, ISO 8601 (without an offset: the server's time zone).",
)
@click.option(
    "--in",
    "in_text",
    metavar="DURATION",
    help="Run DURATION from now by the server's clock: 90s, 15m, 2h, 1d, 1h30m.",
)
@database_url_option
@errors_as_one_line
def reschedule(
    job_id: int, at_time: str | None, in_text: str | None, database_url: str | None
) -> None:
    """Move unresolved job ID, which no worker holds, to another time."""
    if (at_time is None) == (in_text is None):
        raise click.UsageError("give exactly one of --at and --in")
    run_at = _iso_time(at_time, "--at") if at_time is not None else None
    seconds = parse_duration(in_text) if in_text is not None else None
    _each(
        [job_id],
        lambda conn, i: management.reschedule_job(conn, i, run_at=run_at, in_seconds=seconds),
        database_url,
    )
