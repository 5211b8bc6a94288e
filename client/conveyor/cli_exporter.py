"""``conveyor exporter``: queue gauges from SQL for Prometheus, once per
cluster (run one exporter, not one per worker: every worker would read the
same table). Registered in the ``conveyor.commands`` entry-point group
(client/pyproject.toml); needs ``conveyor[metrics]``.

The gauges come from ``conveyor.queue_stats()`` -- the database's own
definition of ready, scheduled, running (locked by a session now), errored
and the oldest ready job's age -- read when Prometheus scrapes, at most once
per ``--min-interval`` seconds (scrapes in between get the same figures),
on one connection kept open and reopened after an error.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import click
import psycopg

from . import sql
from .cli_support import database_url_option, errors_as_one_line, require_url
from .errors import NOT_INSTALLED, SchemaError
from .logs import configure_logging, log
from .metrics import require_prometheus_client
from .probes import HTTPRoutes, metrics_route

__all__ = ["QueueStatsCollector", "exporter"]

#: queue_stats's disjoint counts, exported as conveyor_queue_jobs{state=...}
#: (the column ``locked`` -- held by some session -- is the state ``running``).
_STATES = {
    "ready": "ready",
    "scheduled": "scheduled",
    "locked": "running",
    "expired": "expired",
    "finished": "finished",
}


class QueueStatsCollector:
    """A ``prometheus_client`` collector of ``conveyor.queue_stats()``."""

    def __init__(self, database_url: str, *, min_interval: float = 5.0) -> None:
        self._url = database_url
        self._min_interval = min_interval
        self._lock = threading.Lock()  # one query at a time, one connection
        self._conn: psycopg.Connection[Any] | None = None
        self._rows: list[dict[str, Any]] = []
        self._read_at = -float("inf")
        self._up = False
        self._seconds = 0.0
        #: The error of the last read, if it failed.
        self.last_error: psycopg.Error | SchemaError | None = None
        self._families = require_prometheus_client().metrics_core

    def describe(self) -> list[Any]:
        return []  # read at each scrape: nothing to query at registration

    def _read(self) -> None:
        """Query queue_stats unless the last read is recent enough."""
        if time.monotonic() - self._read_at < self._min_interval:
            return
        started = time.perf_counter()
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10)
            cursor = self._conn.execute(sql.QUEUE_STATS)
            names = [column.name for column in cursor.description or []]
            self._rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
            self._up = True
            self.last_error = None
        except psycopg.Error as error:
            self.last_error = error
            if isinstance(error, psycopg.errors.InvalidSchemaName):
                self.last_error = SchemaError(NOT_INSTALLED)
            log(logging.ERROR, "exporter_query_failed", error=str(self.last_error).strip())
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            self._rows = []
            self._up = False
        self._seconds = time.perf_counter() - started
        self._read_at = time.monotonic()

    def collect(self) -> Iterator[Any]:
        core = self._families
        with self._lock:
            self._read()
            rows, up, seconds = self._rows, self._up, self._seconds
        yield core.GaugeMetricFamily(
            "conveyor_exporter_up",
            "1 if the last read of conveyor.queue_stats() succeeded, else 0.",
            value=1 if up else 0,
        )
        yield core.GaugeMetricFamily(
            "conveyor_exporter_query_seconds",
            "How long the last read of conveyor.queue_stats() took.",
            value=seconds,
        )
        jobs = core.GaugeMetricFamily(
            "conveyor_queue_jobs",
            "Jobs by queue and state (queue_stats): ready (due, not locked), scheduled "
            "(run_at in the future, retries included), running (locked by a worker now, "
            "its buffer included), expired, finished. The states are disjoint.",
            labels=["queue", "state"],
        )
        errored = core.GaugeMetricFamily(
            "conveyor_queue_errored_jobs",
            "Unresolved jobs that have failed at least once (waiting to retry, or due, or "
            "running again), by queue.",
            labels=["queue"],
        )
        oldest = core.GaugeMetricFamily(
            "conveyor_queue_oldest_ready_age_seconds",
            "How long the oldest ready job of the queue has waited since its run_at "
            "(0 when none is ready).",
            labels=["queue"],
        )
        for row in rows:
            queue = row["queue"]
            for column, state in _STATES.items():
                jobs.add_metric([queue, state], row[column])
            errored.add_metric([queue], row["errored"])
            age = row["oldest_ready_age"]
            oldest.add_metric([queue], age.total_seconds() if age is not None else 0.0)
        yield jobs
        yield errored
        yield oldest

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None


def _registry(collector: QueueStatsCollector) -> Any:
    client = require_prometheus_client()
    registry = client.CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


@click.command()
@database_url_option
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    default=9394,
    show_default=True,
    envvar="CONVEYOR_EXPORTER_PORT",
    show_envvar=True,
    help="HTTP port of /metrics (and /status).",
)
@click.option(
    "--host",
    default="0.0.0.0",
    show_default=True,
    envvar="CONVEYOR_EXPORTER_HOST",
    show_envvar=True,
    help="The address to listen on.",
)
@click.option(
    "--min-interval",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    envvar="CONVEYOR_EXPORTER_MIN_INTERVAL",
    show_envvar=True,
    help="Query the database at most once per this many seconds; scrapes in between "
    "get the last figures.",
)
@click.option("--once", is_flag=True, help="Print the metrics once on stdout and exit.")
@errors_as_one_line
def exporter(
    database_url: str | None, port: int, host: str, min_interval: float, once: bool
) -> None:
    """Export queue gauges (ready, scheduled, running, errored, oldest ready
    age, by queue) from conveyor.queue_stats() for Prometheus. Run one per
    database, not one per worker. Needs conveyor[metrics].

    Each worker's own metrics (jobs worked, durations...) are served by
    `conveyor worker --probe-port N --metrics`."""
    url = require_url(database_url)
    client = require_prometheus_client()
    collector = QueueStatsCollector(url, min_interval=0.0 if once else min_interval)
    registry = _registry(collector)
    if once:
        text = client.generate_latest(registry).decode()
        collector.close()
        if collector.last_error is not None:
            raise collector.last_error
        click.echo(text, nl=False)
        return
    configure_logging("info")
    server = HTTPRoutes(
        {
            "/metrics": metrics_route(registry),
            "/status": lambda: (200, "text/plain; charset=utf-8", b"running\n"),
        },
        host=host,
        port=port,
        name="conveyor-exporter",
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    log(logging.INFO, "exporter_listening", host=host, port=server.port)
    stop.wait()
    server.stop()
    collector.close()
    log(logging.INFO, "exporter_stopped")
