"""A worker process's own metrics: jobs worked, errored and expired by queue
and class, job durations, start delays, the locker's round trips and
reconnects, the buffer -- served as Prometheus text on the probe port
(``conveyor worker --probe-port 8081 --metrics``, :mod:`conveyor.probes`).

Recording costs a job no lock: each thread that reports jobs (a worker
thread, the event loop's thread for async jobs) adds to counters of its
own, registered once; the locker thread alone records round trips. A scrape
adds the threads' counters up. Reading another thread's plain dicts and
lists is safe under the GIL (a copy of a dict is one C call); a scrape that
lands mid-update may miss the job being recorded, which the next one counts.
So the hot path pays a few dict updates per job, never contention.

Only the rendering needs ``prometheus_client`` (the ``conveyor[metrics]``
extra), imported when the first scrape renders; recording needs nothing.

Queue gauges (ready, scheduled, running... by queue) are not here: they come
from SQL, once per cluster, through ``conveyor exporter``
(:mod:`conveyor.cli_exporter`).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from .errors import ConveyorError
from .protocol import Action, LockedJob, Resolution

if TYPE_CHECKING:
    from .worker import Worker

__all__ = ["WorkerMetrics", "require_prometheus_client"]

#: Upper bounds (seconds) of the job duration and start delay histograms:
#: from a millisecond job to a long report, and from a job picked up at once
#: to a backlog of an hour.
JOB_SECONDS_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
#: Upper bounds (seconds) of the locker's round-trip histogram.
ROUND_TRIP_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip

#: What to install when /metrics is asked for without prometheus_client.
INSTALL_HINT = "pip install 'conveyor[metrics]'"

#: Counter names (without ``_total``) by outcome.
_OUTCOME_COUNTERS = {
    "worked": "Jobs that ran and returned (whatever they resolved to).",
    "errored": "Jobs that raised (or could not start: unknown class, bad args).",
    "expired": "Jobs this worker expired: the job called expire(), or an error past "
    "its maximum_retry_count (or handle_error gave up). Also counted as worked or errored.",
}


def require_prometheus_client() -> Any:
    """The ``prometheus_client`` module, or a :class:`ConveyorError` saying
    how to install it."""
    try:
        import prometheus_client
    except ImportError:
        raise ConveyorError(f"metrics need the prometheus_client package: {INSTALL_HINT}") from None
    return prometheus_client


class _Histogram:
    """Bucket counts (not cumulative) and a sum; one writer thread."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.total = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def add_to(self, merged: _Histogram) -> None:
        counts = list(self.counts)  # one C call: a consistent copy under the GIL
        for index, count in enumerate(counts):
            merged.counts[index] += count
        merged.total += self.total


class _ClassStats:
    """One thread's counters of one (queue, job_class), written by that thread only."""

    __slots__ = ("delays", "durations", "errored", "expired", "worked")

    def __init__(self) -> None:
        self.worked = 0
        self.errored = 0
        self.expired = 0
        self.durations = _Histogram(JOB_SECONDS_BUCKETS)
        #: Seconds from run_at to the start of the run (exported by queue).
        self.delays = _Histogram(JOB_SECONDS_BUCKETS)


#: One thread's counters: (queue, job_class) -> its stats.
_ThreadStats = dict[tuple[str, str], _ClassStats]


class WorkerMetrics:
    """The counters of one :class:`~conveyor.Worker` (``Worker(metrics=True)``
    makes one: ``worker.metrics``)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._threads: list[_ThreadStats] = []
        self._register_lock = threading.Lock()
        self._round_trips = _Histogram(ROUND_TRIP_BUCKETS)  # the locker thread's

    # --- recording (hot path) ------------------------------------------------------

    def job_done(
        self, row: LockedJob, elapsed: float, resolution: Resolution, *, errored: bool
    ) -> None:
        """Count one job a thread ran (``elapsed`` seconds) and its outcome.
        About 1 us: one dict lookup, a few slot updates, two bisects."""
        try:
            table: _ThreadStats = self._local.table
        except AttributeError:
            table = self._register_thread()
        key = (row.queue, row.job_class)
        stats = table.get(key)
        if stats is None:
            stats = table[key] = _ClassStats()
        if errored:
            stats.errored += 1
        else:
            stats.worked += 1
        action = resolution.action
        if action is Action.EXPIRE or (
            action is Action.RETRY
            and (resolution.expire or row.error_count + 1 > row.maximum_retry_count)
        ):  # retry_job's rule for expiring instead of retrying
            stats.expired += 1
        histogram = stats.durations
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        histogram.counts[bisect_left(JOB_SECONDS_BUCKETS, elapsed)] += 1
        histogram.total += elapsed
        # The database's clock set run_at, this host's says when the job
        # started: a skew between them shows here, so never below zero.
        delay = time.time() - elapsed - row.run_at.timestamp()
        delay = delay if delay > 0.0 else 0.0
        histogram = stats.delays
        histogram.counts[bisect_left(JOB_SECONDS_BUCKETS, delay)] += 1
        histogram.total += delay

    def round_trip(self, seconds: float) -> None:
        """Record one locker round trip (called on the locker thread)."""
        self._round_trips.observe(seconds)

    def _register_thread(self) -> _ThreadStats:
        table: _ThreadStats = {}
        self._local.table = table
        with self._register_lock:
            self._threads.append(table)
        return table

    # --- reading (a scrape) --------------------------------------------------------

    def _all_stats(self) -> list[tuple[tuple[str, str], _ClassStats]]:
        """Every thread's (queue, job_class) stats; a copy of each dict is one
        C call, safe while its thread adds a key."""
        with self._register_lock:
            tables = list(self._threads)
        return [item for table in tables for item in table.copy().items()]

    def outcomes(self) -> dict[tuple[str, str, str], int]:
        """(outcome, queue, job_class) -> jobs, added up over the threads."""
        merged: dict[tuple[str, str, str], int] = {}
        for (queue, job_class), stats in self._all_stats():
            for outcome, count in (
                ("worked", stats.worked),
                ("errored", stats.errored),
                ("expired", stats.expired),
            ):
                if count:
                    key = (outcome, queue, job_class)
                    merged[key] = merged.get(key, 0) + count
        return merged

    def durations(self) -> dict[tuple[str, str], _Histogram]:
        """(queue, job_class) -> run time histogram, added up."""
        return _merge([(key, stats.durations) for key, stats in self._all_stats()])

    def start_delays(self) -> dict[str, _Histogram]:
        """queue -> start delay histogram, added up."""
        return _merge([(key[0], stats.delays) for key, stats in self._all_stats()])

    def round_trips(self) -> _Histogram:
        merged = _Histogram(ROUND_TRIP_BUCKETS)
        self._round_trips.add_to(merged)
        return merged


def _merge(items: list[tuple[Any, _Histogram]]) -> dict[Any, _Histogram]:
    merged: dict[Any, _Histogram] = {}
    for key, histogram in items:
        target = merged.get(key)
        if target is None:
            target = merged[key] = _Histogram(histogram.bounds)
        histogram.add_to(target)
    return merged


def _buckets(histogram: _Histogram) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs, +Inf last, as Prometheus wants them."""
    pairs: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(histogram.bounds, histogram.counts, strict=False):
        running += count
        pairs.append((repr(float(bound)), running))
    pairs.append(("+Inf", running + histogram.counts[-1]))
    return pairs


class WorkerCollector:
    """A ``prometheus_client`` collector of one worker's metrics: register it
    in a ``CollectorRegistry`` (the probe server does)."""

    def __init__(self, worker: Worker) -> None:
        if worker.metrics is None:
            raise ConveyorError("this worker records no metrics: make it with metrics=True")
        self._worker = worker
        self._metrics = worker.metrics
        self._families = require_prometheus_client().metrics_core

    def describe(self) -> list[Any]:
        return []  # computed at each scrape; nothing to check at registration

    def collect(self) -> Iterator[Any]:
        core = self._families
        labels = ["queue", "job_class"]
        counters = {
            outcome: core.CounterMetricFamily(f"conveyor_jobs_{outcome}", text, labels=labels)
            for outcome, text in _OUTCOME_COUNTERS.items()
        }
        for (outcome, queue, job_class), count in sorted(self._metrics.outcomes().items()):
            counters[outcome].add_metric([queue, job_class], count)
        yield from counters.values()

        durations = core.HistogramMetricFamily(
            "conveyor_job_duration_seconds",
            "How long jobs ran (the job's run, its middleware included).",
            labels=labels,
        )
        for (queue, job_class), histogram in sorted(self._metrics.durations().items()):
            durations.add_metric([queue, job_class], _buckets(histogram), histogram.total)
        yield durations

        delays = core.HistogramMetricFamily(
            "conveyor_job_start_delay_seconds",
            "Seconds from a job's run_at (when it was enqueued, or due if scheduled or "
            "retried) to the start of its run: the enqueue-to-start latency.",
            labels=["queue"],
        )
        for queue, histogram in sorted(self._metrics.start_delays().items()):
            delays.add_metric([queue], _buckets(histogram), histogram.total)
        yield delays

        round_trips = self._metrics.round_trips()
        cycle = core.HistogramMetricFamily(
            "conveyor_locker_round_trip_seconds",
            "Duration of the locker's round trips: one cycle's resolutions, locks and "
            "polls sent in one transaction.",
        )
        cycle.add_metric([], _buckets(round_trips), round_trips.total)
        yield cycle

        worker = self._worker
        yield core.CounterMetricFamily(
            "conveyor_locker_reconnects",
            "Times the locker lost its session and started again with a new one.",
            value=worker.reconnects,
        )
        yield core.GaugeMetricFamily(
            "conveyor_locker_connected",
            "1 while the locker's session is up and LISTENing, else 0.",
            value=1 if worker.connected else 0,
        )
        buffer = worker.buffer
        yield core.GaugeMetricFamily(
            "conveyor_buffer_jobs", "Locked jobs waiting in the buffer for a worker thread.",
            value=buffer.size,
        )  # fmt: skip
        yield core.GaugeMetricFamily(
            "conveyor_buffer_maximum_jobs", "The buffer's maximum size.",
            value=buffer.maximum_size,
        )  # fmt: skip
        yield core.GaugeMetricFamily(
            "conveyor_running_jobs", "Jobs handed to worker threads and not reported back yet.",
            value=buffer.running,
        )  # fmt: skip
        yield core.GaugeMetricFamily(
            "conveyor_worker_threads", "The worker threads of this process.",
            value=len(worker.worker_priorities),
        )  # fmt: skip
