"""WorkerMetrics without a database: the start delay comes out the same
whichever way run_at is converted (a zone of a fixed offset, a zone with
daylight saving time), the outcomes and histograms add up over threads, and
the jobs the worker threads record are folded in batches exactly and with
bounded memory. (The worker end to end: test_probes.py.)"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import conveyor
import psycopg
import pytest
from conveyor.metrics import JOB_SECONDS_BUCKETS, WorkerMetrics
from conveyor.protocol import Action, LockedJob, Resolution
from db_support import scalar

DONE = Resolution(Action.DESTROY, 1)


class MetricsBatchOk(conveyor.Job):
    def run(self, *args: Any) -> None:
        pass


PARIS = ZoneInfo("Europe/Paris")


def row(run_at: datetime, *, job_class: str = "M", queue: str = "q") -> LockedJob:
    return LockedJob(100, run_at, 1, job_class, queue, "[]", "{}", 0, 15)


@pytest.mark.parametrize(
    "tz",
    [UTC, ZoneInfo("Etc/UTC"), ZoneInfo("UTC"), timezone(timedelta(hours=5, minutes=30)),
     ZoneInfo("Etc/GMT+3"), ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")],
)  # fmt: skip
def test_the_start_delay_is_exact_in_every_zone(tz: object) -> None:
    started = time.time()
    metrics = WorkerMetrics()
    # 2 s, 20 s and 2 hours before the start; one in summer, one in winter
    # (across daylight saving time changes for the zones that have them).
    for delay in (2.0, 20.0, 7200.0):
        run_at = datetime.fromtimestamp(started - delay, tz)  # type: ignore[arg-type]
        metrics.job_done(row(run_at), 0.001, DONE, False, started)
    for when in (
        datetime(2026, 7, 1, 12, tzinfo=UTC),
        datetime(2026, 1, 15, 12, tzinfo=UTC),
    ):
        run_at = when.astimezone(tz)  # type: ignore[arg-type]
        metrics.job_done(row(run_at), 0.001, DONE, False, when.timestamp() + 7.0)
    histogram = metrics.start_delays()["q"]
    assert histogram.total == pytest.approx(2.0 + 20.0 + 7200.0 + 7.0 + 7.0, abs=1e-3)
    expected = [0] * (len(JOB_SECONDS_BUCKETS) + 1)
    for delay in (2.0, 20.0, 7200.0, 7.0, 7.0):
        expected[
            next((i for i, b in enumerate(JOB_SECONDS_BUCKETS) if delay <= b), -1)
        ] += 1
    assert histogram.counts == expected


def test_a_run_at_after_the_start_counts_as_no_delay() -> None:
    metrics = WorkerMetrics()
    started = time.time()
    metrics.job_done(
        row(datetime.fromtimestamp(started + 60, UTC)),
        0.0,
        DONE,
        False,
        started,
    )
    assert metrics.start_delays()["q"].total == 0.0
    assert metrics.start_delays()["q"].counts[0] == 1


def test_outcomes_and_durations_add_up_over_threads() -> None:
    metrics = WorkerMetrics()
    run_at = datetime.now(UTC)
    retry = Resolution(Action.RETRY, 1, "E: boom", "tb")
    give_up = Resolution(Action.RETRY, 1, "E: boom", "tb", expire=True)

    def work() -> None:
        for _ in range(100):
            metrics.job_done(row(run_at), 0.002, DONE, False, None)
        metrics.job_done(row(run_at, job_class="F"), 0.5, retry, True, None)
        metrics.job_done(row(run_at, job_class="F", queue="r"), 0.5, give_up, True)
        metrics.job_done(row(run_at), 0.002, Resolution(Action.EXPIRE, 1), False)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert metrics.outcomes() == {
        ("worked", "q", "M"): 404,
        ("expired", "q", "M"): 4,
        ("errored", "q", "F"): 4,
        ("errored", "r", "F"): 4,
        ("expired", "r", "F"): 4,
    }
    durations = metrics.durations()
    assert sum(durations[("q", "M")].counts) == 404
    assert durations[("q", "M")].total == pytest.approx(404 * 0.002)
    assert durations[("q", "F")].counts[JOB_SECONDS_BUCKETS.index(0.5)] == 4
    assert sum(metrics.start_delays()["q"].counts) == 408


# --- the batches: what the worker threads record, folded later -----------------------


def test_recorded_jobs_wait_until_a_fold_and_a_read_folds_them() -> None:
    metrics = WorkerMetrics(fold_at=1000)
    run_at = datetime.now(UTC)
    for _ in range(10):
        metrics.pending.append((row(run_at), 0.002, DONE, False, time.time()))
    assert len(metrics.pending) == 10  # the worker thread only appended
    assert metrics.outcomes() == {("worked", "q", "M"): 10}
    assert metrics.pending == []
    metrics.pending.append((row(run_at), 0.002, DONE, False, time.time()))
    assert metrics.outcomes() == {("worked", "q", "M"): 11}  # and again


def test_recording_folds_once_enough_jobs_wait() -> None:
    """The memory the recorded jobs hold is bounded: the thread that records
    the fold_at-th job folds them (job_done; the worker threads inline)."""
    metrics = WorkerMetrics(fold_at=50)
    run_at = datetime.now(UTC)
    for _ in range(49):
        metrics.job_done(row(run_at), 0.002, DONE, False)
    assert len(metrics.pending) == 49  # fewer than fold_at: left for later
    metrics.job_done(row(run_at), 0.002, DONE, False)
    assert metrics.pending == []
    for _ in range(500):
        metrics.job_done(row(run_at), 0.002, DONE, False)
        assert len(metrics.pending) < 50
    assert metrics.outcomes() == {("worked", "q", "M"): 550}


def test_the_jobs_a_worker_runs_are_folded_by_its_threads(
    db_url: str, conn: psycopg.Connection[Any]
) -> None:
    """A real worker, jobs of known outcome: counts exact mid-drain (never
    more than ran, never going down) and after; the jobs waiting to be
    folded stay few."""
    metrics_jobs = 3000
    conn.execute(
        "INSERT INTO conveyor.jobs (job_class, args) SELECT 'MetricsBatchOk',"
        " jsonb_build_array(i) FROM generate_series(1, %s) i",
        [metrics_jobs],
    )
    worker = conveyor.Worker(db_url, worker_count=4, wait_period=0.01, metrics=True)
    assert worker.metrics is not None
    metrics = worker.metrics
    seen: list[int] = []
    waiting: list[int] = []
    worker.start()
    try:
        while True:
            left = scalar(conn, "SELECT count(*) FROM conveyor.jobs")
            waiting.append(len(metrics.pending))
            seen.append(
                metrics.outcomes().get(("worked", "default", "MetricsBatchOk"), 0)
            )
            if left == 0 and worker.buffer.running == 0:
                break
            time.sleep(0.005)
    finally:
        worker.stop(timeout=5)
    assert seen == sorted(seen) and seen[-1] <= metrics_jobs
    assert len(set(seen)) > 2  # read mid-drain, more than once
    # fold_at, and what the other threads record while one folds: far fewer
    # than the jobs (a worker that never folded would hold them all).
    assert max(waiting) < metrics_jobs / 3
    assert metrics.outcomes() == {("worked", "default", "MetricsBatchOk"): metrics_jobs}
    durations = metrics.durations()[("default", "MetricsBatchOk")]
    assert sum(durations.counts) == metrics_jobs
    assert sum(metrics.start_delays()["default"].counts) == metrics_jobs


def test_a_batch_of_mixed_jobs_folds_into_exact_buckets() -> None:
    """Every bucket, values on the bounds (le: in that bound's bucket), above
    the last, interleaved classes and queues, errors, expiries, a run_at
    after the start: the same figures as counting job by job."""
    started = time.time()
    values = [
        0.0,
        1e-6,
        *JOB_SECONDS_BUCKETS,
        *(b * 1.01 for b in JOB_SECONDS_BUCKETS),
        5000.0,
    ]
    retry = Resolution(Action.RETRY, 1, "E: boom", "tb")
    records = []
    expected_counts: dict[tuple[str, str, bool], list[int]] = {}
    expected_delays: dict[str, list[int]] = {}
    expired: dict[tuple[str, str], int] = {}
    for index, value in enumerate(values * 3):
        job_class, queue = ("A", "q") if index % 3 else ("B", "r" if index % 2 else "q")
        errored = index % 5 == 0
        resolution = (
            retry
            if errored
            else (Resolution(Action.EXPIRE, 1) if index % 7 == 0 else DONE)
        )
        delay = (
            values[(index * 7) % len(values)] if index % 11 else -3.0
        )  # -3: run_at after start
        job = row(
            # Queue r: a zone with daylight saving time (job by job); q: UTC.
            datetime.fromtimestamp(started - delay, PARIS if queue == "r" else UTC),
            job_class=job_class,
            queue=queue,
        )._replace(maximum_retry_count=index % 2)
        records.append((job, value, resolution, errored, started))
        bucket = bisect_left(JOB_SECONDS_BUCKETS, value)
        expected_counts.setdefault(
            (job_class, queue, errored), [0] * (len(JOB_SECONDS_BUCKETS) + 1)
        )[bucket] += 1
        delays = expected_delays.setdefault(queue, [0] * (len(JOB_SECONDS_BUCKETS) + 1))
        # The delay as the job carries it (run_at to the microsecond).
        epoch = job.run_at.timestamp()
        delays[bisect_left(JOB_SECONDS_BUCKETS, max(started - epoch, 0.0))] += 1
        if resolution.action is Action.EXPIRE or (
            errored and job.maximum_retry_count == 0
        ):
            expired[(queue, job_class)] = expired.get((queue, job_class), 0) + 1
    metrics = WorkerMetrics()
    metrics.pending.extend(records)
    outcomes = metrics.outcomes()
    for (job_class, queue, errored), counts in expected_counts.items():
        assert outcomes[("errored" if errored else "worked", queue, job_class)] == sum(
            counts
        )
    for (queue, job_class), count in expired.items():
        assert outcomes[("expired", queue, job_class)] == count
    durations = metrics.durations()
    for queue, job_class in {(q, c) for c, q, _ in expected_counts}:
        both = [
            sum(pair)
            for pair in zip(
                *(
                    counts
                    for (c, q, _), counts in expected_counts.items()
                    if (q, c) == (queue, job_class)
                )
            )
        ]
        assert durations[(queue, job_class)].counts == both
    delays = metrics.start_delays()
    for queue, counts in expected_delays.items():
        assert delays[queue].counts == counts, queue
    # Folded job by job (a thousand folds of one), the figures are the same.
    one_by_one = WorkerMetrics(fold_at=1)
    for job, value, resolution, errored, when in records:
        one_by_one.job_done(job, value, resolution, errored, when)
    assert one_by_one.outcomes() == outcomes
    assert {k: h.counts for k, h in one_by_one.durations().items()} == {
        k: h.counts for k, h in durations.items()
    }
    assert {k: h.counts for k, h in one_by_one.start_delays().items()} == {
        k: h.counts for k, h in delays.items()
    }
    for key, histogram in one_by_one.start_delays().items():
        assert histogram.total == pytest.approx(delays[key].total)


def test_jobs_recorded_while_others_fold_are_all_counted() -> None:
    """Ten threads record (and fold) as fast as they can while two others
    fold and read: no job lost or counted twice."""
    metrics = WorkerMetrics(fold_at=64)
    run_at = datetime.now(UTC)
    jobs = row(run_at)
    recording = threading.Event()
    reads: list[int] = []

    def work() -> None:
        for _ in range(5000):
            metrics.job_done(jobs, 0.002, DONE, False, time.time())

    def fold() -> None:
        while not recording.is_set():
            metrics.fold()
            reads.append(metrics.outcomes().get(("worked", "q", "M"), 0))

    workers = [threading.Thread(target=work) for _ in range(10)]
    folders = [threading.Thread(target=fold) for _ in range(2)]
    for thread in folders + workers:
        thread.start()
    for thread in workers:
        thread.join()
    recording.set()
    for thread in folders:
        thread.join()
    assert metrics.outcomes() == {("worked", "q", "M"): 50_000}
    assert sum(metrics.start_delays()["q"].counts) == 50_000
    assert all(0 <= n <= 50_000 for n in reads)
