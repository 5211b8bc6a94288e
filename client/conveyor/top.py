"""``conveyor top``: a live view of the queues and workers, refreshed every
second, drawn with rich. Loaded on demand, registered in the
``conveyor.commands`` entry-point group (client/pyproject.toml).

Each refresh sends three cheap statements (sql.TOP_QUEUES, TOP_LOCKERS,
TOP_COUNTERS): the per-queue counts read only the unresolved jobs (through
the partial index jobs_ready_idx, however many finished jobs are kept), the
lockers and their held locks come from pg_locks, and the rates come from the
table's cumulative row counters in pg_stat_user_tables -- no scan at all.
Their measured cost is in docs/how-to/inspect-and-manage-jobs.md.
"""

from __future__ import annotations

import collections
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import click
import psycopg
from psycopg.rows import class_row

from . import sql
from .cli_support import database_url_option, errors_as_one_line, first_line, require_url
from .errors import ConveyorError
from .migrations import require_schema

__all__ = ["Snapshot", "read_snapshot", "render", "top", "watch"]


@dataclass(frozen=True)
class QueueLine:
    """One queue's unresolved jobs by state (jobs_view's definition)."""

    queue: str
    ready: int
    scheduled: int
    running: int
    retrying: int
    #: Paused (conveyor pause), or a state a later schema adds.
    paused: int
    #: Unresolved jobs that have failed at least once, whatever their state
    #: now (ready again, retrying, running): Que's "errored".
    errored: int
    oldest_ready_seconds: float | None


@dataclass(frozen=True)
class LockerLine:
    """A live worker process: its locker's registration in conveyor.lockers."""

    hostname: str | None
    process_id: int | None
    backend_pid: int
    queues: list[str]
    worker_threads: int
    jobs_held: int  # locks its session holds: the buffer plus the running jobs
    up_seconds: float
    #: The buffer as the locker last reported it (report_locker, every few
    #: seconds while it changes); None from a worker that does not report.
    buffer_size: int | None = None
    maximum_buffer_size: int | None = None


@dataclass(frozen=True)
class Counters:
    at: datetime
    inserted: int
    resolved: int


@dataclass(frozen=True)
class Snapshot:
    queues: list[QueueLine]
    lockers: list[LockerLine]
    counters: Counters | None  # None: the statistics collector has no row yet


def read_snapshot(conn: psycopg.Connection[Any]) -> Snapshot:
    """The three statements of one refresh."""
    with conn.cursor(row_factory=class_row(QueueLine)) as cursor:
        queues = cursor.execute(sql.TOP_QUEUES).fetchall()
    with conn.cursor(row_factory=class_row(LockerLine)) as cursor:
        lockers = cursor.execute(sql.TOP_LOCKERS).fetchall()
    with conn.cursor(row_factory=class_row(Counters)) as cursor:
        counters = cursor.execute(sql.TOP_COUNTERS).fetchone()
    return Snapshot(queues, lockers, counters)


class RateMeter:
    """Jobs enqueued and worked per second: the change of the table's row
    counters over the last ``window`` seconds. PostgreSQL publishes a
    backend's counters about once a second (not mid-transaction), so a
    window of a few seconds smooths that step."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self._samples: collections.deque[Counters] = collections.deque()

    def add(self, counters: Counters | None) -> None:
        if counters is None:
            return
        self._samples.append(counters)
        while (
            len(self._samples) > 2
            and (counters.at - self._samples[1].at).total_seconds() >= self.window
        ):
            self._samples.popleft()

    def rates(self) -> tuple[float, float] | None:
        """(enqueued, worked) per second, or None before two samples."""
        if len(self._samples) < 2:
            return None
        first, last = self._samples[0], self._samples[-1]
        seconds = (last.at - first.at).total_seconds()
        if seconds <= 0:
            return None
        return (
            (last.inserted - first.inserted) / seconds,
            (last.resolved - first.resolved) / seconds,
        )


def age(seconds: float | None) -> str:
    """``4.2s``, ``5m07s``, ``2h03m``, ``3d04h``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def render(snapshot: Snapshot, rates: tuple[float, float] | None, title: str) -> Any:
    """The view: a title line, the rates, the queues, the workers."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    rate_text = (
        "enqueued -/s   worked -/s (measuring)"
        if rates is None
        else f"enqueued {rates[0]:.1f}/s   worked {rates[1]:.1f}/s"
    )
    queues = Table(title="queues", title_justify="left", expand=False)
    for name in (
        "queue",
        "ready",
        "scheduled",
        "running",
        "retrying",
        "paused",
        "errored",
        "oldest ready",
    ):
        if name == "queue":
            # A queue's name is what a reader looks for: on a narrow terminal
            # the headers wrap rather than the names being cut short.
            longest = max((len(q.queue) for q in snapshot.queues), default=5)
            queues.add_column(name, min_width=min(longest, 32), no_wrap=True)
        else:
            queues.add_column(name, justify="right")
    for q in snapshot.queues:
        queues.add_row(
            q.queue,
            str(q.ready),
            str(q.scheduled),
            str(q.running),
            str(q.retrying),
            str(q.paused),
            str(q.errored),
            age(q.oldest_ready_seconds),
        )
    if snapshot.queues:
        queues.add_section()
        queues.add_row(
            "total",
            *(
                str(sum(getattr(q, f) for q in snapshot.queues))
                for f in ("ready", "scheduled", "running", "retrying", "paused", "errored")
            ),
            age(
                max(
                    (
                        q.oldest_ready_seconds
                        for q in snapshot.queues
                        if q.oldest_ready_seconds is not None
                    ),
                    default=None,
                )
            ),
        )
    workers = Table(title=f"workers alive: {len(snapshot.lockers)}", title_justify="left")
    for name in ("host", "pid", "threads", "held", "buffer", "queues", "up"):
        workers.add_column(
            name, justify="right" if name in ("pid", "threads", "held", "buffer") else "left"
        )
    for w in snapshot.lockers:
        workers.add_row(
            w.hostname or "?",
            str(w.process_id or "?"),
            str(w.worker_threads),
            str(w.jobs_held),
            "?" if w.buffer_size is None else f"{w.buffer_size}/{w.maximum_buffer_size}",
            ",".join(w.queues),
            age(w.up_seconds),
        )
    return Group(Text(title, style="bold"), Text(rate_text), Text(""), queues, Text(""), workers)


def snapshot_json(snapshot: Snapshot, rates: tuple[float, float] | None) -> str:
    return json.dumps(
        {
            "queues": [asdict(q) for q in snapshot.queues],
            "workers": [asdict(w) for w in snapshot.lockers],
            "enqueued_per_second": None if rates is None else rates[0],
            "worked_per_second": None if rates is None else rates[1],
        },
        default=str,
    )


def watch(frame: Callable[[], str], interval: float, *, clear: bool, blank: bool) -> None:
    """Print ``frame()`` every ``interval`` seconds until Ctrl-C: redrawn in
    place on a terminal (``clear``), else one after another (for a log or a
    pipe), followed by a blank line when ``blank`` (tables; not JSON lines).
    Ctrl-C ends it with status 0."""
    try:
        while True:
            text = frame()
            if clear:
                click.clear()
            click.echo(text)
            if blank and not clear:
                click.echo()
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        pass


@click.command()
@database_url_option
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option(
    "--window",
    type=click.FloatRange(min=1),
    default=5.0,
    show_default=True,
    help="Seconds over which the rates are measured.",
)
@click.option(
    "--once", is_flag=True, help="Print one view and exit (the rates need --interval seconds more)."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON object per refresh, one a line, instead of the view.",
)
@errors_as_one_line
def top(
    database_url: str | None, interval: float, window: float, once: bool, as_json: bool
) -> None:
    """A live view of the queues and workers, refreshed every second: per
    queue the ready, scheduled, running and retrying jobs and the age of the
    oldest ready one, the jobs enqueued and worked per second, and the worker
    processes alive with their host, pid, worker threads, held jobs
    (buffered or running) and buffer (waiting jobs / maximum, as each worker
    last reported it). Ctrl-C quits."""
    from rich.console import Console
    from rich.live import Live

    url = require_url(database_url)
    meter = RateMeter(window)
    conn = psycopg.connect(url, autocommit=True, application_name="conveyor top")
    require_schema(conn)
    title_base = f"conveyor top  {conn.info.dbname}@{conn.info.host}"

    took = 0.0  # seconds the last refresh's statements took

    def pause() -> float:
        """The interval, or longer when a refresh is slow (a backlog of a
        million jobs takes seconds to count): top keeps the database busy at
        most a tenth of the time."""
        return max(interval, 9 * took)

    def refresh() -> tuple[Snapshot | None, str | None]:
        nonlocal conn, took
        started = time.monotonic()
        try:
            if conn.closed:
                conn = psycopg.connect(url, autocommit=True, application_name="conveyor top")
            snapshot = read_snapshot(conn)
        except psycopg.OperationalError as error:
            conn.close()
            return None, f"database unreachable, retrying: {first_line(error)}"
        took = time.monotonic() - started
        meter.add(snapshot.counters)
        return snapshot, None

    def view() -> Any:
        snapshot, problem = refresh()
        now = datetime.now().astimezone().strftime("%H:%M:%S %Z")
        every = (
            f"every {pause():.1f}s (slowed: a refresh takes {took:.1f}s)"
            if (pause() > interval)
            else f"every {interval:g}s"
        )
        title = f"{title_base}  {now}  {every}"
        if snapshot is None:
            from rich.text import Text

            return Text(f"{title}\n{problem}")
        return render(snapshot, meter.rates(), title)

    try:
        if as_json or once:
            if once:
                refresh()
                time.sleep(interval)
            console = Console()
            while True:
                snapshot, problem = refresh()
                if snapshot is None:
                    raise ConveyorError(problem or "database unreachable")
                if as_json:
                    click.echo(snapshot_json(snapshot, meter.rates()))
                else:
                    title = f"{title_base}  every {interval:g}s"
                    console.print(render(snapshot, meter.rates(), title))
                if once:
                    return
                time.sleep(pause())
        with Live(view(), screen=True, auto_refresh=False) as live:
            while True:
                time.sleep(pause())
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()
