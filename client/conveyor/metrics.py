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


class _ThreadStats:
    """The counters of one reporting thread, written by that thread only."""

    __slots__ = ("durations", "outcomes", "start_delays")

    def __init__(self) -> None:
        #: (outcome, queue, job_class) -> jobs.
        self.outcomes: dict[tuple[str, str, str], int] = {}
        #: (queue, job_class) -> run time.
        self.durations: dict[tuple[str, str], _Histogram] = {}
        #: queue -> seconds from run_at to the start of the run.
        self.start_delays: dict[str, _Histogram] = {}


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
        """Count one job a thread ran (``elapsed`` seconds) and its outcome."""
        try:
            stats: _ThreadStats = self._local.stats
        except AttributeError:
            stats = self._register_thread()
        queue, job_class = row.queue, row.job_class
        outcomes = stats.outcomes
        key = ("errored" if errored else "worked", queue, job_class)
        outcomes[key] = outcomes.get(key, 0) + 1
        action = resolution.action
        if action is Action.EXPIRE or (
            action is Action.RETRY
            and (resolution.expire or row.error_count + 1 > row.maximum_retry_count)
        ):  # retry_job's rule for expiring instead of retrying
            key = ("expired", queue, job_class)
            outcomes[key] = outcomes.get(key, 0) + 1
        pair = (queue, job_class)
        duration = stats.durations.get(pair)
        if duration is None:
            duration = stats.durations[pair] = _Histogram(JOB_SECONDS_BUCKETS)
        duration.observe(elapsed)
        delay = stats.start_delays.get(queue)
        if delay is None:
            delay = stats.start_delays[queue] = _Histogram(JOB_SECONDS_BUCKETS)
        # The database's clock set run_at, this host's says when the job
        # started: a skew between them shows here, so never below zero.
        delay.observe(max(0.0, time.time() - elapsed - row.run_at.timestamp()))

    def round_trip(self, seconds: float) -> None:
        """Record one locker round trip (called on the locker thread)."""
        self._round_trips.observe(seconds)

    def _register_thread(self) -> _ThreadStats:
        stats = self._local.stats = _ThreadStats()
        with self._register_lock:
            self._threads.append(stats)
        return stats

    # --- reading (a scrape) --------------------------------------------------------

    def _all_threads(self) -> list[_ThreadStats]:
        with self._register_lock:
            return list(self._threads)

    def outcomes(self) -> dict[tuple[str, str, str], int]:
        """(outcome, queue, job_class) -> jobs, added up over the threads."""
        merged: dict[tuple[str, str, str], int] = {}
        for stats in self._all_threads():
            for key, count in stats.outcomes.copy().items():
                merged[key] = merged.get(key, 0) + count
        return merged

    def durations(self) -> dict[tuple[str, str], _Histogram]:
        """(queue, job_class) -> run time histogram, added up."""
        return _merge([stats.durations for stats in self._all_threads()], JOB_SECONDS_BUCKETS)

    def start_delays(self) -> dict[str, _Histogram]:
        """queue -> start delay histogram, added up."""
        return _merge([stats.start_delays for stats in self._all_threads()], JOB_SECONDS_BUCKETS)

    def round_trips(self) -> _Histogram:
        merged = _Histogram(ROUND_TRIP_BUCKETS)
        self._round_trips.add_to(merged)
        return merged


def _merge(tables: list[dict[Any, _Histogram]], bounds: Sequence[float]) -> dict[Any, _Histogram]:
    merged: dict[Any, _Histogram] = {}
    for table in tables:
        for key, histogram in table.copy().items():
            target = merged.get(key)
            if target is None:
                target = merged[key] = _Histogram(bounds)
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
