"""PNG charts of a report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_plots"]

_COLORS = {
    "conveyor": "#1f77b4",
    "raw": "#7f7f7f",
    "procrastinate": "#ff7f0e",
    "pgqueuer": "#2ca02c",
}


def _results(report: dict[str, Any], scenario: str) -> list[dict[str, Any]]:
    for s in report["scenarios"]:
        if s["name"] == scenario:
            return list(s["results"])
    return []


def _runs(report: dict[str, Any], scenario: str) -> list[dict[str, Any]]:
    for s in report["scenarios"]:
        if s["name"] == scenario:
            return list(s["runs"])
    return []


def _label(result: dict[str, Any]) -> str:
    return f"{result['system']} {result['variant']}".strip()


def _subtitle(report: dict[str, Any]) -> str:
    m = report["machine"]
    version = (m["postgresql"].get("version") or "").split(" on ")[0]
    return f"{m['cores']} cores, {version}, {report['started_at'][:10]}"


def write_plots(report: dict[str, Any], folder: Path) -> list[Path]:
    """Write the charts the report has data for; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = folder / name
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    # Throughput per scenario and system: one panel per scenario, since the
    # scales differ by orders of magnitude.
    panels = [
        (name, [r for r in _results(report, name) if r["metric"] == "throughput"])
        for name in ("enqueue_single", "enqueue_bulk", "drain", "raw_ceiling")
    ]
    panels = [(n, rs) for n, rs in panels if rs]
    if panels:
        heights = [max(1.2, 0.45 * len(rs) + 0.8) for _, rs in panels]
        fig, axes = plt.subplots(
            len(panels),
            1,
            figsize=(9, sum(heights)),
            gridspec_kw={"height_ratios": heights},
            squeeze=False,
        )
        for ax, (name, rs) in zip(axes[:, 0], panels, strict=True):
            labels = [_label(r) for r in rs]
            med = [r["median"] or 0 for r in rs]
            err = [
                [(r["median"] or 0) - (r["min"] or 0) for r in rs],
                [(r["max"] or 0) - (r["median"] or 0) for r in rs],
            ]
            colors = [_COLORS.get(r["system"], "#9467bd") for r in rs]
            ax.barh(range(len(rs)), med, xerr=err, color=colors, capsize=3)
            ax.set_yticks(range(len(rs)), labels, fontsize=8)
            ax.invert_yaxis()
            ax.set_title(name, fontsize=10, loc="left")
            ax.set_xlabel("jobs/s (median, min-max)", fontsize=8)
            for i, (value, r) in enumerate(zip(med, rs, strict=True)):
                ax.text(max(value, r["max"] or 0), i, f"  {value:,.0f}", va="center", fontsize=7)
            ax.margins(x=0.22)
        fig.suptitle(f"Throughput per scenario and system ({_subtitle(report)})", fontsize=10)
        fig.tight_layout()
        save(fig, "throughput.png")

    # Throughput against the number of worker processes.
    scaling = [r for r in _results(report, "drain_scaling") if r["metric"] == "throughput"]
    if scaling:
        counts = [int(r["variant"].split()[0]) for r in scaling]
        order = sorted(range(len(scaling)), key=lambda i: counts[i])
        xs = [counts[i] for i in order]
        med = [scaling[i]["median"] or 0 for i in order]
        lo = [med[k] - (scaling[i]["min"] or 0) for k, i in enumerate(order)]
        hi = [(scaling[i]["max"] or 0) - med[k] for k, i in enumerate(order)]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.errorbar(
            xs,
            med,
            yerr=[lo, hi],
            marker="o",
            capsize=4,
            color=_COLORS["conveyor"],
            label="conveyor drain (10 threads per process)",
        )
        loop = [r for r in _results(report, "raw_ceiling") if r["variant"].startswith("advisory")]
        if loop and loop[0]["median"]:
            ax.axhline(
                loop[0]["median"],
                color=_COLORS["raw"],
                linestyle="--",
                label="bare advisory-lock loop (1 process)",
            )
        ax.set_xticks(xs)
        ax.set_xlabel("worker processes")
        ax.set_ylabel("jobs/s")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        ax.set_title(f"Drain throughput vs worker processes ({_subtitle(report)})", fontsize=10)
        save(fig, "scaling.png")

    # Latency distributions: pooled over the repeats, as CDFs.
    latency_sets: list[tuple[str, list[float]]] = []
    for scenario, suffix in (
        ("latency_idle", "idle"),
        ("latency_urgent_under_load", "urgent, under load"),
    ):
        by_system: dict[str, list[float]] = {}
        for run in _runs(report, scenario):
            by_system.setdefault(run["system"], []).extend(run.get("latencies_ms") or [])
        for system, values in by_system.items():
            if values:
                latency_sets.append((f"{system} ({suffix})", sorted(values)))
    if latency_sets:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        for label, values in latency_sets:
            n = len(values)
            ys = [(i + 1) / n for i in range(n)]
            system = label.split()[0]
            style = "--" if "urgent" in label else "-"
            ax.step(
                [max(v, 0.01) for v in values],
                ys,
                where="post",
                linestyle=style,
                color=_COLORS.get(system, "#9467bd"),
                label=f"{label}, n={n}",
            )
        ax.set_xscale("log")
        ax.set_xlabel(
            "enqueue commit -> job start (ms, log scale; at most 0.01 ms drawn at 0.01: the job "
            "started before the client saw its COMMIT return)",
            fontsize=8,
        )
        ax.set_ylabel("fraction of jobs")
        for q in (0.5, 0.99):
            ax.axhline(q, color="#cccccc", linewidth=0.8)
        ax.legend(fontsize=8, loc="upper left")
        ax.set_title(f"Latency distribution ({_subtitle(report)})", fontsize=10)
        save(fig, "latency.png")

    # Lock+destroy cost against the backlog.
    backlog = [r for r in _results(report, "backlog_scaling") if r["metric"] == "lock+destroy 100"]
    if backlog:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        med = [r["median"] or 0 for r in backlog]
        err = [
            [m - (r["min"] or 0) for m, r in zip(med, backlog, strict=True)],
            [(r["max"] or 0) - m for m, r in zip(med, backlog, strict=True)],
        ]
        ax.barh(range(len(backlog)), med, xerr=err, color=_COLORS["conveyor"], capsize=3)
        ax.set_yticks(range(len(backlog)), [r["variant"] for r in backlog], fontsize=8)
        ax.invert_yaxis()
        for i, value in enumerate(med):
            ax.text(value, i, f" {value:.2f}", va="center", fontsize=7)
        ax.margins(x=0.2)
        ax.set_xlabel("ms per lock_jobs(100) + destroy_jobs cycle (median)")
        ax.set_title(f"Backlog scaling ({_subtitle(report)})", fontsize=10)
        save(fig, "backlog.png")

    # Worker memory over a long drain.
    memory_runs = _runs(report, "worker_memory")
    if memory_runs:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for run in memory_runs:
            samples = [
                (t, s[0])
                for t, s in run["details"].get("rss_mb_samples", [])
                if s and s[0] is not None
            ]
            if samples:
                ax.plot(
                    [t for t, _ in samples],
                    [mb for _, mb in samples],
                    label=f"repeat {run['repeat']}",
                )
        ax.set_xlabel("seconds since the drain started")
        ax.set_ylabel("worker RSS (MB)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        jobs = memory_runs[0]["details"].get("jobs", 0)
        ax.set_title(
            f"Worker memory while draining {jobs:,} jobs ({_subtitle(report)})", fontsize=10
        )
        save(fig, "memory.png")

    for run in _runs(report, "soak") + _runs(report, "soak_short"):
        save(_soak_figure(plt, run["details"], _subtitle(report)), "soak.png")
        break

    return written


def _soak_figure(plt: Any, details: dict[str, Any], subtitle: str) -> Any:
    """Four panels over the soak's time: enqueue->start p50/p99, lock_jobs ms
    per call, table and index MB, dead tuples with autovacuum runs."""
    latency, samples = details["latency_per_10s"], details["samples"]
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    t = [w["t"] for w in latency]
    axes[0].plot(t, [w["p50_ms"] for w in latency], label="p50")
    axes[0].plot(t, [w["p99_ms"] for w in latency], label="p99")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("enqueue->start ms")
    axes[0].legend()
    timed = [s for s in samples if s.get("lock_ms_per_call") is not None]
    axes[1].plot([s["t"] for s in timed], [s["lock_ms_per_call"] for s in timed])
    axes[1].set_ylabel("lock_jobs ms/call")
    st = [s["t"] for s in samples]
    axes[2].plot(st, [s["table_bytes"] / 1e6 for s in samples], label="table")
    axes[2].plot(st, [s["index_bytes"] / 1e6 for s in samples], label="indexes")
    axes[2].set_ylabel("MB")
    axes[2].legend()
    axes[3].plot(st, [s["dead"] for s in samples], label="dead tuples")
    axes[3].plot(st, [s["live"] for s in samples], label="live tuples")
    runs = axes[3].twinx()
    runs.step(st, [s["autovacuums"] for s in samples], color="gray", where="post")
    runs.set_ylabel("autovacuum runs")
    axes[3].set_ylabel("tuples")
    axes[3].legend(loc="upper left")
    axes[3].set_xlabel("seconds")
    fig.suptitle(
        f"soak: {details['rate']:,.0f} jobs/s for {details['seconds']:.0f} s, "
        f"burst of {details['burst']:,} halfway ({subtitle})"
    )
    return fig
