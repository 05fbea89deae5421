"""The fleet: every model and agent in every environment, read side by side (``stagewise fleet``).

For each environment (dev, test, prod: each its own account) ``read_environment`` reads, through
the environment's read-only ``reader`` role (``policies.reader_policy``: registry, executions,
metrics, alarms, baselines and feature importances; never the deployer or promoter role):

- per model and agent: champion and challenger with traffic weights, the rollout step and plan,
  the last gate evaluation (values and outcomes), the last run and its outcome (the newest
  ``PipelineSucceeded``/``PipelineFailed`` datum), drift (the champion's ``DriftedFeatureShare``
  and ``DriftAlerts`` in the window), its open alarms, and the promotion path of each serving
  version (``lineage.promoted_from``, back to the environment where it was trained);
- for the model pages (``fleet_page``): every version's lineage, metrics and evaluations, the
  rollout timeline (the challenger's weight after each audit event, with the gate results and
  rollbacks) and the audit trail.

An environment that cannot be read (no stack, role refused, AWS unreachable) is reported as such,
with the reason; the others are still shown.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError

from stagewise.monitoring import metrics as m
from stagewise.platform.contract import StagewiseError
from stagewise.platform.runtime.objects import S3Uri
from stagewise.registry.dynamodb import registry_of
from stagewise.registry.records import AGENT_EVALUATION, AuditEvent, ModelRecord, VersionRecord

WINDOW_HOURS = 24 * 14
"""How far back the last run and drift are looked for (hours)."""


@dataclass
class EnvironmentView:
    """One environment as the fleet reads it: ``models`` name -> its view (``model_view``),
    ``error`` why it could not be read (then nothing else is set)."""

    environment: str
    account_id: str
    region: str
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"environment": self.environment, "account_id": self.account_id, "region": self.region,
                "error": self.error, "models": self.models}


def promotion_path(v: VersionRecord, environment: str) -> list[dict[str, Any]]:
    """Where ``v`` came from, oldest first: ``[{"environment", "account_id", "version"}, ...]``
    ending with ``v`` in ``environment`` (its ``lineage.promoted_from`` chain: test v1 came from
    dev v3, prod v1 from test v1, ...)."""
    here = {"environment": environment, "account_id": v.lineage.get("account_id"), "version": v.version}
    path, hop = [here], v.lineage.get("promoted_from")
    while isinstance(hop, dict):
        path.insert(0, {"environment": hop.get("environment"), "account_id": hop.get("account_id"), "version": hop.get("version")})
        hop = (hop.get("lineage") or {}).get("promoted_from")
    return path


def rollout_timeline(history: list[AuditEvent]) -> list[dict[str, Any]]:
    """The model's rollouts over time from its audit trail, oldest first: per event that judged a
    rollout (``rollout.*``) or changed what serves (a registration that starts a rollout or crowns
    the first champion, ``registry promote``, a manual rollback...), ``{"at",
    "action", "version", "challenger", "weight" (percent after it), "champion", "gates"
    ([{"metric", "value", "outcome"}]), "rolled_back", "reason"}``."""
    timeline = []
    for e in sorted(history, key=lambda e: e.revision):
        serving = (e.after or {}).get("serving") or {}
        changed = e.action != "model.create" and serving and serving != ((e.before or {}).get("serving") or {})
        if not (e.action.startswith("rollout.") or changed):
            continue
        gates = [{"metric": g.get("metric"), "value": g.get("value"), "outcome": g.get("outcome")}
                 for g in (e.evidence or {}).get("gates", []) if isinstance(g, dict)]
        timeline.append({"at": e.at.isoformat(), "action": e.action, "version": e.version,
                         "challenger": serving.get("challenger"),
                         # a completed rollout's challenger took all the traffic (it is now the champion)
                         "weight": 100.0 if e.action == "rollout.complete" else float(serving.get("weight") or 0.0),
                         "champion": serving.get("champion"), "gates": gates, "rolled_back": "rollback" in e.action,
                         "reason": e.reason, "actor": e.actor})
    return timeline


def last_gates(history: list[AuditEvent]) -> dict[str, Any] | None:
    """The newest gate evaluation of the model's rollouts: ``{"at", "action", "gates": [...]}``."""
    judged = [e for e in history if e.action.startswith("rollout.") and (e.evidence or {}).get("gates")]
    if not judged:
        return None
    e = max(judged, key=lambda e: e.revision)
    return {"at": e.at.isoformat(), "action": e.action,
            "gates": [{"metric": g.get("metric"), "value": g.get("value"), "outcome": g.get("outcome")} for g in e.evidence["gates"]]}


def _latest(cloudwatch: Any, namespace: str, metric: str, dims: dict[str, str], stat: str, since: datetime,
            now: datetime) -> tuple[datetime, float] | None:
    """The newest ``(timestamp, value)`` of ``metric`` in hourly buckets since ``since``, or None."""
    points = cloudwatch.get_metric_statistics(
        Namespace=namespace, MetricName=metric, Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
        StartTime=since, EndTime=now, Period=3600, Statistics=[stat])["Datapoints"]
    if not points:
        return None
    newest = max(points, key=lambda p: p["Timestamp"])
    return newest["Timestamp"], float(newest[stat])


def last_run(cloudwatch: Any, namespace: str, environment: str, model: str, since: datetime, now: datetime) -> dict[str, Any] | None:
    """The newest run's outcome: ``{"outcome": "succeeded"|"failed", "hour": <ISO hour>}`` from
    ``PipelineSucceeded``/``PipelineFailed`` (hourly buckets; a failure wins a tie), or None."""
    dims = m.model_dimensions(environment, model)
    found = {outcome: _latest(cloudwatch, namespace, metric, dims, "Sum", since, now)
             for outcome, metric in (("succeeded", m.PIPELINE_SUCCEEDED), ("failed", m.PIPELINE_FAILED))}
    seen = [(at, outcome) for outcome, hit in found.items() if hit and hit[1] > 0 for at in [hit[0]]]
    if not seen:
        return None
    at, outcome = max(seen, key=lambda x: (x[0], x[1] == "failed"))
    return {"outcome": outcome, "hour": at.isoformat()}


def drift(cloudwatch: Any, namespace: str, environment: str, model: str, champion: int | None, since: datetime,
          now: datetime) -> dict[str, Any]:
    """``{"drifted_share": <champion's newest DriftedFeatureShare or None>, "alerts": <DriftAlerts
    in the window>, "status": "ok"|"drifting"|"unknown"}``."""
    share = None
    if champion is not None:
        hit = _latest(cloudwatch, namespace, m.DRIFTED_FEATURE_SHARE,
                      {**m.model_dimensions(environment, model), "Version": str(champion)}, "Maximum", since, now)
        share = hit[1] if hit else None
    points = cloudwatch.get_metric_statistics(
        Namespace=namespace, MetricName=m.DRIFT_ALERTS, StartTime=since, EndTime=now, Period=86_400, Statistics=["Sum"],
        Dimensions=[{"Name": k, "Value": v} for k, v in m.model_dimensions(environment, model).items()])["Datapoints"]
    alerts = int(sum(p["Sum"] for p in points))
    status = "unknown" if share is None and not alerts else "drifting" if alerts or (share or 0) > 0 else "ok"
    return {"drifted_share": share, "alerts": alerts, "status": status}


def open_alarms(cloudwatch: Any, environment: str) -> list[dict[str, Any]]:
    """The environment's alarms in ALARM: ``[{"name", "owner", "reason", "since"}]``; ``owner`` is
    the model or agent of its ``Model``/``Agent`` dimension, None for an environment-wide alarm
    (failed executions). (The state is checked here too: moto's filter by state returns every alarm.)"""
    found = []
    for page in cloudwatch.get_paginator("describe_alarms").paginate(AlarmNamePrefix=f"stagewise-{environment}-", StateValue="ALARM"):
        for a in page.get("MetricAlarms", []):
            if a.get("StateValue") != "ALARM":
                continue
            dims = {d["Name"]: d["Value"] for d in a.get("Dimensions", [])}
            found.append({"name": a["AlarmName"], "owner": dims.get("Model") or dims.get("Agent"), "reason": a.get("StateReason", ""),
                          "since": a["StateUpdatedTimestamp"].isoformat() if a.get("StateUpdatedTimestamp") else ""})
    return found


def alarms_of(alarms: list[dict[str, Any]], environment: str, name: str) -> list[dict[str, Any]]:
    """The open alarms of model or agent ``name``: those on its own dimension, and the
    environment-wide ones named after it (``stagewise-<env>-<name>-failed-executions``)."""
    return [a for a in alarms if a["owner"] == name or (a["owner"] is None and a["name"].startswith(f"stagewise-{environment}-{name}-"))]


def version_view(v: VersionRecord, stage: str | None, evaluations: list[dict[str, Any]], environment: str) -> dict[str, Any]:
    """One version for the model page: status, stage, created, metrics, offline gates, the lineage
    a user browses (data sha256, validation result, hyperparameters, rows, split), its evaluations
    and its promotion path."""
    lin = v.lineage
    return {
        "version": v.version, "status": v.status, "stage": stage or "-", "created_at": v.created_at.isoformat(),
        "created_by": v.created_by, "metrics": v.metrics, "artifact_sha256": v.artifact_sha256, "artifact_uri": v.artifact_uri,
        "gates": [{"metric": g.metric, "value": g.value, "outcome": g.outcome} for g in v.gates],
        "data_sha256": lin.get("data_sha256"), "data_uri": lin.get("data_uri"),
        "validation": {"success": lin.get("validation_success"), "result_uri": lin.get("validation_result_uri")},
        "hyperparameters": lin.get("hyperparameters") or {}, "rows": lin.get("rows"), "run_id": lin.get("run_id"),
        "agent": v.agent.model_dump(mode="json") if v.agent else None, "evaluations": evaluations,
        "path": promotion_path(v, environment),
    }


def model_view(reg: Any, record: ModelRecord, cloudwatch: Any, namespace: str, environment: str, alarms: list[dict[str, str]],
               since: datetime, now: datetime) -> dict[str, Any]:
    """Everything the fleet shows of one model or agent in one environment (module docstring)."""
    versions = reg.list_versions(record.name)
    history = reg.history(record.name)
    evaluations: dict[int, list[dict[str, Any]]] = {}
    for e in history:
        if e.action == AGENT_EVALUATION and e.version is not None:
            evaluations.setdefault(e.version, []).append({"at": e.at.isoformat(), **{k: e.evidence.get(k) for k in (
                "passed", "dataset", "uri", "summary")}})
    serving = record.serving()
    r = record.rollout
    by_number = {v.version: v for v in versions}
    paths = {role: promotion_path(by_number[n], environment)
             for role, n in (("champion", serving["champion"]), ("challenger", serving["challenger"])) if n in by_number}
    return {
        "name": record.name, "kind": record.kind, "revision": record.revision, "serving": serving,
        "rollout": {"plan": list(r.plan), "step": r.step, "weight": r.weight, "shadow": r.shadow, "paused": r.paused,
                    "started_at": r.started_at.isoformat(), "step_runs": r.step_runs, "bake_runs": r.bake_runs} if r else None,
        "last_gates": last_gates(history),
        "last_run": last_run(cloudwatch, namespace, environment, record.name, since, now) if record.kind == "model" else None,
        "drift": drift(cloudwatch, namespace, environment, record.name, serving["champion"], since, now)
                 if record.kind == "model" else None,
        "alarms": alarms_of(alarms, environment, record.name),
        "paths": paths,
        "versions": [version_view(v, record.stages.get(v.version), evaluations.get(v.version, []), environment) for v in versions],
        "timeline": rollout_timeline(history),
        "audit": [{"revision": e.revision, "at": e.at.isoformat(), "actor": e.actor, "action": e.action, "version": e.version,
                   "reason": e.reason} for e in sorted(history, key=lambda e: e.revision)],
    }


def read_environment(conn: Any, now: datetime | None = None, hours: float = WINDOW_HOURS) -> EnvironmentView:
    """Read one environment through ``conn`` (connected as its reader role); an environment that
    cannot be read comes back with ``error`` set."""
    now = now or datetime.now(timezone.utc)
    since = now - timedelta(hours=hours)
    view = EnvironmentView(conn.settings.environment, conn.settings.account_id, conn.settings.region)
    try:
        reg = registry_of(conn)
        cloudwatch = conn.clients.client("cloudwatch")
        alarms = open_alarms(cloudwatch, view.environment)
        for record in reg.list_models():
            view.models[record.name] = model_view(reg, record, cloudwatch, conn.resources.metrics_namespace,
                                                  view.environment, alarms, since, now)
    except (ClientError, BotoCoreError, StagewiseError) as e:
        view.models, view.error = {}, f"{type(e).__name__}: {e}"
    return view


def artifact_json(s3: Any, artifact_uri: str, name: str) -> dict[str, Any] | None:
    """``<artifact prefix>/<name>`` (``feature_importance.json``, ``baseline.json``) beside a
    version's artifact, or None if it cannot be read."""
    where = S3Uri.parse(artifact_uri)
    key = where.key.rsplit("/", 1)[0] + "/" + name
    try:
        return json.loads(s3.get_object(Bucket=where.bucket, Key=key)["Body"].read())
    except (ClientError, BotoCoreError, ValueError):
        return None


def compare_versions(a: dict[str, Any], b: dict[str, Any], read: Callable[[str, str], dict[str, Any] | None]) -> dict[str, Any]:
    """Two versions side by side (``version_view`` dicts; ``read(artifact_uri, name)`` reads an
    artifact's JSON): metrics and hyperparameters with their differences, feature importance
    (top 10 of either), and per feature the baseline means and null fractions."""
    def pairs(x: dict[str, Any], y: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"name": k, "a": x.get(k), "b": y.get(k),
                 "delta": (y[k] - x[k]) if isinstance(x.get(k), (int, float)) and isinstance(y.get(k), (int, float)) else None}
                for k in sorted(set(x) | set(y))]

    imp = {side: read(v["artifact_uri"], "feature_importance.json") or {} for side, v in (("a", a), ("b", b))}
    total = {side: sum(vals.values()) or 1.0 for side, vals in imp.items()}
    top = sorted(set(list(imp["a"])[:10]) | set(list(imp["b"])[:10]), key=lambda f: -(imp["b"].get(f) or imp["a"].get(f) or 0))
    base = {side: (read(v["artifact_uri"], "baseline.json") or {}).get("features", {}) for side, v in (("a", a), ("b", b))}
    baseline = [{"feature": f, "mean_a": base["a"].get(f, {}).get("mean"), "mean_b": base["b"].get(f, {}).get("mean"),
                 "null_a": base["a"].get(f, {}).get("null_fraction"), "null_b": base["b"].get(f, {}).get("null_fraction")}
                for f in sorted(set(base["a"]) | set(base["b"]))]
    return {"a": a["version"], "b": b["version"], "metrics": pairs(a["metrics"], b["metrics"]),
            "hyperparameters": pairs(a["hyperparameters"], b["hyperparameters"]),
            "importance": [{"feature": f, "a": imp["a"].get(f, 0.0) / total["a"], "b": imp["b"].get(f, 0.0) / total["b"]} for f in top],
            "baseline": baseline}
