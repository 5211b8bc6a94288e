"""The report: machine, summary table, goals, JSON."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .results import Series

__all__ = ["Goal", "evaluate_goals", "format_report", "machine_info"]


# --- the machine -------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except (OSError, ValueError):
        pass
    return None


def machine_info(server: dict[str, Any]) -> dict[str, Any]:
    """Cores, CPU, memory, OS, Python, load, and the PostgreSQL server."""
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_average_at_start": load,
        "postgresql": server,
    }


def format_machine(machine: dict[str, Any]) -> list[str]:
    pg = machine["postgresql"]
    settings = pg.get("settings", {})
    mem = machine.get("memory_gib")
    load = machine.get("load_average_at_start")
    end = machine.get("load_average_at_end")
    return [
        f"machine: {machine['cores']} cores ({machine['cpu']}), "
        + (f"{mem:.1f} GiB RAM, " if mem else "")
        + f"{machine['os']}, Python {machine['python']}"
        + (f", load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start" if load else "")
        + (f", {end[0]:.2f} {end[1]:.2f} {end[2]:.2f} at the end" if end else ""),
        f"server:  {pg.get('version', '?')}",
        "         "
        + ", ".join(
            f"{k}={settings.get(k)}"
            for k in (
                "shared_buffers",
                "synchronous_commit",
                "fsync",
                "full_page_writes",
                "wal_level",
                "max_connections",
                "autovacuum",
                "jit",
            )
        ),
    ]


# --- goals -------------------------------------------------------------------------------


@dataclass
class Goal:
    text: str
    met: bool | None  # None: not measured in this run
    measured: str

    def as_json(self) -> dict[str, Any]:
        return {
            "goal": self.text,
            "met": self.met,
            "measured": self.measured,
        }


Lookup = Callable[[str, str, str, str], Series | None]


def _median(series: Series | None) -> float | None:
    if series is None:
        return None
    value = series.median
    return None if math.isnan(value) else value


def evaluate_goals(series: Iterable[Series], loop_variant: str, tuned_variant: str) -> list[Goal]:
    """The goals this run's figures decide (docs/performance.md lists them)."""
    index = {s.key: s for s in series}

    def get(scenario: str, system: str, variant: str, metric: str) -> float | None:
        return _median(index.get((scenario, system, variant, metric)))

    goals: list[Goal] = []

    def add(text: str, met: bool | None, measured: str) -> None:
        goals.append(Goal(text, met, measured))

    peers = {p: get("drain", p, "", "throughput") for p in ("procrastinate", "pgqueuer")}
    peer_rates = {p: v for p, v in peers.items() if v}
    loop = get("raw_ceiling", "raw", loop_variant, "throughput")
    for variant in ("", tuned_variant):
        drain = get("drain", "conveyor", variant, "throughput")
        name = f"drain ({variant or 'default buffer sizes'}, 1 process, 10 threads)"
        add(
            f"{name} >= 25,000 jobs/s",
            None if drain is None else drain >= 25_000,
            "not run" if drain is None else f"{drain:,.0f} jobs/s",
        )
        text = f"{name} >= 5x the faster of procrastinate and PgQueuer"
        if drain is not None and peer_rates:
            best = max(peer_rates, key=lambda p: peer_rates[p])
            ratio = drain / peer_rates[best]
            add(
                text,
                ratio >= 5,
                f"{ratio:.1f}x {best} ({peer_rates[best]:,.0f} jobs/s)"
                + ("" if len(peer_rates) == 2 else " (the only peer measured)"),
            )
        else:
            add(text, None, "not run (needs drain with --compare)")
        text = f"{name} >= 70% of the bare advisory-lock loop"
        if drain is not None and loop:
            add(text, drain >= 0.7 * loop, f"{drain / loop:.0%} of {loop:,.0f} jobs/s")
        else:
            add(text, None, "not run (needs drain and raw_ceiling)")

    for scenario, what in (
        ("enqueue_single", "single-row enqueue"),
        ("enqueue_bulk", "bulk enqueue (batches of 1,000)"),
    ):
        mine, raw = (
            get(scenario, "conveyor", "", "throughput"),
            get(scenario, "raw", "", "throughput"),
        )
        text = f"{what} within 10% of the plain INSERT"
        if mine and raw:
            slower = raw / mine - 1
            add(
                text,
                slower <= 0.10,
                f"{mine:,.0f} vs {raw:,.0f} jobs/s: {slower:+.1%} time per job",
            )
        else:
            add(text, None, f"not run (needs {scenario})")

    p50 = get("latency_idle", "conveyor", "", "p50")
    p99 = get("latency_idle", "conveyor", "", "p99")
    add(
        "latency_idle p50 <= 1 ms",
        None if p50 is None else p50 <= 1.0,
        "not run" if p50 is None else f"{p50:.2f} ms",
    )
    add(
        "latency_idle p99 <= 3 ms",
        None if p99 is None else p99 <= 3.0,
        "not run" if p99 is None else f"{p99:.2f} ms",
    )
    urgent = get("latency_urgent_under_load", "conveyor", "", "p99")
    add(
        "latency_urgent_under_load p99 <= 5 ms (default buffer)",
        None if urgent is None else urgent <= 5.0,
        "not run" if urgent is None else f"{urgent:.2f} ms",
    )

    small = get("backlog_scaling", "conveyor", "1,000 ready", "lock+destroy 100")
    for variant in ("1,000,000 ready", "1,000 ready + 1,000,000 finished"):
        large = get("backlog_scaling", "conveyor", variant, "lock+destroy 100")
        text = f"lock+destroy with {variant} within 1.5x of 1,000 ready"
        if small and large:
            add(
                text,
                large <= 1.5 * small,
                f"{large:.2f} ms vs {small:.2f} ms: {large / small:.2f}x",
            )
        else:
            add(text, None, "not run (needs backlog_scaling)")

    scaling = [
        get("drain_scaling", "conveyor", v, "throughput")
        for v in ("1 process", "2 processes", "4 processes")
    ]
    if all(scaling):
        a, b, c = (float(v) for v in scaling if v)
        add(
            "drain_scaling: more worker processes never lower throughput",
            a <= b <= c,
            f"1: {a:,.0f}, 2: {b:,.0f}, 4: {c:,.0f} jobs/s",
        )
    else:
        add(
            "drain_scaling: more worker processes never lower throughput",
            None,
            "not run (needs drain_scaling)",
        )

    split = [
        get("drain_processes", "conveyor", v, "throughput")
        for v in ("1 process x 8 threads", "2 processes x 4 threads", "4 processes x 2 threads")
    ]
    text = "drain_processes: more processes at equal threads cost <= 5 %"
    if all(split):
        one, two, four = (float(v) for v in split if v)
        add(
            text,
            min(two, four) >= 0.95 * one,
            f"1x8: {one:,.0f}, 2x4: {two:,.0f}, 4x2: {four:,.0f} jobs/s "
            f"({two / one - 1:+.1%}, {four / one - 1:+.1%})",
        )
    else:
        add(text, None, "not run (needs drain_processes)")

    peak = get("worker_memory", "conveyor", "", "RSS peak")
    growth = get("worker_memory", "conveyor", "", "RSS growth after 10%")
    add(
        "worker memory under 60 MB RSS",
        None if peak is None else peak < 60,
        "not run (needs worker_memory)" if peak is None else f"peak {peak:.1f} MB",
    )
    add(
        "worker memory flat across the drain (growth after the first 10% <= 5 MB)",
        None if growth is None else growth <= 5,
        "not run (needs worker_memory)" if growth is None else f"{growth:+.1f} MB",
    )
    return goals


# --- the text report ---------------------------------------------------------------------------


def _fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "-"
    if unit == "jobs/s":
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def format_table(series: list[Series]) -> list[str]:
    rows = [("system", "metric", "median", "min", "max", "unit")]
    for s in series:
        rows.append(
            (
                s.label,
                s.metric,
                _fmt(s.median, s.unit),
                _fmt(s.min, s.unit),
                _fmt(s.max, s.unit),
                s.unit,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            row[0].ljust(widths[0]),
            row[1].ljust(widths[1]),
            *(row[i].rjust(widths[i]) for i in (2, 3, 4)),
            row[5],
        ]
        lines.append("  " + "  ".join(cells).rstrip())
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def format_report(report: dict[str, Any], series: list[Series], goals: list[Goal]) -> str:
    out: list[str] = []
    out.append(f"conveyor bench, {report['started_at']} ({report['duration_seconds']:.0f} s)")
    out.append(f"command: {report['command']}")
    out.extend(format_machine(report["machine"]))
    out.append(
        f"repeats: {report['options']['repeat']} per figure, systems interleaved; "
        "figures are the median, min and max over the repeats"
    )
    out.append("systems:")
    for name, info in report["systems"].items():
        out.append(f"  {name} {info.get('version', '')}".rstrip())
        for key, value in info.get("config", {}).items():
            out.append(f"      {key}: {value}")
    for note in report.get("notes", []):
        out.append(f"note: {note}")
    for scenario in report["scenarios"]:
        out.append("")
        jobs = f" (N = {scenario['jobs']:,})" if scenario.get("jobs") else ""
        out.append(f"{scenario['title']}{jobs}")
        out.append(f"  {scenario['description']}")
        mine = [s for s in series if s.scenario == scenario["name"]]
        if mine:
            out.extend(format_table(mine))
        for failure in scenario.get("failures", []):
            out.append(
                f"  FAILED {failure['runner']} (repeat {failure['repeat']}): {failure['error']}"
            )
    out.append("")
    out.append("goals")
    for goal in goals:
        mark = {True: "met    ", False: "NOT MET", None: "-      "}[goal.met]
        out.append(f"  [{mark}] {goal.text}: {goal.measured}")
    return "\n".join(out) + "\n"
