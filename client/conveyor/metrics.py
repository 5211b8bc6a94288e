"""A worker process's own metrics: jobs worked, errored and expired by queue
and class, job durations, start delays, the locker's round trips and
reconnects, the buffer -- served as Prometheus text on the probe port
(``conveyor worker --probe-port 8081 --metrics``, :mod:`conveyor.probes`).

Recording costs a job no lock: each thread that reports jobs (a worker
thread, the event loop's thread for async jobs) adds to counters of its
own, registered once; the locker thread alone records round trips. A scrape
adds the threads' counters up. Reading another thread's plain dicts and
lists is safe under the GIL (a copy of a dict or a list is one C call); a
scrape that lands mid-update may miss the job being recorded, which the next
one counts. So the hot path pays one dict lookup and a few list updates per
job (about 0.4 us), never contention; prometheus_client's own Counter and
Histogram objects (a lock and a label lookup per call) would cost several
times that (docs/performance.md, "The cost of worker metrics").

Only the rendering needs ``prometheus_client`` (the ``conveyor[metrics]``
extra), imported when the first scrape renders; recording needs nothing.

Queue gauges (ready, scheduled, running... by queue) are not here: they come
from SQL, once per cluster, through ``conveyor exporter``
(:mod:`conveyor.cli_exporter`).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

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
    """Bucket counts (not cumulative) and a sum."""

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


# One thread's figures of one (queue, job_class) are one flat list, written by
# that thread only: the hot path then pays index arithmetic on a local list,
# not attribute look-ups on several objects. Its layout:
_BUCKETS = len(JOB_SECONDS_BUCKETS) + 1  # the last: above every bound (+Inf)
_EXPIRED = 0
_DURATION_SUM = 1
_DELAY_SUM = 2
_WORKED = 3  # _BUCKETS duration bucket counts of the jobs that returned from here
_ERRORED = _WORKED + _BUCKETS  # _BUCKETS of the jobs that raised from here
_DELAYS = _ERRORED + _BUCKETS  # _BUCKETS start delay bucket counts from here
_WIDTH = _DELAYS + _BUCKETS
# Worked and errored are no counters of their own: each is the count of its
# duration histogram. So a job costs one increment for both, and a scrape
# that copies the list between two of a job's updates still reads worked and
# errored consistently (a counter that went down would look like a restart).

#: One thread's figures: job_class -> queue -> its flat list.
_ThreadStats = dict[str, dict[str, list[Any]]]

#: tzinfo -> the Unix epoch as a datetime in that zone, for the zones of a
#: fixed offset (the session's TimeZone sets psycopg's: ZoneInfo('Etc/UTC')
#: on most servers); False for a zone with daylight saving time.
_EPOCHS: dict[Any, Any] = {}
#: Zones of a fixed offset by name (besides every Etc/...).
_FIXED_ZONES = frozenset(
    ("UTC", "UCT", "GMT", "GMT0", "GMT+0", "GMT-0", "Greenwich", "Universal", "Zulu")
)


def _epoch(tz: Any) -> Any:
    """The value of :data:`_EPOCHS` for ``tz`` (computed once per zone).

    ``run_at.timestamp()`` asks the zone for its offset: with a ZoneInfo that
    costs about 1 us, more than all the rest of a job's metrics. Two datetimes
    of the same tzinfo subtract as naive ones instead (50 ns), which is exact
    when the zone's offset never changes -- so only for those zones."""
    fixed = isinstance(tz, dt.timezone) or (
        isinstance(tz, ZoneInfo) and (tz.key in _FIXED_ZONES or tz.key.startswith("Etc/"))
    )
    epoch: Any = False
    if fixed:
        offset = tz.utcoffset(dt.datetime(2000, 1, 1))  # any instant: it never changes
        # The epoch's local wall time in that zone: 1970-01-01 00:00 + offset.
        epoch = dt.datetime(1970, 1, 1, tzinfo=tz) + offset
    _EPOCHS[tz] = epoch
    return epoch


_DESTROY, _FINISH, _EXPIRE, _RETRY = Action.DESTROY, Action.FINISH, Action.EXPIRE, Action.RETRY


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
        self,
        row: LockedJob,
        elapsed: float,
        resolution: Resolution,
        errored: bool,
        started: float | None = None,
        # Bound as defaults: local look-ups, not global ones, on the hot path.
        _bisect: Any = bisect_left,
        _bounds: tuple[float, ...] = JOB_SECONDS_BUCKETS,
    ) -> None:
        """Count one job a thread ran (``elapsed`` seconds, started at
        ``started``, time.time(), when known) and its outcome. Well under a
        microsecond: one dict lookup, two bisects, a few list updates."""
        try:
            table: _ThreadStats = self._local.table
        except AttributeError:
            table = self._register_thread()
        # job_class, then queue: two lookups of strings (their hashes cached),
        # cheaper than building a (queue, job_class) tuple per job.
        by_queue = table.get(row.job_class)
        if by_queue is None:
            by_queue = table[row.job_class] = {}
        stats = by_queue.get(row.queue)
        if stats is None:
            stats = by_queue[row.queue] = [0, 0.0, 0.0] + [0] * (_WIDTH - 3)
        action = resolution.action
        if (action is not _DESTROY and action is not _FINISH) and (
            action is _EXPIRE
            or (
                action is _RETRY
                and (resolution.expire or row.error_count + 1 > row.maximum_retry_count)
            )
        ):  # retry_job's rule for expiring instead of retrying (destroy, finish: cheap)
            stats[_EXPIRED] += 1
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        stats[(_ERRORED if errored else _WORKED) + _bisect(_bounds, elapsed)] += 1
        stats[_DURATION_SUM] += elapsed
        # The database's clock set run_at, this host's says when the job
        # started: a skew between them shows here, so never below zero.
        if started is None:
            started = time.time() - elapsed
        run_at_epoch = row.run_at_epoch  # selected for a worker that records metrics
        if run_at_epoch is not None:
            delay = started - run_at_epoch
        else:
            run_at = row.run_at
            epoch = _EPOCHS.get(run_at.tzinfo)
            if epoch is None:
                epoch = _epoch(run_at.tzinfo)
            if epoch is False:  # a zone with daylight saving time: the exact way
                delay = started - run_at.timestamp()
            else:
                delay = started - (run_at - epoch).total_seconds()
        delay = delay if delay > 0.0 else 0.0
        stats[_DELAYS + _bisect(_bounds, delay)] += 1
        stats[_DELAY_SUM] += delay

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

    def _all_stats(self) -> list[tuple[tuple[str, str], list[Any]]]:
        """Every thread's (queue, job_class) figures, each a copy (one C call,
        safe while its thread adds a key or counts a job)."""
        with self._register_lock:
            tables = list(self._threads)
        return [
            ((queue, job_class), list(stats))
            for table in tables
            for job_class, by_queue in table.copy().items()
            for queue, stats in by_queue.copy().items()
        ]

    def outcomes(self) -> dict[tuple[str, str, str], int]:
        """(outcome, queue, job_class) -> jobs, added up over the threads."""
        merged: dict[tuple[str, str, str], int] = {}
        for (queue, job_class), stats in self._all_stats():
            for outcome, count in (
                ("worked", sum(stats[_WORKED:_ERRORED])),
                ("errored", sum(stats[_ERRORED:_DELAYS])),
                ("expired", stats[_EXPIRED]),
            ):
                if count:
                    key = (outcome, queue, job_class)
                    merged[key] = merged.get(key, 0) + count
        return merged

    def durations(self) -> dict[tuple[str, str], _Histogram]:
        """(queue, job_class) -> run time histogram, added up."""
        merged: dict[tuple[str, str], _Histogram] = {}
        for key, stats in self._all_stats():
            histogram = merged.get(key)
            if histogram is None:
                histogram = merged[key] = _Histogram(JOB_SECONDS_BUCKETS)
            counts = histogram.counts
            for index in range(_BUCKETS):  # the jobs that returned and those that raised
                counts[index] += stats[_WORKED + index] + stats[_ERRORED + index]
            histogram.total += stats[_DURATION_SUM]
        return merged

    def start_delays(self) -> dict[str, _Histogram]:
        """queue -> start delay histogram, added up."""
        return _merge(
            [(key[0], _histogram(stats, _DELAYS, _DELAY_SUM)) for key, stats in self._all_stats()]
        )

    def round_trips(self) -> _Histogram:
        merged = _Histogram(ROUND_TRIP_BUCKETS)
        self._round_trips.add_to(merged)
        return merged


def _histogram(stats: list[Any], first: int, total: int) -> _Histogram:
    """The histogram held in a thread's flat list from index ``first``."""
    histogram = _Histogram(JOB_SECONDS_BUCKETS)
    histogram.counts = stats[first : first + _BUCKETS]
    histogram.total = stats[total]
    return histogram


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
