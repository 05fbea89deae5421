"""A local preview of an environment's CloudWatch dashboard: one self-contained HTML page.

The page is drawn from the same body the Pulumi stack deploys (``monitoring.dashboard``) and the
CloudWatch data of the environment's account (the embedded AWS, or real AWS with ``--aws``):

* ``resolve_widget`` turns a metric widget into ``Series``. Plain metric rows and metric-math rows
  go to ``GetMetricData`` as they are. ``SEARCH`` expressions are evaluated here, because moto's
  CloudWatch does not evaluate them (its ``GetMetricData`` only answers ``MetricStat`` queries and
  math that names another query's id): the schema ``{Namespace,Dim1,Dim2}`` and the search terms
  select metrics from ``ListMetrics`` (paginated), a metric matching only if its dimension names
  are exactly the schema's; each match becomes a ``MetricStat`` query with the expression's
  statistic and period, sent in batches of ``MAX_QUERIES_PER_CALL``. ``SORT(SEARCH(...), FN,
  ORDER[, N])`` is applied to the fetched series. One path for both targets, so the preview shows
  the same series on a laptop as in the account.
* ``render_html`` lays the widgets out on the dashboard's 24-column grid and draws each metric
  widget as an inline SVG chart (lines, or bars when every series has a single datapoint). The
  page loads nothing: no script, font, stylesheet or image from anywhere, and a
  Content-Security-Policy that forbids them.

Search syntax evaluated (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/search-expression-syntax.html):
an optional schema ``{Namespace,Dim,...}`` (names may be double-quoted), then terms joined by
spaces or ``AND``: ``Name="value"`` (exact match of a dimension, ``MetricName`` or ``Namespace``),
``Name=value`` (partial match: a token of the value), ``"phrase"`` (exact match of any property) and
bare words (a token of any property). ``OR``, ``NOT`` and parentheses raise ``PreviewError``, and so
does metric math over a search. A search returns at most ``MAX_SEARCH_RESULTS`` series, as in
CloudWatch.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from botocore.exceptions import ClientError

from stagewise.monitoring.dashboard import GRID_WIDTH, dashboard_body

MAX_QUERIES_PER_CALL = 500  # GetMetricData: at most 500 MetricDataQuery structures per call
MAX_SEARCH_RESULTS = 500  # a SEARCH expression returns at most 500 time series
DEFAULT_PERIOD = 300  # CloudWatch graphs' default period when a widget names none
DEFAULT_STAT = "Average"

# CloudWatch's graph palette (the Category10 colours), assigned in series order
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


class PreviewError(ValueError):
    """A widget uses something the preview cannot evaluate (the message says what)."""


@dataclass
class Series:
    """One time series of a widget, timestamps ascending (UTC)."""

    label: str
    timestamps: list[datetime]
    values: list[float]
    color: str | None = None  # the dashboard's colour for this series, if it names one


# ------------------------------------------------------------------------------ SEARCH parsing
@dataclass(frozen=True)
class SearchQuery:
    """A parsed ``SEARCH`` (optionally wrapped in ``SORT``).

    Attributes:
        namespace: the schema's namespace, or None for a search without schema.
        dimensions: the schema's dimension names (a match has exactly these).
        exact: ``Name="value"`` terms (dimension names, ``MetricName``, ``Namespace``).
        partial: ``Name=value`` terms (the value must be a token of the property).
        phrases: bare ``"phrase"`` terms (exact value of any property).
        words: bare words (a token of any property).
        stat, period: what to fetch for each match (period None: the widget's).
        sort: ``(function, order, limit)`` of an enclosing ``SORT``, or None.
    """

    namespace: str | None
    dimensions: tuple[str, ...]
    exact: tuple[tuple[str, str], ...]
    partial: tuple[tuple[str, str], ...] = ()
    phrases: tuple[str, ...] = ()
    words: tuple[str, ...] = ()
    stat: str = DEFAULT_STAT
    period: int | None = None
    sort: tuple[str, str, int | None] | None = None


_SEARCH_CALL = re.compile(r"SEARCH\(\s*'((?:[^'\\]|\\.)*)'\s*,\s*'([^']+)'\s*(?:,\s*(\d+)\s*)?\)", re.S)
_SORT_CALL = re.compile(r"SORT\(\s*(SEARCH\(.*\))\s*,\s*([A-Za-z]+)\s*,\s*([A-Za-z]+)\s*(?:,\s*(\d+)\s*)?\)", re.S)
_SORT_FUNCTIONS = ("AVG", "COUNT", "MAX", "MIN", "SUM")
_NAME = r"[A-Za-z_][\w.:/-]*"
_QUOTED = r'"((?:[^"\\]|\\.)*)"'
_TERMS = (
    ("exact", re.compile(rf"({_NAME})\s*=\s*{_QUOTED}")),
    ("partial", re.compile(rf"({_NAME})\s*=\s*([^\s\"()]+)")),
    ("phrase", re.compile(_QUOTED)),
    ("word", re.compile(r"([^\s\"()=]+)")),
)


def parse_search(expression: str) -> SearchQuery | None:
    """Parse ``SEARCH(...)`` or ``SORT(SEARCH(...), FN, ORDER[, N])``.

    Returns:
        The query, or None when the expression is not a search (plain metric math).

    Raises:
        PreviewError: the expression uses a search in a way this preview does not evaluate, or a
            search term it does not support.
    """
    text = expression.strip()
    sort = None
    if (outer := _SORT_CALL.fullmatch(text)) is not None:
        fn, order = outer.group(2).upper(), outer.group(3).upper()
        if fn not in _SORT_FUNCTIONS:
            raise PreviewError(f"SORT by {outer.group(2)} is not evaluated by the preview (it does {', '.join(_SORT_FUNCTIONS)})")
        if order not in ("ASC", "DESC"):
            raise PreviewError(f"SORT order must be ASC or DESC, got {outer.group(3)!r}")
        sort = (fn, order, int(outer.group(4)) if outer.group(4) else None)
        text = outer.group(1).strip()
    call = _SEARCH_CALL.fullmatch(text)
    if call is None:
        if "SEARCH(" in expression.upper():
            raise PreviewError(f"unsupported use of SEARCH: {expression!r} (the preview evaluates SEARCH(...) "
                               "and SORT(SEARCH(...), FN, ASC|DESC[, N]))")
        return None
    query = call.group(1).replace("\\'", "'")  # the search string's own escape; \" stays for the terms
    namespace, dims, rest = _schema(query)
    exact: list[tuple[str, str]] = []
    partial: list[tuple[str, str]] = []
    phrases: list[str] = []
    words: list[str] = []
    pos = 0
    while pos < len(rest):
        if rest[pos].isspace():
            pos += 1
            continue
        keyword = re.match(r"(AND|OR|NOT)\b", rest[pos:])
        if keyword and keyword.group(1) == "AND":
            pos += 3
            continue
        if keyword or rest[pos] in "()":
            raise PreviewError(f"search operator {(keyword.group(1) if keyword else rest[pos])!r} in {expression!r} is not "
                               "evaluated by the preview (terms are ANDed: Name=\"value\", Name=value, \"phrase\", word)")
        for kind, pattern in _TERMS:
            m = pattern.match(rest, pos)
            if m:
                if kind == "exact":
                    exact.append((m.group(1), m.group(2).replace('\\"', '"')))
                elif kind == "partial":
                    partial.append((m.group(1), m.group(2)))
                elif kind == "phrase":
                    phrases.append(m.group(1).replace('\\"', '"'))
                else:
                    words.append(m.group(1))
                pos = m.end()
                break
        else:
            raise PreviewError(f"cannot parse the search term at {rest[pos:pos + 40]!r} in {expression!r}")
    return SearchQuery(namespace, dims, tuple(exact), tuple(partial), tuple(phrases), tuple(words),
                       call.group(2), int(call.group(3)) if call.group(3) else None, sort)


def _schema(query: str) -> tuple[str | None, tuple[str, ...], str]:
    m = re.match(r"\s*\{([^}]*)\}", query)
    if m is None:
        return None, (), query
    names = [n.strip() for n in re.findall(r'\s*("(?:[^"\\]|\\.)*"|[^,]+)\s*(?:,|$)', m.group(1))]
    names = [n[1:-1] if len(n) >= 2 and n[0] == n[-1] == '"' else n for n in names]
    if not names or not names[0]:
        raise PreviewError(f"empty search schema in {query!r}")
    return names[0], tuple(names[1:]), query[m.end():]


def _tokens(value: str) -> set[str]:
    """CloudWatch's partial-match tokens of a value: the value, its parts split at punctuation,
    and the camel-case words of each part (``CPUUtilization`` -> cpu, utilization)."""
    out = {value.lower()}
    for part in re.split(r"[^A-Za-z0-9]+", value):
        if part:
            out.add(part.lower())
            out.update(w.lower() for w in re.findall(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+", part))
    return out


def _properties(metric: dict[str, Any]) -> dict[str, str]:
    return {"Namespace": metric["Namespace"], "MetricName": metric["MetricName"],
            **{d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}}


def _matches(query: SearchQuery, metric: dict[str, Any]) -> bool:
    props = _properties(metric)
    if query.namespace is not None:
        if metric["Namespace"] != query.namespace:
            return False
        if sorted(d["Name"] for d in metric.get("Dimensions", [])) != sorted(query.dimensions):
            return False
    if any(props.get(k) != v for k, v in query.exact):
        return False
    if any(k not in props or v.lower() not in _tokens(props[k]) for k, v in query.partial):
        return False
    values = list(props.values())
    if any(p not in values for p in query.phrases):
        return False
    tokens = set().union(*(_tokens(v) for v in values), *(_tokens(k) for k in props if k not in ("Namespace", "MetricName")))
    return all(w.lower() in tokens for w in query.words)


def search_metrics(cloudwatch: Any, query: SearchQuery) -> list[dict[str, Any]]:
    """Every metric the search selects (``ListMetrics`` entries, all pages, duplicates removed).

    ``ListMetrics`` is narrowed by the namespace, metric name and exact dimension terms; the rest
    of the search (exact dimension set, partial terms) is applied to what it returns.
    """
    exact = dict(query.exact)
    special = ("Namespace", "MetricName")
    if query.namespace is not None and any(k not in special and k not in query.dimensions for k in exact):
        return []  # a term on a dimension outside the schema: no metric can have it
    kwargs: dict[str, Any] = {}
    if query.namespace or "Namespace" in exact:
        kwargs["Namespace"] = query.namespace or exact["Namespace"]
    if "MetricName" in exact:
        kwargs["MetricName"] = exact["MetricName"]
    dims = [{"Name": k, "Value": v} for k, v in query.exact if k not in special]
    if dims:
        kwargs["Dimensions"] = dims[:10]  # ListMetrics takes at most 10 dimension filters
    found: dict[tuple[Any, ...], dict[str, Any]] = {}
    for page in cloudwatch.get_paginator("list_metrics").paginate(**kwargs):
        for metric in page.get("Metrics", []):
            if _matches(query, metric):
                key = (metric["Namespace"], metric["MetricName"],
                       tuple(sorted((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))))
                found.setdefault(key, metric)
    return list(found.values())


def search_labels(query: SearchQuery, metrics: Sequence[dict[str, Any]]) -> list[str]:
    """Legend labels of a search's matches: ``Name=value`` for the properties whose values differ
    between matches (``Version=1``, ``Version=2``); for a single match, every property the search
    did not pin (``Model=engagement Version=2``). Metric names and namespaces are shown bare."""
    props = [_properties(m) for m in metrics]
    dims = list(query.dimensions) if query.namespace is not None else sorted({k for p in props for k in p} - {"Namespace", "MetricName"})
    keys = ["Namespace", "MetricName", *dims]
    pinned = {k for k, _ in query.exact} | ({"Namespace"} if query.namespace is not None else set())
    free = [k for k in keys if k not in pinned]
    differing = [k for k in free if len({p.get(k) for p in props}) > 1]
    use = differing or [k for k in free if k not in ("Namespace", "MetricName")] or free
    labels = []
    for p in props:
        parts = [p[k] if k in ("Namespace", "MetricName") else f"{k}={p[k]}" for k in use if k in p]
        labels.append(" ".join(parts) or p["MetricName"])
    return labels


def _natural(label: str) -> list[Any]:
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", label) if t]


def _sort_value(series: Series, fn: str) -> float | None:
    if not series.values:
        return None
    return {"AVG": lambda v: sum(v) / len(v), "COUNT": len, "MAX": max, "MIN": min, "SUM": sum}[fn](series.values)


def sort_series(series: list[Series], fn: str, order: str, limit: int | None) -> list[Series]:
    """CloudWatch's ``SORT``: by ``fn`` of each series' values, ``ASC`` or ``DESC``, first ``limit``.
    Series without datapoints go last."""
    with_values = [s for s in series if s.values]
    ranked = sorted(with_values, key=lambda s: _sort_value(s, fn) or 0.0, reverse=(order == "DESC"))
    ranked += [s for s in series if not s.values]
    return ranked[:limit] if limit is not None else ranked


# ------------------------------------------------------------------------------ fetching
def _align(start: datetime, end: datetime, period: int) -> tuple[datetime, datetime]:
    """Start and end on period boundaries (CloudWatch's datapoints sit on them; moto's buckets
    start at StartTime, so aligning makes both return the same timestamps)."""
    s = math.floor(start.timestamp() / period) * period
    e = max(math.ceil(end.timestamp() / period) * period, s + period)
    return datetime.fromtimestamp(s, timezone.utc), datetime.fromtimestamp(e, timezone.utc)


def get_metric_data(cloudwatch: Any, queries: list[dict[str, Any]], start: datetime, end: datetime,
                    period: int) -> dict[str, tuple[list[datetime], list[float]]]:
    """One ``GetMetricData`` request (all pages) for at most ``MAX_QUERIES_PER_CALL`` queries.

    Returns:
        ``{query id: (timestamps, values)}`` ascending, non-numeric values dropped.
    """
    if len(queries) > MAX_QUERIES_PER_CALL:
        raise PreviewError(f"{len(queries)} queries in one GetMetricData request; the limit is {MAX_QUERIES_PER_CALL}")
    start, end = _align(start, end, period)
    points: dict[str, dict[datetime, float]] = {q["Id"]: {} for q in queries if q.get("ReturnData", True)}
    pages = cloudwatch.get_paginator("get_metric_data").paginate(
        MetricDataQueries=queries, StartTime=start, EndTime=end, ScanBy="TimestampAscending")
    for page in pages:
        for result in page.get("MetricDataResults", []):
            bucket = points.setdefault(result["Id"], {})
            for t, v in zip(result.get("Timestamps", []), result.get("Values", [])):
                if isinstance(v, (int, float)) and math.isfinite(v):
                    bucket[t.astimezone(timezone.utc)] = float(v)
    return {qid: (sorted(p), [p[t] for t in sorted(p)]) for qid, p in points.items()}


def _batched(cloudwatch: Any, queries: list[tuple[dict[str, Any], int]], start: datetime,
             end: datetime) -> dict[str, tuple[list[datetime], list[float]]]:
    """Independent ``MetricStat`` queries, grouped by period and sent ``MAX_QUERIES_PER_CALL`` at a time."""
    out: dict[str, tuple[list[datetime], list[float]]] = {}
    by_period: dict[int, list[dict[str, Any]]] = {}
    for q, period in queries:
        by_period.setdefault(period, []).append(q)
    for period, group in by_period.items():
        for i in range(0, len(group), MAX_QUERIES_PER_CALL):
            out.update(get_metric_data(cloudwatch, group[i:i + MAX_QUERIES_PER_CALL], start, end, period))
    return out


def expand_rows(rows: Iterable[Sequence[Any]]) -> list[tuple[list[Any], dict[str, Any]]]:
    """A widget's ``metrics`` rows as ``(items, options)``, with the dashboard shorthands
    ``"..."`` (repeat the previous row's leading items) and ``"."`` (repeat the item above)."""
    out: list[tuple[list[Any], dict[str, Any]]] = []
    prev: list[Any] = []
    for row in rows:
        row = list(row)
        opts = row.pop() if row and isinstance(row[-1], dict) else {}
        if row and row[0] == "...":
            rest = row[1:]
            row = prev[: max(0, len(prev) - len(rest))] + rest
        row = [prev[i] if v == "." and i < len(prev) else v for i, v in enumerate(row)]
        if row:
            prev = row
        out.append((row, dict(opts)))
    return out


_ID = re.compile(r"^[a-z][a-zA-Z0-9_]*$")


def resolve_widget(cloudwatch: Any, widget: dict[str, Any], start: datetime, end: datetime) -> list[Series]:
    """The series a widget shows between ``start`` and ``end``, in row order.

    Args:
        cloudwatch: a boto3 ``cloudwatch`` client in the widget's account and region.
        widget: one entry of a dashboard body's ``widgets``; other than ``metric`` widgets give ``[]``.
        start, end: the time window (aware datetimes); it is widened to the period boundaries.

    Returns:
        One ``Series`` per plain metric row, per visible math row and per search match (sorted by
        label, or as ``SORT`` orders them). A series without datapoints has empty lists.

    Raises:
        PreviewError: the widget uses an expression the preview does not evaluate.
        botocore.exceptions.ClientError: ListMetrics or GetMetricData failed.
    """
    if widget.get("type") != "metric":
        return []
    props = widget.get("properties", {})
    stat, period = props.get("stat", DEFAULT_STAT), int(props.get("period", DEFAULT_PERIOD))
    rows = expand_rows(props.get("metrics", []))
    direct: list[dict[str, Any]] = []  # plain metrics and metric math: one request, so math can refer to ids
    direct_meta: dict[str, tuple[str, str | None]] = {}
    searches: dict[int, tuple[SearchQuery, list[str], list[dict[str, Any]], str | None]] = {}
    search_ids: set[str] = set()
    order: list[tuple[str, Any]] = []
    for n, (items, opts) in enumerate(rows):
        visible = opts.get("visible", True)
        if "expression" in opts:
            qid = opts.get("id") or f"e{n}"
            query = parse_search(opts["expression"])
            if query is not None:
                search_ids.add(qid)
                if visible:
                    searches[n] = (query, [], [], opts.get("color"))
                    order.append(("search", n))
                continue
            direct.append({"Id": qid, "Expression": opts["expression"], "Label": opts.get("label", qid), "ReturnData": bool(visible)})
            direct_meta[qid] = (opts.get("label", qid), opts.get("color"))
        elif len(items) >= 2:
            qid = opts.get("id") or f"m{n}"
            dims = [{"Name": str(items[i]), "Value": str(items[i + 1])} for i in range(2, len(items) - 1, 2)]
            label = opts.get("label") or str(items[1])
            direct.append({
                "Id": qid, "ReturnData": bool(visible), "Label": label,
                "MetricStat": {"Metric": {"Namespace": str(items[0]), "MetricName": str(items[1]), "Dimensions": dims},
                               "Period": int(opts.get("period", period)), "Stat": opts.get("stat", stat)},
            })
            direct_meta[qid] = (label, opts.get("color"))
        else:
            raise PreviewError(f"metric row {n} of {props.get('title', 'a widget')!r} is neither a metric nor an expression: {items}")
        if visible:
            order.append(("direct", qid))
        if not _ID.match(qid):
            raise PreviewError(f"query id {qid!r} must start with a lower-case letter and hold only letters, digits and _")
    for q in direct:
        used = set(re.findall(r"\b[a-z][a-zA-Z0-9_]*\b", q.get("Expression", ""))) & search_ids
        if used:
            raise PreviewError(f"metric math over a SEARCH ({q['Id']} uses {', '.join(sorted(used))}) is not evaluated by the preview")

    fetched: dict[str, tuple[list[datetime], list[float]]] = {}
    if direct:
        longest = max((q["MetricStat"]["Period"] for q in direct if "MetricStat" in q), default=period)
        fetched.update(get_metric_data(cloudwatch, direct, start, end, longest))
    stat_queries: list[tuple[dict[str, Any], int]] = []
    for n, (query, labels, ids, _) in searches.items():
        matches = search_metrics(cloudwatch, query)
        labels_all = search_labels(query, matches)
        ranked = sorted(zip(labels_all, matches), key=lambda lm: _natural(lm[0]))[:MAX_SEARCH_RESULTS]
        p = query.period or period
        for j, (label, metric) in enumerate(ranked):
            qid = f"s{n}_{j}"
            labels.append(label)
            ids.append({"Id": qid})
            stat_queries.append(({"Id": qid, "Label": label, "ReturnData": True, "MetricStat": {
                "Metric": {k: metric[k] for k in ("Namespace", "MetricName", "Dimensions") if k in metric},
                "Period": p, "Stat": query.stat}}, p))
    fetched.update(_batched(cloudwatch, stat_queries, start, end))

    result: list[Series] = []
    for kind, key in order:
        if kind == "direct":
            label, color = direct_meta[key]
            ts, vs = fetched.get(key, ([], []))
            result.append(Series(label, ts, vs, color))
        else:
            query, labels, ids, color = searches[key]
            found = [Series(label, *fetched.get(i["Id"], ([], []))) for label, i in zip(labels, ids)]
            if query.sort:
                found = sort_series(found, *query.sort)
            if found and color:
                found[0].color = color  # CloudWatch gives a search's colour to its first series
            result.extend(found)
    return result


# ------------------------------------------------------------------------------ collecting
@dataclass
class DashboardPreview:
    """A dashboard body with the data of each widget, ready to render."""

    title: str
    body: dict[str, Any]
    series_by_widget: list[list[Series]]
    start: datetime
    end: datetime
    notes: dict[int, str] = field(default_factory=dict)
    subtitle: str = ""

    @property
    def charts(self) -> int:
        """Number of metric widgets (one chart each)."""
        return sum(1 for w in self.body.get("widgets", []) if w.get("type") == "metric")

    @property
    def series(self) -> int:
        """Number of series over all widgets."""
        return sum(len(s) for s in self.series_by_widget)

    @property
    def datapoints(self) -> int:
        """Number of datapoints over all series."""
        return sum(len(s.values) for ws in self.series_by_widget for s in ws)


def collect_preview(env_conn: Any, hours: float = 24, now: datetime | None = None) -> DashboardPreview:
    """The dashboard of a connected environment and its data over the last ``hours``.

    A widget that cannot be evaluated (``PreviewError``) or whose CloudWatch call fails is drawn
    with the reason instead of failing the whole page.
    """
    if hours <= 0:
        raise ValueError(f"hours must be positive, got {hours}")
    env = env_conn.settings.environment
    body = dashboard_body(env, env_conn.settings.region, env_conn.resources.state_machine_arn)
    cloudwatch = env_conn.clients.client("cloudwatch")
    end = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    start = end - timedelta(hours=hours)
    series_by_widget: list[list[Series]] = []
    notes: dict[int, str] = {}
    embedded = bool(getattr(env_conn, "embedded", False))
    for i, widget in enumerate(body.get("widgets", [])):
        try:
            series = resolve_widget(cloudwatch, widget, start, end)
        except PreviewError as e:
            series, notes[i] = [], f"not previewed: {e}"
        except ClientError as e:
            series, notes[i] = [], f"CloudWatch refused the query: {e}"
        series_by_widget.append(series)
        if embedded and i not in notes and widget.get("type") == "metric" and not any(s.values for s in series):
            rows = expand_rows(widget.get("properties", {}).get("metrics", []))
            if rows and all(items and str(items[0]).startswith("AWS/") for items, _ in rows):
                notes[i] = "AWS service metrics: the embedded AWS does not publish them (they appear in the account)"
            elif any("expression" in o and parse_search(o["expression"]) is None for _, o in rows):
                notes[i] = "metric math is evaluated by CloudWatch; the embedded AWS (moto) does not evaluate it"
    where = "embedded AWS" if embedded else "AWS"
    subtitle = (f"environment {env} · account {env_conn.settings.account_id} · {env_conn.settings.region} · {where} · "
                f"last {hours:g} h, {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC")
    return DashboardPreview(f"Stagewise {env} dashboard", body, series_by_widget, start, end, notes, subtitle)


def write_preview(preview: DashboardPreview, out_dir: Path, env: str) -> Path:
    """Write ``dashboard-<env>.html`` into ``out_dir`` (created) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"dashboard-{env}.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render_html(preview.body, preview.series_by_widget, preview.title, start=preview.start,
                               end=preview.end, notes=preview.notes, subtitle=preview.subtitle), encoding="utf-8")
    tmp.replace(path)
    return path


def build_preview(env_conn: Any, out_dir: Path, hours: float = 24) -> Path:
    """Render the environment's dashboard with its last ``hours`` of data to
    ``out_dir/dashboard-<env>.html`` and return the path."""
    return write_preview(collect_preview(env_conn, hours), out_dir, env_conn.settings.environment)


# ------------------------------------------------------------------------------ rendering
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
