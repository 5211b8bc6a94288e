"""A worker process's own metrics: jobs worked, errored and expired by queue
and class, job durations, start delays, the locker's round trips and
reconnects, the buffer -- served as Prometheus text on the probe port
(``conveyor worker --probe-port 8081 --metrics``, :mod:`conveyor.probes`).

Recording costs a worker thread one tuple and one list append per job: no
lock, no clock read (the job's start time and run time are the ones the
thread already took), no arithmetic. The counting is done in batches,
"folded" into the counters and histograms a column at a time (each step one
C call over the batch): by the thread that records the ``FOLD_AT``-th job
waiting, and by every read (a scrape), which folds whatever waits first --
so a scrape counts every job recorded before it, exactly, and the jobs
waiting hold bounded memory. Batches stay small because a record that
outlives its job keeps its row alive too, and objects that pile up make
Python's cyclic garbage collector run more often: with the locker folding
once a round trip (a thousand jobs and more), the collector ran 2.5 times
as often and cost more than the folding (docs/performance.md, "The cost of
worker metrics").

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
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import repeat
from operator import attrgetter, itemgetter, sub
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


# The figures of one (queue, job_class) are one flat list: folding a job then
# costs index arithmetic on a local list, not attribute look-ups on several
# objects. Its layout:
_BUCKETS = len(JOB_SECONDS_BUCKETS) + 1  # the last: above every bound (+Inf)
_EXPIRED = 0
_DURATION_SUM = 1
_DELAY_SUM = 2
_WORKED = 3  # _BUCKETS duration bucket counts of the jobs that returned from here
_ERRORED = _WORKED + _BUCKETS  # _BUCKETS of the jobs that raised from here
_DELAYS = _ERRORED + _BUCKETS  # _BUCKETS start delay bucket counts from here
_WIDTH = _DELAYS + _BUCKETS
# Worked and errored are no counters of their own: each is the count of its
# duration histogram, so a job costs one increment for both.

#: One job as a worker thread records it: (row, elapsed -- seconds it ran,
#: resolution, errored -- whether it raised, started -- time.time() when it
#: started). A plain tuple: the cheapest thing to build.
JobRecord = tuple[LockedJob, float, Resolution, bool, float]
#: Jobs recorded before the worker thread that records the last of them
#: folds them; a read folds whatever waits. Small batches: a job's record
#: (and its row) then dies young, so that it hardly adds to the work of
#: Python's cyclic garbage collector (whose youngest generation is collected
#: every 700 objects created and not yet freed).
FOLD_AT = 100

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

    def __init__(self, *, fold_at: int | None = None) -> None:
        #: Jobs recorded and not folded yet: the worker threads append one
        #: :data:`JobRecord` each (a list's own append: one C call, no lock),
        #: and fold once there are :attr:`fold_at` or more.
        self.pending: list[JobRecord] = []
        self.fold_at = FOLD_AT if fold_at is None else fold_at
        #: Held while folding and while reading the folded figures.
        self._fold_lock = threading.Lock()
        #: The folded figures: job_class -> queue -> flat list (see _WIDTH).
        self._table: dict[str, dict[str, list[Any]]] = {}
        self._round_trips = _Histogram(ROUND_TRIP_BUCKETS)  # the locker thread's

    # --- recording ----------------------------------------------------------------

    def job_done(
        self,
        row: LockedJob,
        elapsed: float,
        resolution: Resolution,
        errored: bool,
        started: float | None = None,
    ) -> None:
        """Count one job a thread ran (``elapsed`` seconds, started at
        ``started``, time.time(), when known) and its outcome. The worker
        threads do the same inline (worker_threads.py), without this call."""
        if started is None:
            started = time.time() - elapsed
        pending = self.pending
        pending.append((row, elapsed, resolution, errored, started))
        if len(pending) >= self.fold_at:
            self.fold(wait=False)

    def round_trip(self, seconds: float) -> None:
        """Record one locker round trip (called on the locker thread)."""
        self._round_trips.observe(seconds)

    def fold(self, *, wait: bool = True) -> None:
        """Add the jobs recorded so far to the counters and histograms.
        ``wait=False``: not if another thread is folding (it will fold them,
        or the next thread that finds too many waiting)."""
        if not self._fold_lock.acquire(blocking=wait):
            return
        try:
            pending = self.pending
            count = len(pending)
            if count:
                # Two C calls, each whole under the GIL: jobs recorded
                # meanwhile land after ``count`` and stay for the next fold.
                batch = pending[:count]
                del pending[:count]
                _fold(self._table, batch)
        finally:
            self._fold_lock.release()

    # --- reading (a scrape) --------------------------------------------------------

    def _all_stats(self) -> list[tuple[tuple[str, str], list[Any]]]:
        """Every (queue, job_class)'s figures, every recorded job folded in
        (copies: the next fold does not change them under the reader)."""
        self.fold()
        with self._fold_lock:
            return [
                ((queue, job_class), list(stats))
                for job_class, by_queue in self._table.items()
                for queue, stats in by_queue.items()
            ]

    def outcomes(self) -> dict[tuple[str, str, str], int]:
        """(outcome, queue, job_class) -> jobs."""
        merged: dict[tuple[str, str, str], int] = {}
        for (queue, job_class), stats in self._all_stats():
            for outcome, count in (
                ("worked", sum(stats[_WORKED:_ERRORED])),
                ("errored", sum(stats[_ERRORED:_DELAYS])),
                ("expired", stats[_EXPIRED]),
            ):
                if count:
                    merged[(outcome, queue, job_class)] = count
        return merged

    def durations(self) -> dict[tuple[str, str], _Histogram]:
        """(queue, job_class) -> run time histogram."""
        merged: dict[tuple[str, str], _Histogram] = {}
        for key, stats in self._all_stats():
            histogram = merged[key] = _Histogram(JOB_SECONDS_BUCKETS)
            histogram.counts = [
                stats[_WORKED + index] + stats[_ERRORED + index] for index in range(_BUCKETS)
            ]  # the jobs that returned and those that raised
            histogram.total = stats[_DURATION_SUM]
        return merged

    def start_delays(self) -> dict[str, _Histogram]:
        """queue -> start delay histogram, added up over the job classes."""
        return _merge(
            [(key[0], _histogram(stats, _DELAYS, _DELAY_SUM)) for key, stats in self._all_stats()]
        )

    def round_trips(self) -> _Histogram:
        merged = _Histogram(ROUND_TRIP_BUCKETS)
        self._round_trips.add_to(merged)
        return merged


# Columns of a batch, taken by C (map over these): a pass over a thousand
# jobs costs about as much as one job's bytecode in a Python loop.
_GET_ROW, _GET_ELAPSED, _GET_RESOLUTION, _GET_ERRORED, _GET_STARTED = map(itemgetter, range(5))
_JOB_CLASS, _QUEUE = attrgetter("job_class"), attrgetter("queue")
_ACTION, _RUN_AT, _TZINFO = attrgetter("action"), attrgetter("run_at"), attrgetter("tzinfo")
_SECONDS = dt.timedelta.total_seconds


def _fold(table: dict[str, dict[str, list[Any]]], batch: list[JobRecord]) -> None:
    """Add ``batch`` to ``table`` (under the fold lock), a column at a time:
    each step is one C call over the jobs of one (job_class, queue) -- most
    batches are of one -- rather than a Python loop over the jobs."""
    for (job_class, queue), records in _groups(batch):
        by_queue = table.get(job_class)
        if by_queue is None:
            by_queue = table[job_class] = {}
        stats = by_queue.get(queue)
        if stats is None:
            stats = by_queue[queue] = [0, 0.0, 0.0] + [0] * (_WIDTH - 3)
        rows = list(map(_GET_ROW, records))
        # Run times: a histogram of the jobs that returned, one of those that
        # raised (their counts are the worked and errored counters).
        if any(map(_GET_ERRORED, records)):
            parts = [
                (_WORKED, [r[1] for r in records if not r[3]]),
                (_ERRORED, [r[1] for r in records if r[3]]),
            ]
        else:
            parts = [(_WORKED, list(map(_GET_ELAPSED, records)))]
        for first, elapsed in parts:
            if elapsed:
                stats[_DURATION_SUM] += sum(elapsed)
                _count(stats, first, elapsed)
        # Expired: destroy and finish never are (most jobs: one C count each).
        actions = list(map(_ACTION, map(_GET_RESOLUTION, records)))
        if actions.count(_DESTROY) + actions.count(_FINISH) != len(actions):
            stats[_EXPIRED] += sum(
                1 for row, _, resolution, _, _ in records if _expires(row, resolution)
            )
        # Start delays: from run_at to the start, never below zero (the
        # database's clock set run_at, this host's the start: a skew shows).
        run_ats = list(map(_RUN_AT, rows))
        tz = run_ats[0].tzinfo
        epoch = _EPOCHS.get(tz)
        if epoch is None:
            epoch = _epoch(tz)
        if epoch is not False and list(map(_TZINFO, run_ats)).count(tz) == len(run_ats):
            # One zone of a fixed offset (psycopg gives every run_at the
            # session's zone): seconds since the epoch by a subtraction.
            seconds = map(_SECONDS, map(sub, run_ats, repeat(epoch)))
            delays = list(map(sub, map(_GET_STARTED, records), seconds))
        else:  # a zone with daylight saving time: job by job, the exact way
            delays = [_delay(row, started) for row, _, _, _, started in records]
        if min(delays) < 0.0:
            delays = [delay if delay > 0.0 else 0.0 for delay in delays]
        stats[_DELAY_SUM] += sum(delays)
        _count(stats, _DELAYS, delays)


def _groups(batch: list[JobRecord]) -> Iterable[tuple[tuple[str, str], list[JobRecord]]]:
    """The batch's records by (job_class, queue), each group in order."""
    rows = list(map(_GET_ROW, batch))
    classes = list(map(_JOB_CLASS, rows))
    queues = list(map(_QUEUE, rows))
    count = len(batch)
    if classes.count(classes[0]) == count and queues.count(queues[0]) == count:
        return [((classes[0], queues[0]), batch)]  # equal strings compare by memcmp
    groups: dict[tuple[str, str], list[JobRecord]] = {}
    for key, record in zip(zip(classes, queues, strict=True), batch, strict=True):
        group = groups.get(key)
        if group is None:
            groups[key] = [record]
        else:
            group.append(record)
    return groups.items()


def _count(
    stats: list[Any],
    first: int,
    values: list[float],
    _bounds: tuple[float, ...] = JOB_SECONDS_BUCKETS,
) -> None:
    """Add the bucket counts of ``values`` to the histogram at
    ``stats[first:first + _BUCKETS]``. A value equal to a bound belongs to that
    bound's bucket (le), as bisect_left places it."""
    low = bisect_left(_bounds, min(values))
    high = bisect_left(_bounds, max(values))
    if low == high:  # all in one bucket: the usual batch of short jobs
        stats[first + low] += len(values)
        return
    ordered = sorted(values)
    below = 0  # values in the buckets before ``index``
    for index in range(low, high):
        # The values <= this bound are in this bucket or before it.
        upto = bisect_right(ordered, _bounds[index])
        stats[first + index] += upto - below
        below = upto
    stats[first + high] += len(ordered) - below


def _expires(row: LockedJob, resolution: Resolution) -> bool:
    """retry_job's rule: whether this outcome expires the job."""
    action = resolution.action
    return action is _EXPIRE or (
        action is _RETRY and (resolution.expire or row.error_count + 1 > row.maximum_retry_count)
    )


def _delay(row: LockedJob, started: float) -> float:
    """Seconds from the row's run_at to ``started`` (time.time())."""
    run_at = row.run_at
    epoch = _EPOCHS.get(run_at.tzinfo)
    if epoch is None:
        epoch = _epoch(run_at.tzinfo)
    if epoch is False:  # a zone with daylight saving time: the exact way
        return started - run_at.timestamp()
    seconds: float = (run_at - epoch).total_seconds()
    return started - seconds


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
