"""The orchestrator: scenarios x repeats x runners, progress, report."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .db import Server
from .report import evaluate_goals, format_machine, format_report, machine_info
from .results import Series
from .scenarios import ADVISORY_LOOP_VARIANT, DRAIN_TUNED_VARIANT, SCENARIOS, Context, Runner
from .systems import ConveyorSystem, RawSystem, System

__all__ = ["Options", "run_bench"]

#: Version of the JSON layout.
JSON_FORMAT = 1


@dataclass
class Options:
    database_url: str
    scenarios: list[str]
    jobs: int | None = None
    repeat: int = 3
    compare: list[str] = field(default_factory=list)
    json_path: Path | None = None
    plot_dir: Path | None = None
    #: Where the progress display goes.
    progress: TextIO = sys.stderr

    def command(self) -> str:
        args = ["conveyor", "bench"]
        if self.scenarios != list(SCENARIOS):
            args += ["--scenario", ",".join(self.scenarios)]
        if self.jobs is not None:
            args += ["--jobs", str(self.jobs)]
        args += ["--repeat", str(self.repeat)]
        args += ["--compare", ",".join(self.compare) or "none"]
        if self.json_path is not None:
            args += ["--json", str(self.json_path)]
        if self.plot_dir is not None:
            args += ["--plot", str(self.plot_dir)]
        return shlex.join(args)


class Progress:
    def __init__(self, stream: TextIO, total: int) -> None:
        self.stream = stream
        self.total = total
        self.done = 0
        self.started = time.monotonic()

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def begin(self, text: str) -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        self.stream.write(f"[{self.done}/{self.total} {elapsed:5.0f}s] {text} ... ")
        self.stream.flush()

    def end(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def _system_info(system: System) -> dict[str, Any]:
    return {"version": system.version(), "config": system.config()}


def run_bench(options: Options) -> tuple[dict[str, Any], str]:
    """Run the benchmark; return the report (JSON-ready) and its text form."""
    started = dt.datetime.now(dt.UTC)
    t_start = time.monotonic()
    server = Server(options.database_url)
    machine = machine_info(server.info())

    notes: list[str] = []
    settings = machine["postgresql"].get("settings", {})
    if settings.get("autovacuum") == "off":
        notes.append(
            "autovacuum is off on this server: dead rows pile up in the queue tables during "
            "each run (every run starts from a freshly vacuumed table)"
        )
    if settings.get("fsync") == "off" or settings.get("synchronous_commit") == "off":
        notes.append(
            "fsync or synchronous_commit is off on this server: commits do not wait for the "
            "disk, so commit-bound figures (single-row enqueue) are higher than on a durable setup"
        )
    peers: list[System] = []
    systems: dict[str, dict[str, Any]] = {
        "conveyor": _system_info(ConveyorSystem()),
        "raw": _system_info(RawSystem()),
    }
    from .peers import PEERS

    for name in options.compare:
        peer = PEERS[name]()
        reason = peer.unavailable()
        if reason:
            notes.append(f"{name} left out: {reason}")
            continue
        peers.append(peer)
        systems[name] = _system_info(peer)

    plan: list[tuple[str, int | None, list[Runner]]] = []
    for name in options.scenarios:
        scenario = SCENARIOS[name]
        jobs = options.jobs if options.jobs is not None else scenario.default_jobs
        plan.append(
            (
                name,
                jobs if scenario.default_jobs is not None else None,
                scenario.runners(jobs or 0, peers),
            )
        )
    progress = Progress(options.progress, sum(len(r) * options.repeat for _, _, r in plan))
    for line in format_machine(machine):
        progress.line(line)
    for note in notes:
        progress.line(f"note: {note}")

    series: dict[tuple[str, str, str, str], Series] = {}
    scenario_reports: list[dict[str, Any]] = []
    workdir = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    keep_workdir = False
    try:
        ctx = Context(server=server, workdir=workdir)
        for name, jobs, runners in plan:
            scenario = SCENARIOS[name]
            runs: list[dict[str, Any]] = []
            failures: list[dict[str, Any]] = []
            progress.line(f"== {scenario.title}" + (f" (N = {jobs:,})" if jobs else ""))
            # Interleaved: A B C, A B C, ... never A A A, B B B.
            for repeat in range(1, options.repeat + 1):
                for runner in runners:
                    progress.begin(f"{name} | {runner.label} | repeat {repeat}/{options.repeat}")
                    t0 = time.monotonic()
                    try:
                        result = runner.run(ctx)
                    except Exception as error:  # one failed run does not end the benchmark
                        keep_workdir = True
                        message = f"{type(error).__name__}: {error}".strip()
                        progress.end(f"FAILED: {message.splitlines()[0]}")
                        failures.append(
                            {
                                "runner": runner.label,
                                "repeat": repeat,
                                "error": message,
                                "traceback": traceback.format_exc(),
                            }
                        )
                        continue
                    progress.end(f"{result.summary} ({time.monotonic() - t0:.1f} s)")
                    for m in result.measurements:
                        key = (name, m.system, m.variant, m.metric)
                        if key not in series:
                            series[key] = Series(
                                name, m.system, m.variant, m.metric, m.unit, m.higher_is_better
                            )
                        series[key].samples.append(m.value)
                    run: dict[str, Any] = {
                        "runner": runner.label,
                        "system": runner.system,
                        "variant": runner.variant,
                        "repeat": repeat,
                        "details": result.details,
                    }
                    if result.latencies_ms is not None:
                        run["latencies_ms"] = [round(v, 4) for v in result.latencies_ms]
                    runs.append(run)
            scenario_reports.append(
                {
                    "name": name,
                    "title": scenario.title,
                    "description": scenario.description,
                    "jobs": jobs,
                    "results": [s.as_json() for s in series.values() if s.scenario == name],
                    "runs": runs,
                    "failures": failures,
                }
            )
    finally:
        server.close()
        if keep_workdir:
            progress.line(f"worker logs of the failed runs are kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    with contextlib.suppress(OSError):
        machine["load_average_at_end"] = os.getloadavg()
    all_series = list(series.values())
    goals = evaluate_goals(all_series, ADVISORY_LOOP_VARIANT, DRAIN_TUNED_VARIANT)
    report: dict[str, Any] = {
        "format": JSON_FORMAT,
        "started_at": started.isoformat(timespec="seconds"),
        "duration_seconds": time.monotonic() - t_start,
        "command": options.command(),
        "options": {
            "scenarios": options.scenarios,
            "jobs": options.jobs,
            "repeat": options.repeat,
            "compare": options.compare,
        },
        "machine": machine,
        "systems": systems,
        "notes": notes,
        "scenarios": scenario_reports,
        "goals": [g.as_json() for g in goals],
    }
    text = format_report(report, all_series, goals)
    if options.plot_dir is not None:
        from .plot import write_plots

        report["plots"] = [str(p) for p in write_plots(report, options.plot_dir)]
    if options.json_path is not None:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        options.json_path.write_text(
            json.dumps(clean_json(report), indent=1, allow_nan=False) + "\n"
        )
    return report, text


def clean_json(value: Any) -> Any:
    """``value`` with NaN and infinities as None and paths and times as strings."""
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(v) for v in value]
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value
