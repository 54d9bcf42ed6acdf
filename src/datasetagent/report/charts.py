"""Charts as small hand-written inline SVG: nothing to install, nothing loaded from anywhere.

Each chart is a ``<figure>`` holding the SVG (``role="img"``, with a ``<title>``) and, as its
text alternative, a table of the numbers it draws. Every piece of text is escaped (``esc``).
Bars, histograms with threshold lines, and stacked bars are all the report needs; a plotting
library would add tens of MB to the install and seconds to the render for the same pictures.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from datasetagent.export.attribution import one_line

WIDTH = 640
#: Colours that read apart for most colour-blind readers (Okabe–Ito), and the threshold's.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#999")
BAR = PALETTE[0]
MARK = "#d55e00"
_LABEL_CHARS = 24


def esc(text: object) -> str:
    """``text`` as HTML text or attribute value: one line, shown as it reads, escaped."""
    return html.escape(one_line(str(text)), quote=True)


def number(value: float) -> str:
    """A number as a reader wants it: integers whole, the rest with 3 significant digits."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.3g}"


def _short(label: str) -> str:
    return label if len(label) <= _LABEL_CHARS else label[: _LABEL_CHARS - 1] + "…"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], *, raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (cells then are HTML already)."""
    cell = (lambda c: str(c)) if raw else esc
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass(frozen=True)
class Chart:
    """A drawn chart and the table of its numbers."""

    title: str
    svg: str
    numbers: str

    def html(self) -> str:
        return (
            f'<figure class="chart">{self.svg}<figcaption>{esc(self.title)}</figcaption>'
            f"<details><summary>numbers</summary>{self.numbers}</details></figure>"
        )


def _svg(title: str, height: float, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{WIDTH}" '
        f'height="{height:.0f}" viewBox="0 0 {WIDTH} {height:.0f}"><title>{esc(title)}</title>'
        f"{body}</svg>"
    )


def bars(
    title: str,
    rows: Sequence[tuple[str, float]],
    *,
    target: float | None = None,
    unit: str = "",
    header: tuple[str, str] = ("", "value"),
    shown: Callable[[float], str] = number,
) -> Chart:
    """Horizontal bars, one per row, with an optional target line across them; ``shown``
    writes each value."""
    label_w, value_w, row_h = 170, 70, 18
    plot = WIDTH - label_w - value_w
    top = max([*(v for _, v in rows), target or 0.0, 1e-12])
    parts = []
    for i, (label, value) in enumerate(rows):
        y = i * row_h + 4
        w = plot * value / top if value > 0 else 0.0
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end" font-size="12">'
            f"<title>{esc(label)}</title>{esc(_short(label))}</text>"
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row_h - 5}" fill="{BAR}"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + 12}" font-size="11">'
            f"{esc(shown(value))}{esc(unit)}</text>"
        )
    height = len(rows) * row_h + 8
    if target is not None:
        x = label_w + plot * target / top
        parts.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="{MARK}" '
            f'stroke-width="2" stroke-dasharray="4 3"><title>target {esc(shown(target))}'
            "</title></line>"
        )
    numbers = table(
        header if target is None else (*header, "target"),
        [(label, shown(v), *(() if target is None else (shown(target),))) for label, v in rows],
    )
    return Chart(title, _svg(title, height, "".join(parts)), numbers)


@dataclass(frozen=True)
class Bins:
    """Counts of values in equal bins from ``lo`` to ``hi``; the last bin also holds the
    values above ``hi`` (``over`` of them)."""

    lo: float
    hi: float
    counts: tuple[int, ...]
    over: int = 0

    @classmethod
    def of(
        cls, values: Sequence[float], marks: Sequence[float] = (), n: int = 30, clip: bool = True
    ) -> Bins:
        """Bins spanning the values and ``marks`` (thresholds to draw); with ``clip``, the top
        is the 99th percentile where a long tail would squash the rest into one bin."""
        finite = sorted(v for v in values if math.isfinite(v))
        if not finite:
            lo = min(marks, default=0.0)
            return cls(lo, max(max(marks, default=lo), lo + (abs(lo) or 1.0)), (0,) * n)
        lo = min(finite[0], *marks) if marks else finite[0]
        hi = max(finite[-1], *marks) if marks else finite[-1]
        if clip and len(finite) >= 100:
            p99 = finite[min(len(finite) - 1, math.ceil(0.99 * len(finite)))]
            top = max(p99, *marks) if marks else p99
            if hi - lo > 4 * (top - lo) > 0:
                hi = top + (top - lo) / n
        if hi <= lo:
            hi = lo + (abs(lo) or 1.0) * 0.01
        counts = [0] * n
        width = (hi - lo) / n
        over = 0
        for v in finite:
            i = int((v - lo) / width)
            if v > hi:
                over += 1
            counts[min(max(i, 0), n - 1)] += 1
        return cls(lo, hi, tuple(counts), over)

    def edges(self, i: int) -> tuple[float, float]:
        width = (self.hi - self.lo) / len(self.counts)
        return self.lo + i * width, self.lo + (i + 1) * width


def histogram(
    title: str,
    bins: Bins,
    marks: Sequence[tuple[float, str]] = (),
    *,
    axis: str = "",
) -> Chart:
    """Vertical bars of ``bins`` with a dashed line at each mark (a threshold, a target)."""
    left, right, top, bottom = 44, 12, 22, 34
    height = 200
    plot_w, plot_h = WIDTH - left - right, height - top - bottom
    n = len(bins.counts)
    peak = max(max(bins.counts), 1)
    bar_w = plot_w / n
    parts = [
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#444"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" font-size="11">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" font-size="11">0</text>',
    ]
    for i, c in enumerate(bins.counts):
        if c == 0:
            continue
        h = plot_h * c / peak
        a, b = bins.edges(i)
        parts.append(
            f'<rect x="{left + i * bar_w + 0.5:.1f}" y="{top + plot_h - h:.1f}" '
            f'width="{max(bar_w - 1, 0.5):.1f}" height="{h:.1f}" fill="{BAR}">'
            f"<title>{esc(number(a))}–{esc(number(b))}: {c}</title></rect>"
        )
    for k, (x_val, text) in enumerate(marks):
        x = left + plot_w * (x_val - bins.lo) / (bins.hi - bins.lo)
        x = min(max(x, left), left + plot_w)
        anchor = "start" if x < left + 80 else "end" if x > left + plot_w - 80 else "middle"
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{top + plot_h}" '
            f'stroke="{MARK}" stroke-width="2" stroke-dasharray="4 3"/>'
            f'<text x="{x:.1f}" y="{top - 8 + 20 * (k % 2)}" text-anchor="{anchor}" '
            'font-size="11" '
            f'fill="{MARK}">{esc(text)} {esc(number(x_val))}</text>'
        )
    ticks = [bins.lo, (bins.lo + bins.hi) / 2, bins.hi]
    for k, v in enumerate(ticks):
        anchor = ("start", "middle", "end")[k]
        parts.append(
            f'<text x="{left + plot_w * k / 2:.1f}" y="{top + plot_h + 14}" '
            f'text-anchor="{anchor}" font-size="11">{esc(number(v))}'
            f"{'+' if k == 2 and bins.over else ''}</text>"
        )
    if axis:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" '
            f'font-size="11">{esc(axis)}</text>'
        )
    rows = []
    for i, c in enumerate(bins.counts):
        a, b = bins.edges(i)
        upper = "and above" if i == n - 1 and bins.over else number(b)
        rows.append((f"{number(a)} – {upper}", c))
    marks_text = "; ".join(f"{t} {number(v)}" for v, t in marks)
    numbers = table((axis or "value", "count"), rows) + (
        f"<p>Lines: {esc(marks_text)}</p>" if marks_text else ""
    )
    return Chart(title, _svg(title, height, "".join(parts)), numbers)


def stacked(
    title: str, rows: Sequence[tuple[str, Sequence[int]]], segments: Sequence[str]
) -> Chart:
    """One horizontal bar per row split into ``segments`` (each row scaled to its own total,
    so rows of different sizes compare by share), with a legend."""
    label_w, total_w, row_h = 170, 60, 18
    plot = WIDTH - label_w - total_w
    legend_h = 20 * math.ceil(len(segments) / 5)
    parts = []
    for k, name in enumerate(segments):
        lx, ly = (k % 5) * 125, 20 * (k // 5)
        colour = PALETTE[k % len(PALETTE)]
        parts.append(
            f'<rect x="{lx}" y="{ly + 4}" width="12" height="12" fill="{colour}"/>'
            f'<text x="{lx + 16}" y="{ly + 14}" font-size="11">{esc(name)}</text>'
        )
    for i, (label, counts) in enumerate(rows):
        y = legend_h + i * row_h + 4
        total = sum(counts)
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end" font-size="12">'
            f"<title>{esc(label)}</title>{esc(_short(label))}</text>"
        )
        x = float(label_w)
        for k, c in enumerate(counts):
            if c == 0:
                continue
            w = plot * c / total
            parts.append(
                f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{row_h - 5}" '
                f'fill="{PALETTE[k % len(PALETTE)]}"><title>{esc(label)} {esc(segments[k])}: '
                f"{c}</title></rect>"
            )
            x += w
        parts.append(f'<text x="{label_w + plot + 4}" y="{y + 12}" font-size="11">{total}</text>')
    height = legend_h + len(rows) * row_h + 8
    numbers = table(("", *segments, "total"), [(lb, *cs, sum(cs)) for lb, cs in rows])
    return Chart(title, _svg(title, height, "".join(parts)), numbers)
