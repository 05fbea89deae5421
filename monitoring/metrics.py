"""CloudWatch metrics: the one source of metric names and dimensions, and a batched publisher.

The dashboard and alarms (``stagewise.monitoring`` and the Pulumi stack) refer to these names, so a
metric is named once. Every datum carries the dimensions Environment, Model and Version (``none``
when the run registered no version, e.g. a failed validation); step durations add Step.

PutMetricData limits (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_PutMetricData.html):
at most 1,000 metrics per call and a 1 MB request; values must be finite. The publisher batches by
``MAX_DATA_PER_CALL`` and drops NaN and infinities (counting them), never sending them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable

NAMESPACE = "Stagewise"
MAX_DATA_PER_CALL = 500  # well under the 1,000-metric and 1 MB limits with our dimension sizes

# metric names (unit)
ROWS_VALIDATED = "RowsValidated"  # Count
EXPECTATIONS_FAILED = "ExpectationsFailed"  # Count
VALIDATION_SUCCESS = "ValidationSuccess"  # None: 1 passed, 0 failed
HOLDOUT_R2 = "HoldoutR2"  # None
HOLDOUT_RMSE = "HoldoutRMSE"  # None, in target units
HOLDOUT_MAE = "HoldoutMAE"  # None, in target units
ROWS_SCORED = "RowsScored"  # Count, per serving version
SCORED_R2 = "ScoredR2"  # None: R² of a version on the scored rows that carry the label
SCORED_RMSE = "ScoredRMSE"  # None
SCORED_MAE = "ScoredMAE"  # None
TRAFFIC_WEIGHT = "TrafficWeight"  # Percent of keys routed to the version
ROLLBACKS = "Rollbacks"  # Count, dimensions Environment, Model
MEAN_PREDICTION = "MeanPrediction"  # None
STEP_DURATION = "StepDurationSeconds"  # Seconds, with dimension Step
FEATURE_PSI = "FeaturePSI"  # None, dimensions Environment, Model, Version, Feature
FEATURE_KS = "FeatureKS"  # None (KS statistic D), dimensions Environment, Model, Version, Feature
DRIFTED_FEATURE_SHARE = "DriftedFeatureShare"  # None 0..1, dimensions Environment, Model, Version
DRIFT_ALERTS = "DriftAlerts"  # Count, dimensions Environment, Model
ALERTS_SENT = "AlertsSent"  # Count, dimensions Environment, Model
SPOT_INTERRUPTIONS = "SpotInterruptions"  # Count, dimensions Environment, Model, Step (task group)
ON_DEMAND_FALLBACKS = "OnDemandFallbacks"  # Count, dimensions Environment, Model, Step: retries on FARGATE
PIPELINE_SUCCEEDED = "PipelineSucceeded"  # Count, dimensions Environment, Model
PIPELINE_FAILED = "PipelineFailed"  # Count, dimensions Environment, Model
VALIDATION_FAILED = "ValidationFailed"  # Count, dimensions Environment, Model: runs stopped by the suite
RUN_COST_USD = "RunCostUSD"  # None (USD), dimensions Environment, Model: one per run (``pipeline.run_cost``)
# agent calls (``pipeline.agent_serving``): one datum per call with dimensions Environment, Agent,
# Version, and again with Environment, Agent (what the alarms watch)
AGENT_CALLS = "AgentCalls"  # Count
AGENT_ERRORS = "AgentErrors"  # Count, 0 or 1 per call: its Average is the error rate
AGENT_TOOL_ERRORS = "AgentToolErrors"  # Count
AGENT_LATENCY = "AgentLatency"  # Milliseconds, one raw value per call (p50/p95/p99 over them)
AGENT_INPUT_TOKENS = "AgentInputTokens"  # Count
AGENT_OUTPUT_TOKENS = "AgentOutputTokens"  # Count
AGENT_COST_USD = "AgentCostUSD"  # None (USD), only calls whose cost is known
# feedback verdicts on an agent version (``stagewise registry feedback``), same dimensions
AGENT_APPROVALS = "AgentApproval"  # None, 1 approved or 0 rejected per verdict: its Average is the approval rate
AGENT_FEEDBACK_SCORE = "AgentFeedbackScore"  # None 0..1, one value per scored verdict

PUBLISHED = frozenset({
    ROWS_VALIDATED, EXPECTATIONS_FAILED, VALIDATION_SUCCESS, VALIDATION_FAILED, HOLDOUT_R2, HOLDOUT_RMSE, HOLDOUT_MAE,
    ROWS_SCORED, SCORED_R2, SCORED_RMSE, SCORED_MAE, TRAFFIC_WEIGHT, ROLLBACKS, MEAN_PREDICTION, STEP_DURATION,
    PIPELINE_SUCCEEDED, PIPELINE_FAILED, RUN_COST_USD, FEATURE_PSI, FEATURE_KS, DRIFTED_FEATURE_SHARE, DRIFT_ALERTS, ALERTS_SENT,
    SPOT_INTERRUPTIONS, ON_DEMAND_FALLBACKS, AGENT_CALLS, AGENT_ERRORS, AGENT_TOOL_ERRORS, AGENT_LATENCY,
    AGENT_INPUT_TOKENS, AGENT_OUTPUT_TOKENS, AGENT_COST_USD, AGENT_APPROVALS, AGENT_FEEDBACK_SCORE,
})
"""Every metric name the runtime publishes (the dashboard and alarms may use only these)."""

HOLDOUT_METRICS = {"r2": HOLDOUT_R2, "rmse": HOLDOUT_RMSE, "mae": HOLDOUT_MAE}
SCORED_METRICS = {"r2": SCORED_R2, "rmse": SCORED_RMSE, "mae": SCORED_MAE}


@dataclass(frozen=True)
class Datum:
    """One metric value: ``name`` with ``value`` in ``unit`` (a CloudWatch unit name)."""

    name: str
    value: float
    unit: str = "None"
    dimensions: dict[str, str] = field(default_factory=dict)
    timestamp: datetime | None = None

    def to_api(self) -> dict[str, Any]:
        """The datum as a PutMetricData ``MetricData`` entry."""
        entry: dict[str, Any] = {
            "MetricName": self.name,
            "Value": float(self.value),
            "Unit": self.unit,
            "Dimensions": [{"Name": k, "Value": v} for k, v in self.dimensions.items()],
        }
        if self.timestamp is not None:
            entry["Timestamp"] = self.timestamp
        return entry


def model_dimensions(environment: str, model: str) -> dict[str, str]:
    """Environment and Model only: for run-level counts that alarms watch (an alarm needs fixed
    dimensions, and a version number is not known in advance)."""
    return {"Environment": environment, "Model": model}


def dimensions(environment: str, model: str, version: int | None) -> dict[str, str]:
    """The standard dimensions: Environment, Model, Version (``"none"`` when no version)."""
    return {"Environment": environment, "Model": model, "Version": "none" if version is None else str(version)}


@dataclass(frozen=True)
class PublishResult:
    """What ``publish`` did: data sent, non-finite values dropped, and API calls made."""

    sent: int
    dropped: int
    calls: int


def publish(cloudwatch: Any, data: Iterable[Datum], namespace: str = NAMESPACE) -> PublishResult:
    """Send metric data in batches of ``MAX_DATA_PER_CALL``, dropping NaN and infinite values.

    Args:
        cloudwatch: a boto3 ``cloudwatch`` client.
        data: the values to send.
        namespace: CloudWatch namespace (``Stagewise``).

    Raises:
        botocore.exceptions.ClientError: a PutMetricData call failed (throttling is retried by the
            client's retry mode first).
    """
    items = list(data)
    finite = [d for d in items if math.isfinite(d.value)]
    dropped = len(items) - len(finite)
    calls = 0
    for start in range(0, len(finite), MAX_DATA_PER_CALL):
        batch = finite[start : start + MAX_DATA_PER_CALL]
        cloudwatch.put_metric_data(Namespace=namespace, MetricData=[d.to_api() for d in batch])
        calls += 1
    return PublishResult(sent=len(finite), dropped=dropped, calls=calls)
