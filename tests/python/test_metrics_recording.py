"""WorkerMetrics.job_done without a database: the start delay comes out the
same whichever way run_at is converted (the server's run_at_epoch, a zone of
a fixed offset, a zone with daylight saving time), and the outcomes and
histograms add up over threads. (The worker end to end: test_probes.py.)"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from conveyor.metrics import JOB_SECONDS_BUCKETS, WorkerMetrics
from conveyor.protocol import Action, LockedJob, Resolution

DONE = Resolution(Action.DESTROY, 1)


def row(
    run_at: datetime, *, epoch: bool, job_class: str = "M", queue: str = "q"
) -> LockedJob:
    return LockedJob(
        100, run_at, 1, job_class, queue, "[]", "{}", 0, 15,
        run_at.timestamp() if epoch else None,
    )  # fmt: skip


@pytest.mark.parametrize(
    "tz",
    [UTC, ZoneInfo("Etc/UTC"), ZoneInfo("UTC"), timezone(timedelta(hours=5, minutes=30)),
     ZoneInfo("Etc/GMT+3"), ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")],
)  # fmt: skip
@pytest.mark.parametrize("epoch", [True, False])
def test_the_start_delay_is_exact_in_every_zone(tz: object, epoch: bool) -> None:
    started = time.time()
    metrics = WorkerMetrics()
    # 2 s, 20 s and 2 hours before the start; one in summer, one in winter
    # (across daylight saving time changes for the zones that have them).
    for delay in (2.0, 20.0, 7200.0):
        run_at = datetime.fromtimestamp(started - delay, tz)  # type: ignore[arg-type]
        metrics.job_done(row(run_at, epoch=epoch), 0.001, DONE, False, started)
    for when in (
        datetime(2026, 7, 1, 12, tzinfo=UTC),
        datetime(2026, 1, 15, 12, tzinfo=UTC),
    ):
        run_at = when.astimezone(tz)  # type: ignore[arg-type]
        metrics.job_done(
            row(run_at, epoch=epoch), 0.001, DONE, False, when.timestamp() + 7.0
        )
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
        row(datetime.fromtimestamp(started + 60, UTC), epoch=True),
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
            metrics.job_done(row(run_at, epoch=True), 0.002, DONE, False, None)
        metrics.job_done(
            row(run_at, epoch=False, job_class="F"), 0.5, retry, True, None
        )
        metrics.job_done(
            row(run_at, epoch=False, job_class="F", queue="r"), 0.5, give_up, True
        )
        metrics.job_done(
            row(run_at, epoch=True), 0.002, Resolution(Action.EXPIRE, 1), False
        )

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
