"""The dashboard's usage chart, drawn on the server as SVG geometry (no chart library, nothing fetched): credits
per local day, stacked by kind, from shared.reporting.daily_usage."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta

from shared.money import MILLICREDITS_PER_CREDIT, format_credits
from shared.reporting.daily_usage import CALLS, CARRIER_FEES, MMS, OTHER_FEES, TEXTS, DailyUsage

SERIES = ((TEXTS, "Texts", "#0b5cad"), (MMS, "MMS", "#8250df"), (CALLS, "Calls", "#1a7f37"),
          (CARRIER_FEES, "Carrier fees", "#bf8700"),
          (OTHER_FEES, "Other fees", "#57606a"))
WIDTH, HEIGHT = 640, 220
LEFT, BOTTOM, TOP = 44, 22, 8  # room for the axis labels
PERIODS = (30, 90)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass(frozen=True)
class UsageChart:
    days: int
    bars: list[Bar]
    y_ticks: list[tuple[float, str]]  # (y, credits)
    x_labels: list[tuple[float, str]]  # (x, "11-28")
    rows: list[tuple[date, dict[str, int]]]  # per day, millicredits by kind: the chart as a table
    total: int

    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: int = HEIGHT - BOTTOM
    series: tuple = SERIES


def usage_chart(usage: list[DailyUsage], *, until: date, days: int) -> UsageChart:
    """Stacked bars for the `days` local days ending `until` (every day shown, spent on or not)."""
    since = until - timedelta(days=days - 1)
    by_day: dict[date, dict[str, int]] = defaultdict(dict)
    for row in usage:
        by_day[row.day][row.kind] = by_day[row.day].get(row.kind, 0) + row.millicredits
    top = _nice_ceiling(max((sum(kinds.values()) for kinds in by_day.values()), default=0))
    plot_height, slot = HEIGHT - BOTTOM - TOP, (WIDTH - LEFT) / days
    bars, rows = [], []
    for index in range(days):
        day = since + timedelta(days=index)
        kinds = by_day.get(day, {})
        rows.append((day, kinds))
        base = HEIGHT - BOTTOM
        for kind, label, color in SERIES:
            spent = kinds.get(kind, 0)
            if spent <= 0:
                continue
            height = plot_height * spent / top
            base -= height
            bars.append(Bar(x=LEFT + index * slot + slot * 0.1, y=base, width=slot * 0.8, height=height, color=color,
                            title=f"{day.isoformat()} {label}: {format_credits(spent)} credits"))
    y_ticks = [(HEIGHT - BOTTOM - plot_height * step / 4, format_credits(top * step // 4)) for step in range(5)]
    every = max(1, days // 6)
    x_labels = [(LEFT + index * slot + slot / 2, (since + timedelta(days=index)).strftime("%m-%d"))
                for index in range(0, days, every)]
    return UsageChart(days=days, bars=bars, y_ticks=y_ticks, x_labels=x_labels, rows=rows,
                      total=sum(sum(kinds.values()) for kinds in by_day.values()))


def _nice_ceiling(millicredits: int) -> int:
    """The axis' top: 1, 2 or 5 times a power of ten credits, at least one credit."""
    scale = MILLICREDITS_PER_CREDIT
    while True:
        for step in (1, 2, 5):
            if millicredits <= step * scale:
                return step * scale
        scale *= 10
