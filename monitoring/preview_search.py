"""SEARCH and SORT for the embedded AWS, whose CloudWatch (moto) evaluates neither.

moto's ``GetMetricData`` only answers ``MetricStat`` queries and math that names another query's
id, so on the embedded AWS the preview resolves a widget's ``SEARCH`` rows itself:
``resolve_widget_locally`` takes a metric widget, a ``cloudwatch`` client and a time window and
returns the widget's ``Series`` as CloudWatch would. A search's schema ``{Namespace,Dim1,Dim2}`` and
terms select metrics from ``ListMetrics`` (all pages; a metric matches only if its dimension names
are exactly the schema's); each match becomes a ``MetricStat`` query with the expression's statistic
and period (sent in batches by ``preview_metrics``); ``SORT(SEARCH(...), FN, ORDER[, N])`` is applied
to the fetched series. Rows without ``SEARCH`` go to ``GetMetricData`` as they are. On real AWS none
of this runs: ``preview_metrics.fetch_widget`` sends the expressions to CloudWatch.

Search syntax evaluated (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/search-expression-syntax.html):
an optional schema ``{Namespace,Dim,...}`` (names may be double-quoted), then terms joined by
spaces or ``AND``: ``Name="value"`` (exact match of a dimension, ``MetricName`` or ``Namespace``),
``Name=value`` (partial match: a token of the value), ``"phrase"`` (exact match of any property) and
bare words (a token of any property). ``OR``, ``NOT`` and parentheses raise ``PreviewError``, and so
does metric math over a search. A search returns at most ``MAX_SEARCH_RESULTS`` series, as in
CloudWatch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from stagewise.monitoring.preview_metrics import (
    DEFAULT_STAT, PreviewError, RowQuery, Series, expand_rows, get_metric_data, get_metric_stats, request_period,
    row_query, widget_defaults,
)

MAX_SEARCH_RESULTS = 500  # a SEARCH expression returns at most 500 time series


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



# ------------------------------------------------------------------------------ a widget, resolved here
@dataclass
class _Search:
    """A visible ``SEARCH`` row of a widget: the query, then its matches' labels and query ids."""

    query: SearchQuery
    color: str | None
    labels: list[str]
    ids: list[str]


def resolve_widget_locally(cloudwatch: Any, widget: dict[str, Any], start: datetime, end: datetime) -> list[Series]:
    """The series a widget shows between ``start`` and ``end``, in row order, ``SEARCH`` and
    ``SORT`` evaluated here (the embedded AWS's CloudWatch does not).

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
    props, stat, period = widget_defaults(widget)
    title = props.get("title", "a widget")
    direct: list[RowQuery] = []  # plain metrics and metric math: one request, so math can refer to ids
    searches: dict[int, _Search] = {}
    search_ids: set[str] = set()
    order: list[tuple[str, Any]] = []
    for n, (items, opts) in enumerate(expand_rows(props.get("metrics", []))):
        query = parse_search(opts["expression"]) if "expression" in opts else None
        if query is not None:
            search_ids.add(opts.get("id") or f"e{n}")
            if opts.get("visible", True):
                searches[n] = _Search(query, opts.get("color"), [], [])
                order.append(("search", n))
            continue
        row = row_query(n, items, opts, stat=stat, period=period, title=title)
        direct.append(row)
        if row.visible:
            order.append(("direct", row))
    for row in direct:
        used = set(re.findall(r"\b[a-z][a-zA-Z0-9_]*\b", row.query.get("Expression", ""))) & search_ids
        if used:
            raise PreviewError(f"metric math over a SEARCH ({row.query['Id']} uses {', '.join(sorted(used))}) "
                               "is not evaluated by the preview")

    fetched: dict[str, tuple[list[datetime], list[float]]] = {}
    if direct:
        queries = [r.query for r in direct]
        fetched.update(get_metric_data(cloudwatch, queries, start, end, request_period(queries, period)))
    stat_queries: list[tuple[dict[str, Any], int]] = []
    for n, search in searches.items():
        matches = search_metrics(cloudwatch, search.query)
        labels_all = search_labels(search.query, matches)
        ranked = sorted(zip(labels_all, matches), key=lambda lm: _natural(lm[0]))[:MAX_SEARCH_RESULTS]
        p = search.query.period or period
        for j, (label, metric) in enumerate(ranked):
            qid = f"s{n}_{j}"
            search.labels.append(label)
            search.ids.append(qid)
            stat_queries.append(({"Id": qid, "Label": label, "ReturnData": True, "MetricStat": {
                "Metric": {k: metric[k] for k in ("Namespace", "MetricName", "Dimensions") if k in metric},
                "Period": p, "Stat": search.query.stat}}, p))
    fetched.update(get_metric_stats(cloudwatch, stat_queries, start, end))

    result: list[Series] = []
    for kind, key in order:
        if kind == "direct":
            result.append(Series(key.label, *fetched.get(key.query["Id"], ([], [])), key.color))
        else:
            search = searches[key]
            found = [Series(label, *fetched.get(qid, ([], []))) for label, qid in zip(search.labels, search.ids)]
            if search.query.sort:
                found = sort_series(found, *search.query.sort)
            if found and search.color:
                found[0].color = search.color  # CloudWatch gives a search's colour to its first series
            result.extend(found)
    return result
