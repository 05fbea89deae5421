"""`stagewise dashboard`: the dev dashboard with the data of a real pipeline run, in headless Chromium.

A `stagewise run` on 20,000 customers publishes its metrics to the embedded AWS (under this module's
own model name, ``engagement-dashboard``, so the ``engagement`` runs of other modules are untouched
and whichever runs first, the assertions hold). Then: SEARCH resolution finds the run's series
(moto does not evaluate SEARCH; the preview does), SORT ranks them, ListMetrics and GetMetricData
are paginated and batched, and the page written by the command loads in Debian's Chromium with no
console error, one chart per metric widget and nothing fetched from anywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from conftest import REPO, engagement_spec
from stagewise.monitoring import metrics as m
from stagewise.monitoring.cli import dashboard_command
from stagewise.monitoring.dashboard import dashboard_body
from stagewise.monitoring.preview import resolve_widget
from stagewise.monitoring.preview_metrics import PreviewError, Series
from stagewise.monitoring.preview_render import render_html
from stagewise.monitoring.preview_search import MAX_SEARCH_RESULTS, parse_search, search_metrics
from stagewise.pipeline.cli import app as stagewise_app
from stagewise.pipeline.generator import generate_customers, write_dataset

MODEL = "engagement-dashboard"
ROWS = 20_000
CHROMIUM_INSTALL = "apt-get install -y chromium  (and `pip install playwright`; no `playwright install` needed)"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"]
runner = CliRunner()
SCREENSHOT = REPO / ".stagewise" / "screenshots" / "dashboard-dev.png"


def _search_widget(expression: str, title: str = "t", period: int = 3600) -> dict:
    return {"type": "metric", "x": 0, "y": 0, "width": 12, "height": 6,
            "properties": {"title": title, "period": period, "stat": "Maximum",
                           "metrics": [[{"expression": expression, "id": "e1"}]]}}


def _window(hours: float = 2) -> tuple[datetime, datetime]:
    now = datetime.now(timezone.utc)
    return now - timedelta(hours=hours), now + timedelta(minutes=1)


def _step(doc: dict, name: str) -> dict:
    return next(s for s in doc["steps"] if s["name"] == name)


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory) -> Path:
    """The engagement spec under this module's own model name."""
    return engagement_spec(tmp_path_factory.mktemp("spec"), MODEL)


@pytest.fixture(scope="module")
def run(dev, spec_path, tmp_path_factory) -> dict:
    """One real `stagewise run --env dev --json` on 20,000 customers."""
    data = tmp_path_factory.mktemp("dashboard-data") / "customers.parquet"
    write_dataset(generate_customers(ROWS, seed=29), data)
    result = runner.invoke(stagewise_app, ["run", "--env", "dev", "--project-dir", str(REPO), "--data", str(data),
                                           "--model", str(spec_path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["status"] == "succeeded"
    return doc


@pytest.fixture(scope="module")
def registered(run) -> tuple[str, float]:
    """The version the run registered and its holdout R²."""
    return str(_step(run, "register")["summary"]["version"]), _step(run, "evaluate")["summary"]["metrics"]["r2"]


@pytest.fixture(scope="module")
def agent_calls(dev) -> str:
    """200 calls of an agent (two versions, a 30% canary) through ``Agent.ask`` against a
    Stubber-scripted Converse model: their metrics are in the embedded CloudWatch."""
    from test_agent_serving import HAIKU, CallRecorder, ScriptedModel, _register

    from stagewise.pipeline.agent_serving import Agent
    from stagewise.platform.runtime.objects import ObjectStore
    from stagewise.registry.dynamodb import registry_of
    from stagewise.registry.transitions import RolloutPlan

    name = "analyst-dashboard"
    _register(dev, name, HAIKU, "You are the analyst, v1.")
    _register(dev, name, HAIKU, "You are the analyst, v2.", RolloutPlan(steps=(30, 100)))
    objects = ObjectStore(dev.clients.client("s3"))
    recorder = CallRecorder(objects, dev.resources.data_bucket.name, dev.clients.client("cloudwatch"),
                            dev.resources.metrics_namespace, "dev")
    with Agent(name, registry_of(dev), objects, ScriptedModel(), recorder) as agent:
        versions = {agent.ask(f"question {i}", key=f"user-{i}").version for i in range(200)}
    assert versions == {1, 2}
    from stagewise.pipeline.cli import app  # deferred: the CLI, as a user gives feedback

    for approved in ("--approved", "--approved", "--approved", "--rejected"):  # v2: 3 of 4 approved
        result = runner.invoke(app, ["registry", "feedback", name, "2", approved, "--score", "0.5", "--env", "dev", "--json"])
        assert result.exit_code == 0, result.output
    return name


def test_search_finds_the_holdout_r2_of_the_registered_version(run, registered, dev):
    version, r2 = registered
    cw = dev.clients.client("cloudwatch")
    start, end = _window()
    # the dashboard's own widget (SEARCH over every model and version in dev)
    body = dashboard_body("dev", dev.settings.region, dev.resources.state_machine_arn)
    widget = next(w for w in body["widgets"] if "SEARCH" in json.dumps(w) and f'\\"{m.HOLDOUT_R2}\\"' in json.dumps(w))
    series = resolve_widget(cw, widget, start, end)
    assert any(s.values and abs(s.values[-1] - r2) < 1e-9 for s in series), [(s.label, s.values) for s in series]
    # pinned to this model, the one match is labelled by what the search leaves open: the version
    pinned = _search_widget(f"SEARCH('{{Stagewise,Environment,Model,Version}} MetricName=\"{m.HOLDOUT_R2}\" "
                            f"Environment=\"dev\" Model=\"{MODEL}\"', 'Maximum', 3600)")
    [only] = resolve_widget(cw, pinned, start, end)
    assert only.label == f"Version={version}"
    assert len(only.values) == 1 and abs(only.values[0] - r2) < 1e-9
    assert only.timestamps[0].minute == 0 and only.timestamps[0].second == 0  # on the hour: period-aligned


def test_search_matches_only_the_exact_dimension_set(run, dev):
    cw = dev.clients.client("cloudwatch")
    start, end = _window()
    # HoldoutR2 carries Environment, Model and Version: a schema without Version matches nothing
    fewer = _search_widget(f"SEARCH('{{Stagewise,Environment,Model}} MetricName=\"{m.HOLDOUT_R2}\" Model=\"{MODEL}\"', 'Maximum', 3600)")
    assert resolve_widget(cw, fewer, start, end) == []
    # PipelineSucceeded carries only Environment and Model: everything is pinned, so the label is the metric
    runs = _search_widget(f"SEARCH('{{Stagewise,Environment,Model}} MetricName=\"{m.PIPELINE_SUCCEEDED}\" "
                          f"Environment=\"dev\" Model=\"{MODEL}\"', 'Sum', 3600)")
    [succeeded] = resolve_widget(cw, runs, start, end)
    assert succeeded.label == m.PIPELINE_SUCCEEDED and sum(succeeded.values) >= 1
    # a term on a dimension outside the schema matches nothing either
    other = _search_widget(f"SEARCH('{{Stagewise,Environment,Model}} MetricName=\"{m.PIPELINE_SUCCEEDED}\" Step=\"train\"', 'Sum', 3600)")
    assert resolve_widget(cw, other, start, end) == []


def test_sort_over_search_ranks_the_slowest_steps(run, registered, dev):
    version, _ = registered
    cw = dev.clients.client("cloudwatch")
    start, end = _window()
    search = (f"SEARCH('{{Stagewise,Environment,Model,Version,Step}} MetricName=\"{m.STEP_DURATION}\" "
              f"Model=\"{MODEL}\" Version=\"{version}\"', 'Maximum', 3600)")
    everything = resolve_widget(cw, _search_widget(search), start, end)
    published = {s.label.removeprefix("Step="): s.values[-1] for s in everything}
    assert len(published) >= 5 and all(label.startswith("Step=") for label in (s.label for s in everything))
    seconds = {s["name"]: s["seconds"] for s in run["steps"]}
    for name, value in published.items():
        assert abs(value - seconds[name]) < 1e-3  # the runner's durations, as the run reported them
    slowest = sorted(published, key=published.get, reverse=True)
    top = resolve_widget(cw, _search_widget(f"SORT({search}, MAX, DESC, 3)"), start, end)
    assert [s.label for s in top] == [f"Step={n}" for n in slowest[:3]]
    bottom = resolve_widget(cw, _search_widget(f"SORT({search}, SUM, ASC)"), start, end)
    assert [s.label for s in bottom] == [f"Step={n}" for n in reversed(slowest)]


def test_list_metrics_is_paginated_and_get_metric_data_batched(dev):
    """520 metrics (moto pages ListMetrics at 500; GetMetricData takes 500 queries a call)."""
    cw = dev.clients.client("cloudwatch")
    namespace = "StagewisePreviewTest"
    now = datetime.now(timezone.utc)
    data = [m.Datum("Load" if i < 300 else "Errors", float(i), "Count", {"Shard": str(i)}, now) for i in range(520)]
    assert m.publish(cw, data, namespace).sent == 520
    calls: dict[str, int] = {"ListMetrics": 0, "GetMetricData": 0}

    def count(event_name: str, **_: object) -> None:
        calls[event_name.rsplit(".", 1)[1]] += 1

    for op in calls:
        cw.meta.events.register(f"before-call.cloudwatch.{op}", count)
    try:
        query = parse_search(f"SEARCH('{{{namespace},Shard}}', 'Sum', 300)")
        assert len(search_metrics(cw, query)) == 520 and calls["ListMetrics"] == 2
        start, end = now - timedelta(minutes=10), now + timedelta(minutes=1)
        widget = {"type": "metric", "properties": {"period": 300, "stat": "Sum", "metrics": [
            [{"expression": f"SEARCH('{{{namespace},Shard}} MetricName=\"Load\"', 'Sum', 300)", "id": "e1"}],
            [{"expression": f"SEARCH('{{{namespace},Shard}} MetricName=\"Errors\"', 'Sum', 300)", "id": "e2"}],
        ]}}
        calls["GetMetricData"] = 0
        series = resolve_widget(cw, widget, start, end)
        assert calls["GetMetricData"] == 2  # 500 + 20 queries
        assert [s.label for s in series] == [f"Shard={i}" for i in range(520)]  # natural order per search
        assert all(s.values == [float(i)] for i, s in enumerate(series))
        # one SEARCH returns at most 500 series, as in CloudWatch
        capped = resolve_widget(cw, _search_widget(f"SEARCH('{{{namespace},Shard}}', 'Sum', 300)", period=300), start, end)
        assert len(capped) == MAX_SEARCH_RESULTS
        assert capped[0].label == "Errors Shard=300"  # metric name and shard differ between matches
    finally:
        for op in calls:
            cw.meta.events.unregister(f"before-call.cloudwatch.{op}", count)


def test_unsupported_expressions_are_named():
    with pytest.raises(PreviewError, match="OR"):
        parse_search("SEARCH('{Stagewise,Model} Model=\"a\" OR Model=\"b\"', 'Sum', 60)")
    with pytest.raises(PreviewError, match="unsupported use of SEARCH"):
        parse_search("AVG(SEARCH('{Stagewise,Model}', 'Sum', 60))")
    with pytest.raises(PreviewError, match="STDDEV"):
        parse_search("SORT(SEARCH('{Stagewise,Model}', 'Sum', 60), STDDEV, DESC)")
    assert parse_search("m1 / m2") is None  # metric math goes to GetMetricData as it is


def test_page_is_self_contained_and_draws_every_kind_of_widget():
    t0 = datetime(2025, 1, 1, 10, tzinfo=timezone.utc)
    body = {"widgets": [
        {"type": "text", "x": 0, "y": 0, "width": 24, "height": 2,
         "properties": {"markdown": "# Title\nsome **bold** <script>alert(1)</script> ![x](https://example.com/x.png)"}},
        {"type": "metric", "x": 0, "y": 2, "width": 12, "height": 6, "properties": {
            "title": "Lines <&>", "metrics": [], "annotations": {"horizontal": [{"label": "PSI 0.2", "value": 0.2}]}}},
        {"type": "metric", "x": 12, "y": 2, "width": 12, "height": 6, "properties": {"title": "Bars", "metrics": []}},
        {"type": "metric", "x": 0, "y": 8, "width": 12, "height": 6, "properties": {"title": "Empty", "metrics": []}},
    ]}
    series = [[], [Series("Version=1", [t0, t0 + timedelta(hours=1)], [0.5, 0.75]), Series("<b>v2</b>", [t0], [0.8])],
              [Series("Version=1", [t0], [20000.0]), Series("Version=2", [t0], [18000.0])], [Series("Version=3", [], [])]]
    page = render_html(body, series, "Preview", start=t0 - timedelta(hours=3), end=t0 + timedelta(hours=3))
    charts = re.findall(r'<svg class="chart" data-widget="(\d+)"', page)
    assert charts == ["1", "2", "3"]
    assert "<polyline" in page.split('data-widget="2"')[0]  # two points: a line
    assert page.split('data-widget="2"')[1].split("</svg>")[0].count("<rect") == 2  # single points: bars
    assert "No data yet" in page.split('data-widget="3"')[1] and "No data yet" not in page.split('data-widget="3"')[0]
    assert "<script" not in page.lower() and "&lt;b&gt;v2&lt;/b&gt;" in page and "Lines &lt;&amp;&gt;" in page
    assert not re.search(r"<img|<link|@import|src=|url\((?!#)", page)  # nothing to fetch, markdown image included
    assert "default-src 'none'" in page
    assert "10:00" in page and "12:00" in page  # time ticks
    lines = page.split('data-widget="1"')[1].split("</svg>")[0]
    assert 'class="annotation"' in lines and ">PSI 0.2<" in lines and ">0.2<" in lines  # the threshold is in range


def _chromium() -> str:
    path = os.environ.get("STAGEWISE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path or not Path(path).is_file():
        pytest.fail(f"Chromium is needed to check the dashboard page; install it: {CHROMIUM_INSTALL}", pytrace=False)
    return path


def _dashboard_cli() -> typer.Typer:
    """A throwaway root app with the command registered as pipeline/cli.py registers it."""
    cli = typer.Typer()
    cli.callback()(lambda: None)
    cli.command("dashboard")(dashboard_command)
    return cli


def test_dashboard_command_prints_the_path_and_opens_it(run, tmp_path, monkeypatch):
    opened: list[str] = []
    monkeypatch.setattr("stagewise.monitoring.cli.webbrowser.open", opened.append)
    result = runner.invoke(_dashboard_cli(), ["dashboard", "--project-dir", str(REPO), "--out", str(tmp_path), "--open"])
    assert result.exit_code == 0, result.output
    path = tmp_path / "dashboard-dev.html"
    assert result.stdout.strip() == str(path) and path.is_file()
    assert opened == [path.resolve().as_uri()]


def test_the_agent_widgets_resolve_the_calls_per_version_and_their_latency_percentiles(agent_calls, dev):
    body = dashboard_body("dev", dev.settings.region, dev.resources.state_machine_arn)
    end = datetime.now(timezone.utc) + timedelta(minutes=5)
    widgets = {w["properties"]["title"]: w for w in body["widgets"] if w["type"] == "metric"}
    cw = dev.clients.client("cloudwatch")
    def ours(series: list[Series]) -> list[Series]:  # a label names the Agent only when other agents have metrics too
        return [s for s in series if "Agent=" not in s.label or f"Agent={agent_calls}" in s.label]

    calls = ours(resolve_widget(cw, widgets["Agent calls per version"], end - timedelta(hours=2), end))
    assert sorted(re.search(r"Version=(\d+)", s.label).group(1) for s in calls) == ["1", "2"]
    assert sum(sum(s.values) for s in calls) == 200
    latency = ours(resolve_widget(cw, widgets["Agent latency p50 / p95 / p99 (ms)"], end - timedelta(hours=2), end))
    assert len(latency) == 6 and all(s.values and s.values[0] > 0 for s in latency)  # p50, p95, p99 of each version
    feedback = ours(resolve_widget(cw, widgets["Agent approval rate per version (feedback)"], end - timedelta(days=2), end))
    # in the widget's order: the approval rate (3 of 4 approved), then the mean score, of v2 (v1 had no verdicts)
    assert [(s.label, s.values) for s in feedback] == [(f"Agent={agent_calls} Version=2", [0.75]),
                                                       (f"Agent={agent_calls} Version=2", [0.5])], feedback


def test_dashboard_command_writes_a_page_that_chromium_renders(run, registered, agent_calls, dev, tmp_path_factory):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"playwright (Python) is needed to drive Chromium: pip install playwright; {CHROMIUM_INSTALL}", pytrace=False)
    chromium = _chromium()
    cli = _dashboard_cli()
    out_dir = tmp_path_factory.mktemp("dashboard") / ".stagewise" / "dashboards"
    result = runner.invoke(cli, ["dashboard", "--env", "dev", "--project-dir", str(REPO), "--out", str(out_dir),
                                 "--hours", "6", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    body = dashboard_body("dev", dev.settings.region, dev.resources.state_machine_arn)
    metric_widgets = [i for i, w in enumerate(body["widgets"]) if w["type"] == "metric"]
    page_path = Path(doc["path"])
    assert page_path == out_dir / "dashboard-dev.html" and page_path.is_file()
    assert doc["charts"] == len(metric_widgets) and doc["widgets"] == len(body["widgets"]) and doc["series"] >= 10
    holdout = next(i for i, w in enumerate(body["widgets"]) if f'\\"{m.HOLDOUT_R2}\\"' in json.dumps(w))

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.on("console", lambda msg: errors.append(f"{msg.type}: {msg.text}") if msg.type in ("error", "warning") else None)
            page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
            page.on("request", lambda req: requests.append(req.url))
            response = page.goto(page_path.as_uri(), wait_until="load")
            assert response is not None and response.ok
            assert errors == []
            assert requests == [page_path.as_uri()]  # the page fetched nothing else
            assert page.locator(".chart").count() == len(metric_widgets)
            assert [int(i) for i in page.locator(".chart").evaluate_all("els => els.map(e => e.dataset.widget)")] == metric_widgets
            holdout_chart = page.locator(f'.chart[data-widget="{holdout}"]')
            assert holdout_chart.locator("text.no-data").count() == 0
            box = holdout_chart.bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 120
            legend = page.locator(f'.chart[data-widget="{holdout}"] + .legend').inner_text()
            assert f"{MODEL}" in legend or f"Version={registered[0]}" in legend
            latency = next(i for i, w in enumerate(body["widgets"]) if w["properties"].get("title", "").startswith("Agent latency"))
            assert page.locator(f'.chart[data-widget="{latency}"]').locator("text.no-data").count() == 0
            assert page.locator(f'.chart[data-widget="{latency}"] + .legend').inner_text().count("Version=") >= 6
            shot = SCREENSHOT  # where the README says: .stagewise/screenshots/ in the repository
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 20_000
    print(f"\ndashboard page: {page_path}\nscreenshot: {shot}")
