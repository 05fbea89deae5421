"""``stagewise dashboard``'s page: an environment's CloudWatch dashboard, with its data, as one HTML file.

``collect_preview`` builds the body the Pulumi stack deploys (``monitoring.dashboard``) and reads each
metric widget's series from the environment's account over the last hours; ``write_preview`` renders
it to ``dashboard-<env>.html``. The work is done by three modules:

* ``preview_metrics``: ``GetMetricData`` collection; on real AWS every row, ``SEARCH`` and ``SORT``
  included, goes to CloudWatch as the dashboard writes it (``fetch_widget``);
* ``preview_search``: ``SEARCH`` and ``SORT`` evaluated locally from ``ListMetrics``, for the
  embedded AWS only (moto evaluates neither);
* ``preview_render``: the page, its grid and its inline SVG charts.

``resolve_widget`` picks the path by target: ``embedded`` comes from the connection
(``Environment.embedded``, i.e. ``AwsTarget.embedded``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from stagewise.monitoring.dashboard import dashboard_body
from stagewise.monitoring.preview_metrics import PreviewError, Series, expand_rows, fetch_widget
from stagewise.monitoring.preview_render import render_html
from stagewise.monitoring.preview_search import parse_search, resolve_widget_locally

__all__ = ["DashboardPreview", "build_preview", "collect_preview", "resolve_widget", "write_preview"]


def resolve_widget(cloudwatch: Any, widget: dict[str, Any], start: datetime, end: datetime, *,
                   embedded: bool = True) -> list[Series]:
    """The series a widget shows between ``start`` and ``end``, in row order.

    Args:
        cloudwatch: a boto3 ``cloudwatch`` client in the widget's account and region.
        widget: one entry of a dashboard body's ``widgets``; other than ``metric`` widgets give ``[]``.
        start, end: the time window (aware datetimes); it is widened to the period boundaries.
        embedded: True when ``cloudwatch`` talks to the embedded AWS: ``SEARCH`` and ``SORT`` are
            evaluated here (``preview_search``). False for real AWS: every expression is sent to
            ``GetMetricData`` unchanged and CloudWatch evaluates it (``preview_metrics``).

    Returns:
        One ``Series`` per plain metric row, per visible math row and per search match.
        A series without datapoints has empty lists.

    Raises:
        PreviewError: the widget uses something the preview does not evaluate.
        botocore.exceptions.ClientError: ListMetrics or GetMetricData failed.
    """
    if embedded:
        return resolve_widget_locally(cloudwatch, widget, start, end)
    return fetch_widget(cloudwatch, widget, start, end)


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
    embedded = bool(env_conn.embedded)  # AwsTarget.embedded: the embedded AWS, not an account
    for i, widget in enumerate(body.get("widgets", [])):
        try:
            series = resolve_widget(cloudwatch, widget, start, end, embedded=embedded)
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

