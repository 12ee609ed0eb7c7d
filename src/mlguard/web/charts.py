"""Charts as SVG shapes computed on the server: no script in the browser, no chart library.

A chart here is only geometry and text (`Chart`); templates/macros.html draws it as inline
SVG, with Jinja2's autoescaping, so a label that came from a log line (a path, a user agent)
is text inside `<text>`, never markup. Colours come from classes in static/style.css: inline
styles would need a weaker Content-Security-Policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mlguard.explain.reasons import safe_text

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 14, 30  # room for the axes' labels
MAX_BARS = 60
MAX_BAR_WIDTH = 40.0  # one bar alone is not a wall
# Bin lengths a person reads at a glance, shortest first.
NICE_BINS_SECS = (60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
SCORE_BINS = 20
LABEL_CHARS = 48  # about the width of the label column in 11px monospace


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    css: str
    tip: str  # shown on hover (an SVG <title>)


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "start"
    css: str = "axis"


@dataclass(frozen=True)
class Rule:
    x1: float
    y1: float
    x2: float
    y2: float
    css: str


@dataclass(frozen=True)
class Chart:
    title: str
    width: int
    height: int
    rects: list[Rect] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    legend: list[tuple[str, str]] = field(default_factory=list)  # (css class, name)
    empty: str | None = None  # said instead of a chart with nothing to draw


def bin_secs(first: datetime, last: datetime, max_bins: int = MAX_BARS) -> int:
    """The shortest nice bin length that covers first..last in at most `max_bins` bars."""
    span = max((last - first).total_seconds(), 1.0)
    for secs in NICE_BINS_SECS:
        if span / secs <= max_bins:
            return secs
    return math.ceil(span / max_bins)


def bin_label(secs: int) -> str:
    if secs % 86400 == 0:
        return f"{secs // 86400} d"
    if secs % 3600 == 0:
        return f"{secs // 3600} h"
    return f"{secs // 60} min"


def _stamp(when: datetime, secs: int) -> str:
    return when.strftime("%m-%d" if secs >= 86400 else "%m-%d %H:%M")


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def time_bars(
    title: str,
    starts: list[datetime],
    secs: int,
    series: dict[str, list[int]],
    css: dict[str, str],
    *,
    stacked: bool = True,
    empty: str = "nothing in this span",
) -> Chart:
    """Bars over time: one bar per bin starting at `starts[i]`, the series stacked (or, with
    `stacked=False`, drawn over one another: e.g. errors as part of all requests)."""
    chart = Chart(title, WIDTH, HEIGHT, legend=[(css[name], name) for name in series])
    if not starts or not any(any(v) for v in series.values()):
        return Chart(title, WIDTH, HEIGHT, empty=empty)
    totals = [
        sum(v[i] for v in series.values()) if stacked else max(v[i] for v in series.values())
        for i in range(len(starts))
    ]
    top = _nice_max(max(totals))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / len(starts)
    bar_w = min(step * 0.85, MAX_BAR_WIDTH)
    for i, start in enumerate(starts):
        base = 0
        for name, values in series.items():
            value = values[i]
            if value <= 0:
                continue
            h = plot_h * value / top
            y = TOP + plot_h - plot_h * base / top - h
            tip = f"{start:%Y-%m-%d %H:%M} UTC, {bin_label(secs)}: {value:,} {name}"
            chart.rects.append(Rect(LEFT + i * step + (step - bar_w) / 2, y, bar_w, h, css[name], tip))
            if stacked:
                base += value
    _axes(chart, top, plot_w, plot_h)
    last = len(starts) - 1
    for i in sorted({0, len(starts) // 2, last}):  # the first, middle and last bins
        anchor = "start" if i == 0 else "end" if i == last else "middle"
        x = LEFT + i * step + {"start": 0.0, "middle": step / 2, "end": step}[anchor]
        chart.labels.append(Label(x, HEIGHT - 10, _stamp(starts[i], secs), anchor))
    chart.labels.append(Label(WIDTH - RIGHT, TOP - 2, f"UTC, bars of {bin_label(secs)}", "end", "note"))
    return chart


def _axes(chart: Chart, top: float, plot_w: float, plot_h: float, scale: str = "") -> None:
    chart.rules.append(Rule(LEFT, TOP + plot_h, LEFT + plot_w, TOP + plot_h, "axis"))
    chart.rules.append(Rule(LEFT, TOP, LEFT, TOP + plot_h, "axis"))
    chart.labels.append(Label(LEFT - 4, TOP + 8, f"{top:,.0f}{scale}", "end"))
    chart.labels.append(Label(LEFT - 4, TOP + plot_h, "0", "end"))


def score_histogram(
    title: str, counts: dict[str, list[int]], css: dict[str, str], alert: float, block: float
) -> Chart:
    """How many clients (or decisions) have each score, in bins of 0.05, stacked by verdict,
    with the alert and block thresholds drawn. Heights are on a log scale: the few flagged
    clients stay visible next to thousands that pass."""
    if not any(any(v) for v in counts.values()):
        return Chart(title, WIDTH, HEIGHT, empty="no scores yet")
    chart = Chart(title, WIDTH, HEIGHT, legend=[(css[name], name) for name in counts])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    totals = [sum(v[i] for v in counts.values()) for i in range(SCORE_BINS)]
    top = math.log10(max(totals) + 1)
    step = plot_w / SCORE_BINS
    for i in range(SCORE_BINS):
        base = 0
        for name, values in counts.items():
            value = values[i]
            if value <= 0:
                continue
            # The stack's height is log(total + 1); each verdict gets its share of it.
            lo, hi = math.log10(base + 1) / top, math.log10(base + value + 1) / top
            tip = f"score {i / SCORE_BINS:.2f}-{(i + 1) / SCORE_BINS:.2f}: {value:,} {name}"
            y = TOP + plot_h * (1 - hi)
            chart.rects.append(Rect(LEFT + i * step + 1, y, step - 2, plot_h * (hi - lo), css[name], tip))
            base += value
    _axes(chart, max(totals), plot_w, plot_h, " (log)")
    for threshold, name in ((alert, "alert"), (block, "block")):
        x = LEFT + plot_w * threshold
        chart.rules.append(Rule(x, TOP, x, TOP + plot_h, f"threshold {name}"))
        chart.labels.append(Label(x + 3, TOP + 10, f"{name} {threshold:g}", "start", f"threshold {name}"))
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        anchor = "start" if tick == 0 else "end" if tick == 1 else "middle"
        chart.labels.append(Label(LEFT + plot_w * tick, HEIGHT - 10, f"{tick:g}", anchor))
    return chart


def ranked_bars(title: str, items: list[tuple[str, int]], css: str, total: int) -> Chart:
    """Horizontal bars, most first, each labelled with its text (often attacker-controlled:
    control characters are shown as escapes and the template escapes the rest)."""
    if not items:
        return Chart(title, WIDTH, 40, empty="none")
    row = 22
    height = TOP + row * len(items) + 6
    chart = Chart(title, WIDTH, height)
    label_w, count_w = 330, 90
    bar_w = WIDTH - label_w - count_w - RIGHT
    most = max(n for _, n in items)
    for i, (text, n) in enumerate(items):
        y = TOP + i * row
        shown = safe_text(text, LABEL_CHARS) if text else "(none)"
        share = f"{n:,} ({100.0 * n / max(total, 1):.0f}%)"
        chart.labels.append(Label(label_w - 6, y + 14, shown, "end", "label"))
        bar = max(bar_w * n / most, 1.0)
        chart.rects.append(Rect(label_w, y + 3, bar, row - 6, css, f"{share}: {shown}"))
        chart.labels.append(Label(WIDTH - RIGHT, y + 14, share, "end"))
    return chart


def bin_starts(first: datetime, last: datetime, secs: int) -> list[datetime]:
    """The start of every bin from the one holding `first` to the one holding `last`."""
    epoch = datetime(1970, 1, 1, tzinfo=first.tzinfo)
    start = epoch + timedelta(seconds=(int((first - epoch).total_seconds()) // secs) * secs)
    count = int((last - start).total_seconds() // secs) + 1
    return [start + timedelta(seconds=secs * i) for i in range(count)]
