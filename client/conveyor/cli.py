"""The ``conveyor`` command line (click).

Commands: ``worker``, ``migrate``, ``stats``, ``enqueue``. Every option can
also be set by an environment variable (shown in ``--help``); the database
comes from ``--database-url``, ``CONVEYOR_DATABASE_URL`` or ``DATABASE_URL``.
Expected errors are one line on stderr and a non-zero exit status (``--debug``
adds their traceback); a bug's traceback is not hidden.

Other distributions add commands through the entry-point group
:data:`COMMANDS_GROUP` (``conveyor.commands``), each entry a click command
imported only when it runs: ``conveyor bench`` comes from the
``conveyor-bench`` distribution (``bench/`` in a checkout) this way.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, TypeVar

import click
import psycopg

from . import __version__, sql
from ._hooks import hooks
from .cli_flow import paused_lines
from .cli_support import (
    database_url_option,
    errors_as_one_line,
    fail,
    first_line,
    load_modules,
    require_url,
    table,
)
from .cli_worker_django import django_options
from .cli_worker_history import history_options
from .cli_worker_probes import probe_options
from .logs import LEVELS, LOG_FORMATS, configure_logging, log
from .metrics import require_prometheus_client
from .migrations import migrate as _migrate
from .migrations import require_schema
from .probes import ProbeServer
from .worker import Worker
from .worker_threads import parse_worker_priorities

__all__ = ["COMMANDS_GROUP", "cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])

#: Entry-point group of the commands other distributions add to ``conveyor``.
COMMANDS_GROUP = "conveyor.commands"

#: Commands that live in a distribution of their own, and how to install it.
SEPARATE_COMMANDS: dict[str, str] = {
    "bench": "pip install ./bench (from a conveyor checkout)",
}


def _added_commands() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=COMMANDS_GROUP)}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_added_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        entry_point = _added_commands().get(cmd_name)
        if entry_point is not None:
            found = entry_point.load()
            if not isinstance(found, click.Command):
                raise click.ClickException(
                    f"{entry_point.value} (entry point {cmd_name!r} of {COMMANDS_GROUP}) "
                    "is not a click command"
                )
            return found
        if cmd_name in SEPARATE_COMMANDS:
            fail(f"'conveyor {cmd_name}' is not installed: {SEPARATE_COMMANDS[cmd_name]}")
        return None


#: ``-v``/``--version``, on the group and on ``worker`` (``conveyor worker -v``
#: as ``que -v``: the worker is the command most scripts call).
_version_option = click.version_option(__version__, "-v", "--version", prog_name="conveyor")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@_version_option
@click.option(
    "--debug",
    is_flag=True,
    envvar="CONVEYOR_DEBUG",
    show_envvar=True,
    help="Print the traceback of an error too, not only its one-line message.",
)
def cli(debug: bool) -> None:
    """conveyor: a PostgreSQL job queue (Que 1.0's design)."""


# --- worker ------------------------------------------------------------------------


def _priorities(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return parse_worker_priorities(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@cli.command()
@click.argument("modules", nargs=-1, metavar="[MODULE]...")
@database_url_option
@click.option(
    "--connection-url",
    envvar="CONVEYOR_CONNECTION_URL",
    show_envvar=True,
    metavar="URL",
    help="A direct database URL for the locker's session (LISTEN and advisory "
    "locks), when the database URL goes through a transaction pooler.",
)
@click.option(
    "-q",
    "--queue-name",
    "queue_names",
    multiple=True,
    envvar="CONVEYOR_QUEUE_NAME",
    show_envvar=True,
    metavar="NAME",
    help="A queue to work; repeat for several (env: space-separated). [default: default]",
)
@click.option(
    "-p",
    "--worker-priorities",
    callback=_priorities,
    envvar="CONVEYOR_WORKER_PRIORITIES",
    show_envvar=True,
    metavar="LIST",
    help="Priority ceilings of the worker threads, e.g. 10,30,50,any,any,any (the default).",
)
@click.option(
    "-w",
    "--worker-count",
    type=click.IntRange(min=1),
    envvar="CONVEYOR_WORKER_COUNT",
    show_envvar=True,
    help="Number of worker threads; alone, that many 'any' workers; with "
    "--worker-priorities, trims or pads the list with 'any'.",
)
@click.option(
    "-i",
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    show_default=True,
    envvar="CONVEYOR_POLL_INTERVAL",
    show_envvar=True,
    help="Seconds between polls for scheduled and retried jobs.",
)
@click.option(
    "--wait-period",
    type=click.FloatRange(min=0, min_open=True),
    default=50.0,
    show_default=True,
    envvar="CONVEYOR_WAIT_PERIOD",
    show_envvar=True,
    help="Longest sleep of the locker between checks, in milliseconds.",
)
@click.option(
    "--minimum-buffer-size",
    type=click.IntRange(min=0),
    default=None,
    envvar="CONVEYOR_MINIMUM_BUFFER_SIZE",
    show_envvar=True,
    help="Poll for more jobs when fewer than this many wait in the buffer "
    "[default: adaptive, 2 when only the maximum is given].",
)
@click.option(
    "--maximum-buffer-size",
    type=click.IntRange(min=0),
    default=None,
    envvar="CONVEYOR_MAXIMUM_BUFFER_SIZE",
    show_envvar=True,
    help="Most locked jobs held waiting for a worker thread [default: adaptive, "
    "8 to 2,000 by the queue's backlog and job times; 8 when only the minimum is given].",
)
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    envvar="CONVEYOR_SHUTDOWN_TIMEOUT",
    show_envvar=True,
    help="Seconds running jobs get to finish after SIGTERM/SIGINT.",
)
@click.option(
    "--async-concurrency",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    envvar="CONVEYOR_ASYNC_CONCURRENCY",
    show_envvar=True,
    help="Most `async def run` jobs running at once on the process's event loop.",
)
@click.option(
    "--async-block-threshold",
    type=click.FloatRange(min=0),
    default=0.25,
    show_default=True,
    envvar="CONVEYOR_ASYNC_BLOCK_THRESHOLD",
    show_envvar=True,
    help="Log event_loop_blocked when an async job holds the event loop this many "
    "seconds (0: no watchdog).",
)
@click.option(
    "-l",
    "--log-level",
    type=click.Choice(sorted(LEVELS), case_sensitive=False),
    default="info",
    show_default=True,
    envvar="CONVEYOR_LOG_LEVEL",
    show_envvar=True,
    help="Lowest level logged, by conveyor and by any other logger (job code's too).",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS, case_sensitive=False),
    envvar="CONVEYOR_LOG_FORMAT",
    show_envvar=True,
    help="Logs on stdout as text lines or JSON objects. [default: text on a terminal, else json]",
)
@click.option(
    "--log-internals",
    is_flag=True,
    envvar="CONVEYOR_LOG_INTERNALS",
    show_envvar=True,
    help="Log the locker's internal state at every cycle (debugging only).",
)
@click.option(
    "--durable-resolutions",
    is_flag=True,
    envvar="CONVEYOR_DURABLE_RESOLUTIONS",
    show_envvar=True,
    help="Make the locker's batched resolutions wait for the WAL flush (synchronous_commit "
    "on). Off by default: after a server crash the last resolved jobs may run again.",
)
@history_options
@probe_options
@_version_option
@errors_as_one_line
@django_options
def worker(
    modules: tuple[str, ...],
    database_url: str | None,
    connection_url: str | None,
    queue_names: tuple[str, ...],
    worker_priorities: list[int | None] | None,
    worker_count: int | None,
    poll_interval: float,
    wait_period: float,
    minimum_buffer_size: int | None,
    maximum_buffer_size: int | None,
    shutdown_timeout: float,
    async_concurrency: int,
    async_block_threshold: float,
    log_level: str,
    log_format: str | None,
    log_internals: bool,
    durable_resolutions: bool,
    history: dict[str, Any],
    probe_port: int | None,
    probe_host: str,
    metrics: bool,
) -> None:
    """Work jobs: import MODULEs (module names or .py files) so their Job
    classes are known, then lock and run jobs until SIGTERM or SIGINT.

    On the first signal the worker stops locking, unlocks its buffered jobs
    and lets running jobs finish for up to --shutdown-timeout seconds; a
    second signal exits at once. Exit status 0 after a clean shutdown.
    """
    url = require_url(database_url)
    if (
        minimum_buffer_size is not None
        and maximum_buffer_size is not None
        and minimum_buffer_size > maximum_buffer_size
    ):
        raise click.BadParameter(
            "must not exceed --maximum-buffer-size", param_hint="--minimum-buffer-size"
        )
    if metrics and probe_port is None:
        raise click.BadParameter("needs --probe-port to serve /metrics on", param_hint="--metrics")
    if metrics:
        require_prometheus_client()
    load_modules(modules)
    configure_logging(
        log_level,
        line_formatter=hooks.log_formatter,
        log_format=log_format.lower() if log_format else None,
    )
    # Thread switches every 5 ms by default: a job thread holding the GIL
    # would delay the locker's hand-offs. 1 ms keeps latency low.
    sys.setswitchinterval(0.001)

    process = Worker(
        url,
        connection_url=connection_url,
        queues=list(queue_names) or ["default"],
        worker_priorities=worker_priorities,
        worker_count=worker_count,
        poll_interval=poll_interval,
        wait_period=wait_period / 1000.0,
        minimum_buffer_size=minimum_buffer_size,
        maximum_buffer_size=maximum_buffer_size,
        shutdown_timeout=shutdown_timeout,
        async_concurrency=async_concurrency,
        async_block_threshold=async_block_threshold or None,
        log_internals=log_internals,
        durable_resolutions=durable_resolutions,
        **history,
        metrics=metrics,
    )
    probes = None if probe_port is None else ProbeServer(process, port=probe_port, host=probe_host)
    stop_requested = threading.Event()
    signals: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals.append(signum)
        if len(signals) == 1:
            log(logging.INFO, "signal_received", signal=signal.Signals(signum).name)
            stop_requested.set()
        else:
            log(logging.WARNING, "forced_exit", signal=signal.Signals(signum).name)
            logging.shutdown()
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if probes is not None:  # /status answers while the worker starts
        probes.start()
    process.start()
    while not stop_requested.wait(0.5):
        if process.wait(0):  # the locker ended by itself: a fatal error
            break
    clean = process.stop()
    if probes is not None:
        probes.stop()
    fatal = process.fatal_error
    logging.shutdown()
    if fatal is not None:
        fail(first_line(fatal))
    sys.exit(0 if clean else 1)


# --- migrate -------------------------------------------------------------------------


@cli.command()
@database_url_option
@click.option(
    "--check",
    is_flag=True,
    help="Change nothing: list the pending changes and exit with status 1 if there are any.",
)
@errors_as_one_line
def migrate(database_url: str | None, check: bool) -> None:
    """Install or upgrade the conveyor schema from the sqitch plan bundled
    with this package.

    Installs it where there is none, applies the pending changes where an
    older version is installed, does nothing when it is up to date: in one
    transaction, so a failure changes nothing. A schema that sqitch deployed
    is upgraded with `sqitch deploy` (on PATH) on the bundled plan.
    """
    result = _migrate(require_url(database_url), check=check)
    click.echo(result.describe())
    if check and result.pending:
        for change in result.pending:
            click.echo(f"  {change.name}: {change.note}")
        sys.exit(1)


# --- stats ----------------------------------------------------------------------------


@cli.command()
@database_url_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--queues",
    is_flag=True,
    help="Per-queue counts (queue_stats) instead of per-class (job_stats).",
)
@click.option(
    "--watch",
    is_flag=True,
    help="Print again every --interval seconds until Ctrl-C (in place on a terminal; "
    "with --json, one JSON array a line).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes of --watch.",
)
@errors_as_one_line
def stats(
    database_url: str | None, as_json: bool, queues: bool, watch: bool, interval: float
) -> None:
    """Show job_stats(): per job class, the jobs, locked (being worked or
    waiting in a worker's buffer), errored, the highest error count and the
    oldest run_at (or queue_stats with --queues)."""
    query = sql.QUEUE_STATS if queues else sql.JOB_STATS
    with psycopg.connect(require_url(database_url), autocommit=True) as conn:
        require_schema(conn)

        def frame() -> str:
            cursor = conn.execute(query)
            headers = [column.name for column in cursor.description or []]
            rows = [dict(zip(headers, row, strict=True)) for row in cursor.fetchall()]
            if as_json:
                return json.dumps(rows, default=str, indent=None if watch else 2)
            # The pauses in force, under the table (wip-flow's paused_lines).
            return "\n".join(
                [table(headers, [tuple(row.values()) for row in rows]), *paused_lines(conn)]
            )

        if not watch:
            click.echo(frame())
            return
        from .top import watch as watch_frames

        watch_frames(frame, interval, clear=not as_json and sys.stdout.isatty(), blank=not as_json)


def main() -> None:
    """Entry point of the ``conveyor`` script."""
    cli(prog_name="conveyor")
