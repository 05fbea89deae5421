"""The dashboard preview's HTML: one self-contained page from a dashboard body and its series.

``render_html`` takes a CloudWatch dashboard body (``monitoring.dashboard``) and, for each widget,
the ``Series`` collected for it, and returns the page as a string. Widgets are laid out on the
dashboard's 24-column grid; a metric widget is an inline SVG chart (lines, or bars when every series
has a single datapoint) with its legend and threshold annotations; a text widget is its Markdown.
The page loads nothing: no script, font, stylesheet or image from anywhere, and a
Content-Security-Policy that forbids them.
"""

from __future__ import annotations

import html
import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from stagewise.monitoring.dashboard import GRID_WIDTH
from stagewise.monitoring.preview_metrics import Series

# CloudWatch's graph palette (the Category10 colours), assigned in series order
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")

ROW_PX = 40  # height of one grid row
GAP_PX = 12
COL_PX = 52  # nominal column width at the page's full width (24 columns, 1,536 px)
_CHAR_PX = 6.4  # mean advance of an 11 px sans-serif glyph, for laying out tick labels

_CSS = """
*{box-sizing:border-box}
body{margin:0;background:#f2f3f3;color:#16191f;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
header{padding:14px 24px;background:#232f3e;color:#fff}
header h1{margin:0;font-size:20px;font-weight:600}
header p{margin:2px 0 0;color:#d5dbdb;font-size:13px}
main{display:grid;grid-template-columns:repeat(24,minmax(0,1fr));grid-auto-rows:{row}px;gap:{gap}px;padding:{gap}px 24px 24px;max-width:1600px;margin:0 auto}
.widget{background:#fff;border:1px solid #d5dbdb;border-radius:4px;padding:8px 12px;display:flex;flex-direction:column;min-width:0;min-height:0;overflow:hidden}
.widget h2{margin:0 0 4px;font-size:14px;line-height:1.4;font-weight:600;white-space:nowrap;overflow:hidden;text-overflow:ellipsis;flex:0 0 auto}
.widget.text{overflow:auto}
.widget.text h1{font-size:20px;margin:0 0 4px}.widget.text h2{font-size:16px}.widget.text p{margin:0 0 6px}
.widget code{background:#f2f3f3;padding:0 3px;border-radius:3px}
svg.chart{flex:1 1 auto;min-height:0;width:100%;height:100%;display:block}
svg text{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.legend{list-style:none;margin:4px 0 0;padding:0;display:flex;flex-wrap:wrap;gap:2px 14px;font-size:12px;flex:0 0 auto;max-height:38%;overflow:auto}
.legend li{display:flex;align-items:center;gap:5px;white-space:nowrap}
.legend .swatch{display:inline-block;width:14px;height:3px;border-radius:1px}
.legend .last{color:#687078}
.note{font-size:12px;color:#8a6d3b;margin:2px 0 0}
@media (max-width:900px){main{grid-template-columns:1fr;grid-auto-rows:auto}.widget{grid-column:1/-1 !important;grid-row:auto !important}.widget:not(.text){min-height:300px}}
""".replace("{row}", str(ROW_PX)).replace("{gap}", str(GAP_PX))

# the page loads nothing: inline styles only, no scripts, no fetches
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


def render_html(body: dict[str, Any], series_by_widget: Sequence[Sequence[Series]], title: str, *,
                start: datetime | None = None, end: datetime | None = None, notes: dict[int, str] | None = None,
                subtitle: str = "") -> str:
    """One self-contained HTML page showing ``body``'s widgets on its 24-column grid.

    Args:
        body: a CloudWatch dashboard body (``widgets`` with ``x``, ``y``, ``width``, ``height``).
        series_by_widget: the series of each widget, aligned with ``body["widgets"]``.
        title: page title and heading.
        start, end: the time axis of every chart (default: the span of the data).
        notes: a line of explanation per widget index (e.g. why it has no data).
        subtitle: a line under the heading.

    Returns:
        The page. Each metric widget is an ``<svg class="chart" data-widget="<index>">``.
    """
    notes = notes or {}
    widgets = body.get("widgets", [])
    if len(series_by_widget) != len(widgets):
        raise ValueError(f"{len(series_by_widget)} series lists for {len(widgets)} widgets")
    if start is None or end is None:
        stamps = [t for ws in series_by_widget for s in ws for t in s.timestamps]
        lo, hi = (min(stamps), max(stamps)) if stamps else (datetime.now(timezone.utc) - timedelta(hours=3), datetime.now(timezone.utc))
        pad = max((hi - lo) * 0.05, timedelta(minutes=30))
        start, end = start or lo - pad, end or hi + pad
    parts = []
    for i, widget in enumerate(widgets):
        parts.append(_widget_html(i, widget, list(series_by_widget[i]), start, end, notes.get(i)))
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sub = html.escape(subtitle or f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_CSP}\">"
        "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>"
        f"<header><h1>{html.escape(title)}</h1><p>{sub} · generated {generated} · times in UTC</p></header>\n"
        f"<main>\n{''.join(parts)}</main>\n</body></html>\n"
    )


def _placement(widget: dict[str, Any]) -> str:
    w = max(1, min(GRID_WIDTH, int(widget.get("width", 6))))
    h = max(1, int(widget.get("height", 6)))
    if "x" in widget and "y" in widget:
        x = max(0, min(GRID_WIDTH - w, int(widget["x"])))
        return f"grid-column:{x + 1}/span {w};grid-row:{int(widget['y']) + 1}/span {h}"
    return f"grid-column:span {w};grid-row:span {h}"


def _widget_html(index: int, widget: dict[str, Any], series: list[Series], start: datetime, end: datetime,
                 note: str | None) -> str:
    kind = widget.get("type", "metric")
    props = widget.get("properties", {})
    style = _placement(widget)
    note_html = f"<p class=\"note\">{html.escape(note)}</p>" if note else ""
    if kind == "text":
        return (f"<section class=\"widget text\" style=\"{style}\" data-widget-type=\"text\">"
                f"{_markdown(props.get('markdown', ''))}</section>\n")
    title = html.escape(str(props.get("title", "")))
    if kind != "metric":
        return (f"<section class=\"widget\" style=\"{style}\"><h2>{title or html.escape(kind)}</h2>"
                f"<p class=\"note\">{html.escape(kind)} widgets are not previewed</p></section>\n")
    colors = _colors(series)
    width = max(240, round(COL_PX * int(widget.get("width", 6)) + GAP_PX * (int(widget.get("width", 6)) - 1) - 26))
    height = max(120, ROW_PX * int(widget.get("height", 6)) + GAP_PX * (int(widget.get("height", 6)) - 1) - 86)
    y_axis = props.get("yAxis", {}).get("left", {})
    svg = _chart_svg(index, series, colors, start, end, width, height, y_axis, props.get("view", "timeSeries"),
                     props.get("annotations") or {})
    legend = "".join(
        f"<li><span class=\"swatch\" style=\"background:{c}\"></span>{html.escape(s.label)}{_last(s)}</li>"
        for s, c in zip(series, colors)
    )
    legend_html = f"<ul class=\"legend\">{legend}</ul>" if series else ""
    return (f"<section class=\"widget\" style=\"{style}\" data-widget-type=\"metric\"><h2 title=\"{title}\">{title}</h2>"
            f"{svg}{legend_html}{note_html}</section>\n")


def _last(series: Series) -> str:
    return f" <span class=\"last\">{_fmt_value(series.values[-1])}</span>" if series.values else ""


def _colors(series: Sequence[Series]) -> list[str]:
    out, k = [], 0
    for s in series:
        if s.color and re.fullmatch(r"#[0-9a-fA-F]{3,8}", s.color):
            out.append(s.color)
        else:
            out.append(PALETTE[k % len(PALETTE)])
            k += 1
    return out


def _markdown(text: str) -> str:
    """Markdown to HTML with markdown-it-py (CommonMark): raw HTML escaped, images off (the page
    loads nothing), links kept as plain anchors."""
    # imported here on purpose: markdown-it-py takes ~45 ms to import and only text widgets need it
    # (``stagewise`` imports this module at start-up through the dashboard command)
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False}).disable("image")
    return md.render(text)


# ---- numbers and ticks
def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` with about ``target`` intervals (1, 2, 2.5, 5 x 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("ticks need finite bounds")
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        if hi == 0:
            lo, hi = 0.0, 1.0
        else:
            pad = abs(hi) * 0.1
            lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if raw <= m * mag * (1 + 1e-9))
    first = math.floor(lo / step + 1e-9) * step
    last = math.ceil(hi / step - 1e-9) * step
    count = int(round((last - first) / step))
    return [round(first + i * step, 12) for i in range(count + 1)]


def tick_labels(ticks: Sequence[float]) -> list[str]:
    """Labels of evenly spaced ticks: one unit for the whole axis (k, M, G when the largest is at
    least ten of it) and just the decimals the step needs (0.25 -> 2, 0.1 -> 1, 5 -> 0)."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    top = max(abs(t) for t in ticks) if ticks else 0.0
    div, suffix = next(((d, x) for d, x in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if top >= d * 10), (1.0, ""))
    step /= div
    exp = math.floor(math.log10(step) + 1e-9)
    mantissa = round(step / 10 ** exp, 6)
    decimals = max(0, -exp) + (1 if mantissa not in (1.0, 2.0, 5.0, 10.0) and exp <= 0 else 0)
    out = []
    for t in ticks:
        v = t / div
        out.append("0" if abs(v) < step * 1e-6 else f"{v:,.{decimals}f}{suffix}")
    return out


def _fmt_value(v: float) -> str:
    """A datapoint for a label: compact (20k, 1.5M), four significant digits, at most four decimals."""
    a = abs(v)
    if a == 0:
        return "0"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e4, "k")):
        if a >= div:
            return f"{v / (div if div != 1e4 else 1e3):.3g}{suffix}"
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:.4g}"
    if a >= 1e-4:
        return f"{v:.4f}".rstrip("0").rstrip(".")
    return f"{v:.1e}"


_TIME_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400,
               14 * 86400, 30 * 86400, 91 * 86400)


def time_ticks(start: datetime, end: datetime, max_ticks: int) -> list[datetime]:
    """Tick times on round UTC boundaries (minutes, hours, days), at most ``max_ticks`` of them."""
    t0, t1 = start.timestamp(), end.timestamp()
    span = max(t1 - t0, 1.0)
    step = next((s for s in _TIME_STEPS if span / s <= max(max_ticks, 1)), _TIME_STEPS[-1])
    first = math.ceil(t0 / step) * step
    return [datetime.fromtimestamp(t, timezone.utc) for t in range(int(first), int(t1) + 1, step)]


def _fmt_time(t: datetime, span: float) -> str:
    if span > 3 * 86400 or (t.hour == 0 and t.minute == 0 and span > 6 * 3600):
        return t.strftime("%b %d").replace(" 0", " ")
    return t.strftime("%H:%M")


# ---- SVG
ANNOTATION_COLOR = "#d13212"


def _horizontal_annotations(annotations: dict[str, Any]) -> list[tuple[float, float, str, str]]:
    """``annotations.horizontal`` as ``(low, high, label, colour)``: a line (low == high) or a band
    (a pair of entries)."""
    out = []
    for item in annotations.get("horizontal", []) or []:
        pair = item if isinstance(item, list) else [item]
        values = [float(a["value"]) for a in pair if isinstance(a, dict) and isinstance(a.get("value"), (int, float))]
        if values and all(isinstance(a, dict) and a.get("visible", True) for a in pair):
            first = pair[0]
            color = first.get("color") if re.fullmatch(r"#[0-9a-fA-F]{3,8}", str(first.get("color", ""))) else ANNOTATION_COLOR
            out.append((min(values), max(values), str(first.get("label", "")), color))
    return out


def _vertical_annotations(annotations: dict[str, Any]) -> list[tuple[datetime, str, str]]:
    """``annotations.vertical`` entries with an ISO-8601 ``value`` as ``(time, label, colour)``."""
    out = []
    for item in annotations.get("vertical", []) or []:
        first = item[0] if isinstance(item, list) and item else item
        if not isinstance(first, dict) or not first.get("visible", True):
            continue
        try:
            when = datetime.fromisoformat(str(first.get("value", "")).replace("Z", "+00:00"))
        except ValueError:
            continue
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        color = first.get("color") if re.fullmatch(r"#[0-9a-fA-F]{3,8}", str(first.get("color", ""))) else ANNOTATION_COLOR
        out.append((when, str(first.get("label", "")), color))
    return out


def _chart_svg(index: int, series: list[Series], colors: list[str], start: datetime, end: datetime, width: int,
               height: int, y_axis: dict[str, Any], view: str, annotations: dict[str, Any] | None = None) -> str:
    has_data = any(s.values for s in series)
    bars = has_data and (view in ("bar", "pie", "singleValue", "gauge") or all(len(s.values) <= 1 for s in series))
    values = [v for s in series for v in (s.values[-1:] if bars else s.values)]
    marks = _horizontal_annotations(annotations or {})
    if values:
        lo, hi = min(values), max(values)
        if bars:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
    else:
        lo, hi = 0.0, 1.0
    if marks:  # a threshold stays in view, as in CloudWatch
        lo, hi = min(lo, *(a for a, _, _, _ in marks)), max(hi, *(b for _, b, _, _ in marks))
    lo = float(y_axis["min"]) if isinstance(y_axis.get("min"), (int, float)) else lo
    hi = float(y_axis["max"]) if isinstance(y_axis.get("max"), (int, float)) else hi
    ticks = nice_ticks(lo, hi, target=max(2, min(6, height // 45)))
    labels = tick_labels(ticks)
    left = 10 + max(len(s) for s in labels) * _CHAR_PX
    top, right, bottom = 12, 16, 26
    pw, ph = width - left - right, height - top - bottom
    y0, y1 = ticks[0], ticks[-1]

    def ypos(v: float) -> float:
        return top + ph - (v - y0) / (y1 - y0) * ph

    out = [f"<svg class=\"chart\" data-widget=\"{index}\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" "
           f"role=\"img\" aria-label=\"chart\">"]
    # horizontal grid and y tick labels
    for t, label in zip(ticks, labels):
        y = ypos(t)
        out.append(f"<line x1=\"{left:.1f}\" y1=\"{y:.1f}\" x2=\"{left + pw:.1f}\" y2=\"{y:.1f}\" stroke=\"#e9ebed\"/>")
        out.append(f"<text x=\"{left - 6:.1f}\" y=\"{y + 4:.1f}\" text-anchor=\"end\" font-size=\"11\" fill=\"#545b64\">{label}</text>")
    for a, b, label, color in marks:
        if not (y0 <= a <= y1 and y0 <= b <= y1):
            continue  # outside a fixed yAxis min/max
        if a == b:
            out.append(f"<line x1=\"{left:.1f}\" y1=\"{ypos(a):.1f}\" x2=\"{left + pw:.1f}\" y2=\"{ypos(a):.1f}\" "
                       f"stroke=\"{color}\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\" class=\"annotation\"/>")
        else:
            out.append(f"<rect x=\"{left:.1f}\" y=\"{ypos(b):.1f}\" width=\"{pw:.1f}\" height=\"{ypos(a) - ypos(b):.1f}\" "
                       f"fill=\"{color}\" fill-opacity=\"0.12\" class=\"annotation\"/>")
        if label:
            out.append(f"<text x=\"{left + pw - 4:.1f}\" y=\"{ypos(b) - 4:.1f}\" text-anchor=\"end\" font-size=\"11\" "
                       f"fill=\"{color}\">{html.escape(label)}</text>")
    # x axis
    axis_y = top + ph
    out.append(f"<line x1=\"{left:.1f}\" y1=\"{axis_y:.1f}\" x2=\"{left + pw:.1f}\" y2=\"{axis_y:.1f}\" stroke=\"#879596\"/>")
    out.append(f"<line x1=\"{left:.1f}\" y1=\"{top}\" x2=\"{left:.1f}\" y2=\"{axis_y:.1f}\" stroke=\"#879596\"/>")
    if bars:
        out.extend(_bars(series, colors, left, pw, axis_y, ypos, y0, y1))
    else:
        t0, t1 = start.timestamp(), end.timestamp()
        span = max(t1 - t0, 1.0)

        def xpos(t: datetime) -> float:
            return left + (t.timestamp() - t0) / span * pw

        for tick in time_ticks(start, end, max_ticks=max(2, int(pw // 90))):
            x = xpos(tick)
            out.append(f"<line x1=\"{x:.1f}\" y1=\"{axis_y:.1f}\" x2=\"{x:.1f}\" y2=\"{axis_y + 4:.1f}\" stroke=\"#879596\"/>")
            out.append(f"<text x=\"{x:.1f}\" y=\"{axis_y + 17:.1f}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#545b64\">"
                       f"{_fmt_time(tick, span)}</text>")
        for when, label, color in _vertical_annotations(annotations or {}):
            if start <= when <= end:
                x = xpos(when)
                out.append(f"<line x1=\"{x:.1f}\" y1=\"{top}\" x2=\"{x:.1f}\" y2=\"{axis_y:.1f}\" stroke=\"{color}\" "
                           f"stroke-width=\"1.5\" stroke-dasharray=\"6 4\" class=\"annotation\"/>")
                if label:
                    out.append(f"<text x=\"{x + 4:.1f}\" y=\"{top + 10}\" font-size=\"11\" fill=\"{color}\">{html.escape(label)}</text>")
        out.append(f"<clipPath id=\"clip{index}\"><rect x=\"{left:.1f}\" y=\"{top - 4}\" width=\"{pw:.1f}\" height=\"{ph + 8:.1f}\"/></clipPath>")
        out.append(f"<g clip-path=\"url(#clip{index})\">")
        for s, color in zip(series, colors):
            if not s.values:
                continue
            pts = [(xpos(t), ypos(v)) for t, v in zip(s.timestamps, s.values)]
            label = html.escape(s.label)
            if len(pts) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                out.append(f"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" stroke-linejoin=\"round\" "
                           f"points=\"{path}\"><title>{label}</title></polyline>")
            if len(pts) <= 120:
                for (x, y), t, v in zip(pts, s.timestamps, s.values):
                    out.append(f"<circle cx=\"{x:.1f}\" cy=\"{y:.1f}\" r=\"3\" fill=\"{color}\">"
                               f"<title>{label} · {t:%Y-%m-%d %H:%M} UTC · {_fmt_value(v)}</title></circle>")
        out.append("</g>")
    if not has_data:
        cx, cy = left + pw / 2, top + ph / 2
        out.append(f"<text x=\"{cx:.1f}\" y=\"{cy:.1f}\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"600\" "
                   f"fill=\"#687078\" class=\"no-data\">No data yet</text>")
        what = "no series matched" if not series else "no datapoints in this time range"
        out.append(f"<text x=\"{cx:.1f}\" y=\"{cy + 18:.1f}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#879596\">{what}</text>")
    out.append("</svg>")
    return "".join(out)


def _bars(series: list[Series], colors: list[str], left: float, pw: float, axis_y: float, ypos: Any,
          y0: float, y1: float) -> list[str]:
    """One bar per series at its latest value, the value above it, the time below the axis."""
    out: list[str] = []
    slot = pw / max(len(series), 1)
    bar = min(64.0, slot * 0.6)
    base = ypos(min(max(0.0, y0), y1))
    stamps = {s.timestamps[-1] for s in series if s.timestamps}
    for k, (s, color) in enumerate(zip(series, colors)):
        if not s.values:
            continue
        v = s.values[-1]
        cx = left + slot * (k + 0.5)
        y = ypos(v)
        top_y, h = min(y, base), max(abs(base - y), 1.0)
        when = f"{s.timestamps[-1]:%Y-%m-%d %H:%M} UTC" if s.timestamps else ""
        out.append(f"<rect x=\"{cx - bar / 2:.1f}\" y=\"{top_y:.1f}\" width=\"{bar:.1f}\" height=\"{h:.1f}\" fill=\"{color}\" rx=\"2\">"
                   f"<title>{html.escape(s.label)} · {when} · {_fmt_value(v)}</title></rect>")
        out.append(f"<text x=\"{cx:.1f}\" y=\"{top_y - 4:.1f}\" text-anchor=\"middle\" font-size=\"11\" fill=\"#16191f\">{_fmt_value(v)}</text>")
    if stamps:
        caption = (f"latest datapoint, {min(stamps):%b %d %H:%M} UTC" if len(stamps) == 1
                   else f"latest datapoints, {min(stamps):%b %d %H:%M} to {max(stamps):%b %d %H:%M} UTC")
        out.append(f"<text x=\"{left + pw / 2:.1f}\" y=\"{axis_y + 17:.1f}\" text-anchor=\"middle\" font-size=\"11\" "
                   f"fill=\"#545b64\">{caption}</text>")
    return out
