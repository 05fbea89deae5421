"""The CloudWatch dashboard of an environment, built from the metric names the runtime publishes.

``dashboard_body`` returns the dashboard JSON body (CloudWatch dashboard body structure:
https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/CloudWatch-Dashboard-Body-Structure.html).
Per-version metrics are drawn with ``SEARCH`` expressions over the Version dimension, so new
versions appear without redeploying. The Pulumi stack and the local preview use this one builder.
"""

from __future__ import annotations

import json
from typing import Any

from stagewise.monitoring import metrics as m

GRID_WIDTH = 24


def _search(metric: str, environment: str, stat: str, period: int, dims: str = "Environment,Model,Version") -> str:
    return (f"SEARCH('{{{m.NAMESPACE},{dims}}} MetricName=\"{metric}\" Environment=\"{environment}\"', "
            f"'{stat}', {period})")


def _top(metric: str, environment: str, stat: str, period: int, dims: str, limit: int) -> str:
    """The ``limit`` series of a SEARCH with the highest maximum (CloudWatch metric math SORT)."""
    return f"SORT({_search(metric, environment, stat, period, dims)}, MAX, DESC, {limit})"


def _widget(title: str, x: int, y: int, properties: dict[str, Any], width: int = 12, height: int = 6) -> dict[str, Any]:
    return {"type": "metric", "x": x, "y": y, "width": width, "height": height,
            "properties": {"title": title, "view": "timeSeries", "stacked": False, **properties}}


def _search_widget(title: str, metric: str, environment: str, region: str, stat: str, x: int, y: int,
                   dims: str = "Environment,Model,Version", period: int = 3600, label: str = "") -> dict[str, Any]:
    return _widget(title, x, y, {
        "region": region,
        "metrics": [[{"expression": _search(metric, environment, stat, period, dims), "id": "e1", "label": label or metric}]],
        "period": period,
        "stat": stat,
    })


def dashboard_body(environment: str, region: str, state_machine_arn: str | None = None) -> dict[str, Any]:
    """The dashboard of ``environment``: executions, step durations, validation, holdout and
    realised metrics per version, traffic weight and mean prediction per version, rollbacks, and
    the agents' calls, errors, latency percentiles, tokens and cost (``agent_widgets``).

    Returns:
        The dashboard body as a dict (``json.dumps`` it for the API); every metric name in it is
        one of ``monitoring.metrics.PUBLISHED`` or an AWS/States execution metric.
    """
    widgets: list[dict[str, Any]] = [
        {"type": "text", "x": 0, "y": 0, "width": GRID_WIDTH, "height": 2,
         "properties": {"markdown": f"# Stagewise {environment}\nPipeline runs, model versions, rollouts and data quality."}},
    ]
    y = 2
    if state_machine_arn:
        widgets.append(_widget("Pipeline executions", 0, y, {
            "region": region, "stat": "Sum", "period": 3600,
            "metrics": [
                ["AWS/States", "ExecutionsSucceeded", "StateMachineArn", state_machine_arn],
                ["AWS/States", "ExecutionsFailed", "StateMachineArn", state_machine_arn],
                ["AWS/States", "ExecutionsTimedOut", "StateMachineArn", state_machine_arn],
            ],
        }))
    widgets.append(_search_widget("Runs succeeded / failed", m.PIPELINE_SUCCEEDED, environment, region, "Sum",
                                  12 if state_machine_arn else 0, y, dims="Environment,Model"))
    y += 6
    pairs = [
        ("Step duration (s)", m.STEP_DURATION, "Maximum", "Environment,Model,Version,Step"),
        ("Rows validated", m.ROWS_VALIDATED, "Sum", "Environment,Model,Version"),
        ("Expectations failed", m.EXPECTATIONS_FAILED, "Maximum", "Environment,Model,Version"),
        ("Validation failures", m.VALIDATION_FAILED, "Sum", "Environment,Model"),
        ("Holdout R² per version", m.HOLDOUT_R2, "Maximum", "Environment,Model,Version"),
        ("Holdout RMSE per version", m.HOLDOUT_RMSE, "Maximum", "Environment,Model,Version"),
        ("Realised R² per version", m.SCORED_R2, "Average", "Environment,Model,Version"),
        ("Traffic weight per version (%)", m.TRAFFIC_WEIGHT, "Maximum", "Environment,Model,Version"),
        ("Mean prediction per version", m.MEAN_PREDICTION, "Average", "Environment,Model,Version"),
        ("Rows scored per version", m.ROWS_SCORED, "Sum", "Environment,Model,Version"),
        ("Rollbacks", m.ROLLBACKS, "Sum", "Environment,Model"),
        ("Runs failed", m.PIPELINE_FAILED, "Sum", "Environment,Model"),
        ("Share of features drifted", m.DRIFTED_FEATURE_SHARE, "Maximum", "Environment,Model,Version"),
        ("Alerts sent", m.ALERTS_SENT, "Sum", "Environment,Model"),
        ("Spot interruptions per task", m.SPOT_INTERRUPTIONS, "Sum", "Environment,Model,Step"),
        ("On-demand fallbacks per task", m.ON_DEMAND_FALLBACKS, "Sum", "Environment,Model,Step"),
        ("Run cost (USD, the dearest run per hour)", m.RUN_COST_USD, "Maximum", "Environment,Model"),
    ]
    psi = _widget("Most drifted features (PSI, top 10; > 0.2 is significant)", 0, y, {
        "region": region, "period": 3600, "stat": "Maximum",
        "metrics": [[{"expression": _top(m.FEATURE_PSI, environment, "Maximum", 3600,
                                         "Environment,Model,Version,Feature", 10), "id": "e1", "label": "PSI"}]],
        "annotations": {"horizontal": [{"label": "PSI 0.2", "value": 0.2}]},
    }, width=24)
    widgets.append(psi)
    y += 6
    for i, (title, metric, stat, dims) in enumerate(pairs):
        widgets.append(_search_widget(title, metric, environment, region, stat, 12 * (i % 2), y + 6 * (i // 2), dims=dims))
    y += 6 * ((len(pairs) + 1) // 2)
    widgets += agent_widgets(environment, region, y)
    return {"start": "-P7D", "periodOverride": "inherit", "widgets": widgets}


AGENT_DIMS = "Environment,Agent,Version"


def agent_widgets(environment: str, region: str, y: int) -> list[dict[str, Any]]:
    """The agents' section, from ``y``: per agent version calls, errors, latency p50/p95/p99 (ms),
    input and output tokens, cost per day (USD), and approval rate and mean score per day (from the
    feedback verdicts, ``stagewise registry feedback``)."""
    def expressions(*rows: tuple[str, str, str, int]) -> list[list[dict[str, Any]]]:
        return [[{"expression": _search(metric, environment, stat, period, AGENT_DIMS), "id": f"e{i}", "label": label}]
                for i, (metric, stat, label, period) in enumerate(rows, 1)]

    def widget(title: str, x: int, row: int, rows: list[list[dict[str, Any]]], stat: str, period: int = 3600) -> dict[str, Any]:
        return _widget(title, x, row, {"region": region, "metrics": rows, "period": period, "stat": stat})

    return [
        {"type": "text", "x": 0, "y": y, "width": GRID_WIDTH, "height": 1,
         "properties": {"markdown": "## Agents\nEvery call, per agent version (`stagewise query \"SELECT * FROM agent_calls\"`)."}},
        widget("Agent calls per version", 0, y + 1, expressions((m.AGENT_CALLS, "Sum", "calls", 3600)), "Sum"),
        widget("Agent errors per version", 12, y + 1, expressions((m.AGENT_ERRORS, "Sum", "errors", 3600),
                                                                  (m.AGENT_TOOL_ERRORS, "Sum", "tool errors", 3600)), "Sum"),
        widget("Agent latency p50 / p95 / p99 (ms)", 0, y + 7, expressions(
            (m.AGENT_LATENCY, "p50", "p50", 3600), (m.AGENT_LATENCY, "p95", "p95", 3600), (m.AGENT_LATENCY, "p99", "p99", 3600)), "p95"),
        widget("Agent tokens per version", 12, y + 7, expressions((m.AGENT_INPUT_TOKENS, "Sum", "input", 3600),
                                                                  (m.AGENT_OUTPUT_TOKENS, "Sum", "output", 3600)), "Sum"),
        widget("Agent cost per day (USD)", 0, y + 13, expressions((m.AGENT_COST_USD, "Sum", "USD", 86400)), "Sum", 86400),
        widget("Agent approval rate per version (feedback)", 12, y + 13, expressions(
            (m.AGENT_APPROVALS, "Average", "approval rate", 86400), (m.AGENT_FEEDBACK_SCORE, "Average", "mean score", 86400)),
            "Average", 86400),
    ]


def metric_names(body: dict[str, Any]) -> set[str]:
    """Every metric name a dashboard body refers to (in metric arrays and SEARCH expressions)."""
    import re

    names: set[str] = set()
    for w in body.get("widgets", []):
        for row in w.get("properties", {}).get("metrics", []):
            for item in row:
                if isinstance(item, dict) and "expression" in item:
                    names.update(re.findall(r'MetricName="([^"]+)"', item["expression"]))
            if row and isinstance(row[0], str) and len(row) > 1:
                names.add(row[1])
    return names


def dashboard_json(environment: str, region: str, state_machine_arn: str | None = None) -> str:
    """``dashboard_body`` serialised for PutDashboard / ``aws.cloudwatch.Dashboard``."""
    return json.dumps(dashboard_body(environment, region, state_machine_arn))


FLEET_METRICS = ((m.PIPELINE_SUCCEEDED, "Sum", "Runs succeeded"), (m.PIPELINE_FAILED, "Sum", "Runs failed"),
                 (m.RUN_COST_USD, "Maximum", "Run cost (USD)"), (m.ROLLBACKS, "Sum", "Rollbacks"),
                 (m.DRIFT_ALERTS, "Sum", "Drift alerts"), (m.ALERTS_SENT, "Sum", "Alerts sent"))
"""The fleet dashboard's widgets: per-model metrics with fixed dimensions (Environment, Model)."""


def fleet_dashboard_body(accounts: dict[str, str], region: str, models: tuple[str, ...]) -> dict[str, Any]:
    """The monitoring account's dashboard (CloudWatch cross-account observability): per metric of
    ``FLEET_METRICS`` and model, one line per environment (``accounts``: environment -> account
    id), each read from its source account (the metric's ``accountId``), so dev, test and prod sit
    side by side (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch-Unified-Cross-Account.html)."""
    widgets: list[dict[str, Any]] = [{"type": "text", "x": 0, "y": 0, "width": GRID_WIDTH, "height": 1, "properties": {
        "markdown": "# Stagewise fleet\nEvery environment's account side by side (CloudWatch cross-account observability)."}}]
    for i, (model, (metric, stat, title)) in enumerate((mod, f) for mod in models for f in FLEET_METRICS):
        lines = [[m.NAMESPACE, metric, "Environment", env, "Model", model, {"accountId": acct, "label": env}]
                 for env, acct in accounts.items()]
        widgets.append(_widget(f"{model}: {title}", 12 * (i % 2), 1 + 6 * (i // 2),
                               {"region": region, "stat": stat, "period": 3600, "metrics": lines}))
    return {"start": "-P7D", "periodOverride": "inherit", "widgets": widgets}
