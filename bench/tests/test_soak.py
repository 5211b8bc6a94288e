"""The soak's short form (60 s), so the 10-minute scenario cannot rot: its
own cluster with autovacuum on, a steady enqueue from another process, two
default workers, a burst halfway. Behaviour, not speed: the figures are
collected and reported, every job ran exactly once, the queue drained. The
goals (p99 and lock time in the last minute <= 1.5x the first) are judged in
docs/performance.md on a quiet machine, not here."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor_bench.db import Server
from conveyor_bench.scenarios import Context
from conveyor_bench.scenarios.soak import SAMPLE_EVERY, run_soak

pytestmark = [pytest.mark.bench, pytest.mark.timeout(600)]


def test_short_soak_collects_its_figures_and_loses_nothing(admin_url: str, tmp_path: Path) -> None:
    seconds, rate, burst = 60.0, 500.0, 20_000
    ctx = Context(server=Server(admin_url), workdir=tmp_path)
    result = run_soak(ctx, seconds, rate, burst)
    details = result.details
    assert details["exactly_once"], (details["missing"], details["duplicates"])
    assert details["steady_jobs"] == int(seconds * rate)
    samples = details["samples"]
    assert len(samples) >= seconds / SAMPLE_EVERY
    assert samples[-1]["jobs"] == 0, "the queue drained"
    for sample in samples:
        assert {"table_bytes", "index_bytes", "dead", "autovacuums", "lock_calls"} <= set(sample)
    assert samples[-1]["lock_calls"] > samples[0]["lock_calls"]
    # The burst shows in the table: more rows than the steady load ever had.
    assert max(s["live"] + s["dead"] for s in samples) >= burst / 2
    latency = details["latency_per_10s"]
    assert len(latency) >= seconds / SAMPLE_EVERY - 1
    assert all(w["p99_ms"] is not None and w["p99_ms"] >= w["p50_ms"] for w in latency)
    assert details["p99_first_ms"] is not None and details["p99_last_ms"] is not None
    assert {m.metric for m in result.measurements} >= {
        "soak p99 last/first minute",
        "soak index size end/before the burst",
    }
    start, peak, end = details["index_bytes_start_peak_end"]
    assert 0 < start <= peak and 0 < end <= peak
    assert "exactly once" in result.summary
