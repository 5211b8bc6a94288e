"""The overview's chart, drawn on the server: the geometry of an SVG bar
chart (jobs finished and errors per minute), which a template turns into
inline SVG. No JavaScript and no chart library."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["Bar", "Chart", "per_minute_chart"]

WIDTH = 720
HEIGHT = 160
LEFT = 40  # room for the y labels
BOTTOM = 20  # room for the x labels
TOP = 10


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    y: float
    height: float
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    worked: list[Bar]
    errored: list[Bar]
    y_ticks: list[tuple[float, int]]  # (y, value)
    x_labels: list[tuple[float, str]]  # (x, "HH:MM")
    baseline: float
    left: int
    total_worked: int
    total_errored: int


def _tick_step(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^k whose four steps reach value."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if 4 * step * factor >= value:
                return step * factor
        step *= 10


def per_minute_chart(points: list[tuple[datetime, int, int]]) -> Chart:
    """Two bars per minute, side by side: finished (left) and errors (right)."""
    plot_w = WIDTH - LEFT - 8
    plot_h = HEIGHT - TOP - BOTTOM
    baseline = TOP + plot_h
    step = _tick_step(max((max(w, e) for _, w, e in points), default=0))
    top = 4 * step
    slot = plot_w / max(len(points), 1)
    bar_w = max(slot / 2 - 0.5, 0.5)
    worked, errored, x_labels = [], [], []
    for i, (minute, w, e) in enumerate(points):
        x = LEFT + i * slot
        label = minute.strftime("%H:%M")
        h_w = plot_h * w / top
        h_e = plot_h * e / top
        worked.append(Bar(x, bar_w, baseline - h_w, h_w, f"{label}: {w} finished"))
        errored.append(Bar(x + bar_w, bar_w, baseline - h_e, h_e, f"{label}: {e} errors"))
        if i % 10 == 0 and i < len(points) - 5:
            x_labels.append((x, label))
        elif i == len(points) - 1:
            x_labels.append((x + slot, label))
    y_ticks = [(baseline - plot_h * k / 4, step * k) for k in range(5)]
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        worked=worked,
        errored=errored,
        y_ticks=y_ticks,
        x_labels=x_labels,
        baseline=baseline,
        left=LEFT,
        total_worked=sum(w for _, w, _ in points),
        total_errored=sum(e for _, _, e in points),
    )
