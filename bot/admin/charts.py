"""Bar charts as inline SVG, every bar a link (no script, no chart library, works offline).

`bars(columns, title)` draws one group per column: its segments stacked (counts that add up)
or side by side (`stacked=False`: figures that do not, such as p50 and p95). Each segment is
an `<a href>` to the conversations behind it, with a `<title>` tooltip giving its value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from markupsafe import Markup

# colour-blind safe (Okabe-Ito), in legend order
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
           "#000000")
WIDTH_PX = 720
HEIGHT_PX = 220
_LEFT_PX, _BOTTOM_PX, _TOP_PX = 44, 28, 10


@dataclass(frozen=True)
class Segment:
    """One bar segment: `value` (a count or a figure, >= 0) linking to `href`."""

    name: str
    value: float
    href: str


@dataclass(frozen=True)
class Column:
    """One x-axis position: its label and segments."""

    label: str
    segments: list[Segment] = field(default_factory=list)
    stacked: bool = True


def bars(columns: list[Column], title: str) -> Markup:
    """An SVG bar chart with a legend (HTML-escaped labels), `WIDTH_PX` x `HEIGHT_PX`."""
    names: list[str] = []
    for column in columns:
        for segment in column.segments:
            if segment.name not in names:
                names.append(segment.name)
    colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}
    top = max([sum(s.value for s in c.segments) if c.stacked
               else max((s.value for s in c.segments), default=0) for c in columns] or [0])
    scale_top = max(_nice(top), 4.0)  # whole-number ticks for small counts
    plot_w = WIDTH_PX - _LEFT_PX - 8
    plot_h = HEIGHT_PX - _BOTTOM_PX - _TOP_PX
    slot = plot_w / max(len(columns), 1)
    bar_w = max(slot * 0.7, 2)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
             f'width="{WIDTH_PX}" height="{HEIGHT_PX}" viewBox="0 0 {WIDTH_PX} {HEIGHT_PX}">'
             f"<title>{escape(title)}</title>"]
    for tick in range(5):  # horizontal grid and its labels
        value = scale_top * tick / 4
        y = _TOP_PX + plot_h - plot_h * tick / 4
        parts.append(f'<line x1="{_LEFT_PX}" x2="{WIDTH_PX - 8}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'stroke="#ddd"/><text x="{_LEFT_PX - 4}" y="{y + 4:.1f}" '
                     f'text-anchor="end" font-size="12">{_fmt(value)}</text>')
    every = max(1, round(len(columns) / 14))
    for i, column in enumerate(columns):
        x0 = _LEFT_PX + i * slot + (slot - bar_w) / 2
        base: float = _TOP_PX + plot_h
        width = bar_w if column.stacked else bar_w / max(len(column.segments), 1)
        for j, segment in enumerate(column.segments):
            if segment.value <= 0:
                continue
            h = plot_h * segment.value / scale_top if scale_top else 0
            x = x0 if column.stacked else x0 + j * width
            y = base - h if column.stacked else _TOP_PX + plot_h - h
            tip = f"{column.label} {segment.name}: {_fmt(segment.value)}"
            parts.append(f'<a href="{escape(segment.href)}"><rect x="{x:.1f}" y="{y:.1f}" '
                         f'width="{max(width - 1, 1):.1f}" height="{max(h, 1):.1f}" '
                         f'fill="{colour[segment.name]}"><title>{escape(tip)}</title></rect></a>')
            if column.stacked:
                base -= h
        if i % every == 0:
            parts.append(f'<text x="{x0 + bar_w / 2:.1f}" y="{HEIGHT_PX - 10}" font-size="12" '
                         f'text-anchor="middle">{escape(column.label)}</text>')
    parts.append("</svg>")
    legend = "".join(f'<span class="key"><i style="background:{colour[n]}"></i>{escape(n)}'
                     f"</span>" for n in names)
    # every text and href above went through html.escape; numbers are formatted floats
    return Markup(f'<figure><figcaption>{escape(title)}</figcaption>{"".join(parts)}'  # noqa: S704
                  f'<div class="legend">{legend}</div></figure>')


def _nice(top: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times a power of ten that is >= top (1 for nothing)."""
    if top <= 0:
        return 1.0
    power = 1.0
    while power * 10 < top:
        power *= 10
    while power > top and power > 1e-9:
        power /= 10
    for step in (1, 2, 2.5, 5, 10):
        if power * step >= top:
            return power * step
    return power * 10


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"
