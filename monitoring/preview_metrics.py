"""Metric collection for the dashboard preview: the series one metric widget shows over a time window.

Input: a widget of a dashboard body (``monitoring.dashboard``), a boto3 ``cloudwatch`` client and a
time window. Output: ``Series`` in the widget's row order, read with ``GetMetricData`` (all pages, at
most ``MAX_QUERIES_PER_CALL`` queries a request, the window widened to period boundaries).

``fetch_widget`` sends every row as the dashboard writes it: a metric row as a ``MetricStat`` query,
an expression (metric math, ``SEARCH``, ``SORT``) unchanged, for CloudWatch to evaluate. That is the
path on real AWS. On the embedded AWS, ``preview_search`` resolves the ``SEARCH`` rows itself and
uses the building blocks here (``row_query``, ``get_metric_data``, ``get_metric_stats``) for the rest.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Sequence

MAX_QUERIES_PER_CALL = 500  # GetMetricData: at most 500 MetricDataQuery structures per call
DEFAULT_PERIOD = 300  # CloudWatch graphs' default period when a widget names none
DEFAULT_STAT = "Average"

_ID = re.compile(r"^[a-z][a-zA-Z0-9_]*$")
_SEARCH = re.compile(r"\bSEARCH\s*\(", re.IGNORECASE)


class PreviewError(ValueError):
    """A widget uses something the preview cannot evaluate (the message says what)."""


@dataclass
class Series:
    """One time series of a widget, timestamps ascending (UTC)."""

    label: str
    timestamps: list[datetime]
    values: list[float]
    color: str | None = None  # the dashboard's colour for this series, if it names one


# ------------------------------------------------------------------------------ GetMetricData
def _align(start: datetime, end: datetime, period: int) -> tuple[datetime, datetime]:
    """Start and end on period boundaries (CloudWatch's datapoints sit on them; moto's buckets
    start at StartTime, so aligning makes both return the same timestamps)."""
    s = math.floor(start.timestamp() / period) * period
    e = max(math.ceil(end.timestamp() / period) * period, s + period)
    return datetime.fromtimestamp(s, timezone.utc), datetime.fromtimestamp(e, timezone.utc)


def _results(cloudwatch: Any, queries: list[dict[str, Any]], start: datetime, end: datetime,
             period: int) -> Iterator[dict[str, Any]]:
    """The ``MetricDataResults`` of one ``GetMetricData`` request, every page, in CloudWatch's order."""
    if len(queries) > MAX_QUERIES_PER_CALL:
        raise PreviewError(f"{len(queries)} queries in one GetMetricData request; the limit is {MAX_QUERIES_PER_CALL}")
    start, end = _align(start, end, period)
    pages = cloudwatch.get_paginator("get_metric_data").paginate(
        MetricDataQueries=queries, StartTime=start, EndTime=end, ScanBy="TimestampAscending")
    for page in pages:
        yield from page.get("MetricDataResults", [])


def _points(result: dict[str, Any]) -> Iterator[tuple[datetime, float]]:
    """A result's datapoints in UTC, non-numeric values dropped."""
    for t, v in zip(result.get("Timestamps", []), result.get("Values", [])):
        if isinstance(v, (int, float)) and math.isfinite(v):
            yield t.astimezone(timezone.utc), float(v)


def _ascending(points: dict[datetime, float]) -> tuple[list[datetime], list[float]]:
    stamps = sorted(points)
    return stamps, [points[t] for t in stamps]


def get_metric_data(cloudwatch: Any, queries: list[dict[str, Any]], start: datetime, end: datetime,
                    period: int) -> dict[str, tuple[list[datetime], list[float]]]:
    """One ``GetMetricData`` request (all pages) for at most ``MAX_QUERIES_PER_CALL`` queries, one
    time series per query id.

    Returns:
        ``{query id: (timestamps, values)}`` ascending, non-numeric values dropped; every query
        with ``ReturnData`` has an entry (empty lists when CloudWatch returned nothing).
    """
    points: dict[str, dict[datetime, float]] = {q["Id"]: {} for q in queries if q.get("ReturnData", True)}
    for result in _results(cloudwatch, queries, start, end, period):
        points.setdefault(result["Id"], {}).update(_points(result))
    return {qid: _ascending(p) for qid, p in points.items()}


def get_metric_results(cloudwatch: Any, queries: list[dict[str, Any]], start: datetime, end: datetime,
                       period: int) -> dict[str, list[Series]]:
    """Like ``get_metric_data``, but one ``Series`` per time series CloudWatch returns for a query
    id (a ``SEARCH`` returns one per matching metric, all under the expression's id), labelled and
    ordered as CloudWatch returns them (``SORT`` decides that order). Pages are joined by id and label.
    """
    points: dict[tuple[str, str], dict[datetime, float]] = {}
    for result in _results(cloudwatch, queries, start, end, period):
        points.setdefault((result["Id"], result.get("Label", "")), {}).update(_points(result))
    out: dict[str, list[Series]] = {}
    for (qid, label), p in points.items():
        out.setdefault(qid, []).append(Series(label, *_ascending(p)))
    return out


def get_metric_stats(cloudwatch: Any, queries: list[tuple[dict[str, Any], int]], start: datetime,
                     end: datetime) -> dict[str, tuple[list[datetime], list[float]]]:
    """Independent ``MetricStat`` queries ``(query, period)``, grouped by period and sent
    ``MAX_QUERIES_PER_CALL`` at a time; the result as ``get_metric_data``'s."""
    out: dict[str, tuple[list[datetime], list[float]]] = {}
    by_period: dict[int, list[dict[str, Any]]] = {}
    for q, period in queries:
        by_period.setdefault(period, []).append(q)
    for period, group in by_period.items():
        for i in range(0, len(group), MAX_QUERIES_PER_CALL):
            out.update(get_metric_data(cloudwatch, group[i:i + MAX_QUERIES_PER_CALL], start, end, period))
    return out


# ------------------------------------------------------------------------------ widget rows
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


def widget_defaults(widget: dict[str, Any]) -> tuple[dict[str, Any], str, int]:
    """A widget's ``properties``, its statistic and its period (CloudWatch's defaults if it names none)."""
    props = widget.get("properties", {})
    return props, props.get("stat", DEFAULT_STAT), int(props.get("period", DEFAULT_PERIOD))


def is_search(expression: str) -> bool:
    """True if an expression calls ``SEARCH`` (it may return many time series under one id)."""
    return _SEARCH.search(expression) is not None


@dataclass(frozen=True)
class RowQuery:
    """The ``MetricDataQuery`` of one widget row and how its series are shown.

    Attributes:
        query: the request entry; ``query["ReturnData"]`` is the row's visibility.
        label: the row's legend label (the widget's, else the metric name or the query id).
        color: the row's colour, if the widget names one (a search gives it to its first series).
    """

    query: dict[str, Any]
    label: str
    color: str | None

    @property
    def visible(self) -> bool:
        return bool(self.query["ReturnData"])

    @property
    def search(self) -> bool:
        """True for an expression with ``SEARCH``: one series per time series CloudWatch returns."""
        return "Expression" in self.query and is_search(self.query["Expression"])


def row_query(n: int, items: list[Any], opts: dict[str, Any], *, stat: str, period: int, title: Any) -> RowQuery:
    """Row ``n`` of a widget (``expand_rows``) as a query: a metric row as a ``MetricStat`` with the
    row's (else the widget's) statistic and period, an expression as written.

    An expression with ``SEARCH`` carries a ``Label`` only if the widget names one, so that
    CloudWatch labels each series it finds; other rows are labelled by the widget's label, else the
    metric name (metric rows) or the query id (expressions).

    Raises:
        PreviewError: the row is neither a metric nor an expression, or its id is not a valid query id.
    """
    visible = bool(opts.get("visible", True))
    if "expression" in opts:
        qid = opts.get("id") or f"e{n}"
        expression = opts["expression"]
        query: dict[str, Any] = {"Id": qid, "Expression": expression, "Label": opts.get("label", qid), "ReturnData": visible}
        if is_search(expression) and "label" not in opts:
            del query["Label"]
        label = opts.get("label", qid)
    elif len(items) >= 2:
        qid = opts.get("id") or f"m{n}"
        dims = [{"Name": str(items[i]), "Value": str(items[i + 1])} for i in range(2, len(items) - 1, 2)]
        label = opts.get("label") or str(items[1])
        query = {
            "Id": qid, "ReturnData": visible, "Label": label,
            "MetricStat": {"Metric": {"Namespace": str(items[0]), "MetricName": str(items[1]), "Dimensions": dims},
                           "Period": int(opts.get("period", period)), "Stat": opts.get("stat", stat)},
        }
    else:
        raise PreviewError(f"metric row {n} of {title!r} is neither a metric nor an expression: {items}")
    if not _ID.match(qid):
        raise PreviewError(f"query id {qid!r} must start with a lower-case letter and hold only letters, digits and _")
    return RowQuery(query, label, opts.get("color"))


def request_period(queries: Sequence[dict[str, Any]], period: int) -> int:
    """The period a widget's request is aligned to: its longest ``MetricStat`` period, else ``period``."""
    return max((q["MetricStat"]["Period"] for q in queries if "MetricStat" in q), default=period)


def fetch_widget(cloudwatch: Any, widget: dict[str, Any], start: datetime, end: datetime) -> list[Series]:
    """The series a widget shows between ``start`` and ``end``, every row sent to ``GetMetricData``
    as the dashboard writes it (one request, so math can refer to other rows' ids); CloudWatch
    evaluates metric math, ``SEARCH`` and ``SORT``.

    Args:
        cloudwatch: a boto3 ``cloudwatch`` client in the widget's account and region (real AWS).
        widget: one entry of a dashboard body's ``widgets``; other than ``metric`` widgets give ``[]``.
        start, end: the time window (aware datetimes); it is widened to the period boundaries.

    Returns:
        One ``Series`` per visible metric or math row, and per time series a visible ``SEARCH`` row
        returns (in CloudWatch's order, with its labels). A series without datapoints has empty lists.

    Raises:
        PreviewError: a row is malformed, or the widget has more than ``MAX_QUERIES_PER_CALL`` rows.
        botocore.exceptions.ClientError: GetMetricData failed (CloudWatch rejected an expression).
    """
    if widget.get("type") != "metric":
        return []
    props, stat, period = widget_defaults(widget)
    title = props.get("title", "a widget")
    rows = [row_query(n, items, opts, stat=stat, period=period, title=title)
            for n, (items, opts) in enumerate(expand_rows(props.get("metrics", [])))]
    if not rows:
        return []
    queries = [r.query for r in rows]
    fetched = get_metric_results(cloudwatch, queries, start, end, request_period(queries, period))
    out: list[Series] = []
    for row in rows:
        if not row.visible:
            continue
        found = fetched.get(row.query["Id"], [])
        if row.search:
            found = [Series(s.label or row.label, s.timestamps, s.values) for s in found]
            if found and row.color:
                found[0].color = row.color  # CloudWatch gives a search's colour to its first series
            out.extend(found)
        else:
            points = {t: v for s in found for t, v in zip(s.timestamps, s.values)}
            out.append(Series(row.label, *_ascending(points), row.color))
    return out
