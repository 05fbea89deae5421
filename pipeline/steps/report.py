"""The last steps: ``monitor`` (drift of the scored data against each scoring version's baseline),
``rollout`` (the rollout controller on the challenger's online evidence) and ``publish`` (the
run's CloudWatch metrics, ``run_metrics``, which a rejected run also sends).

**Each run's metrics are sent once.** CloudWatch has no idempotent ``PutMetricData``: a resumed run
that sent its data points again would count its rows, runs and alerts twice in every ``Sum``. So a
run's data points (``run_metrics``) are sent by its outcome (succeeded, or rejected: exit 2 or 3)
only after a marker, ``metrics/<model>/run=<run id>.json`` in the data bucket, was written with S3's
``If-None-Match`` (``send_run_metrics``); a resumed run that finds it sends nothing. That is
at-most-once: a process killed between the marker and ``PutMetricData`` (milliseconds) leaves the
run without data points rather than with two sets. A resumable failure (exit 1, 5, 143) is an
attempt, not an outcome: it sends only ``PipelineFailed`` and ``AlertsSent`` (``attempt_metrics``),
which count attempts and alerts really sent; the resumed run then sends its outcome's data once.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from stagewise.monitoring import drift as driftlib
from stagewise.monitoring import metrics as m
from stagewise.pipeline.steps.context import RunContext
from stagewise.pipeline.steps.results import Monitored, Published, RolledOut, Scored
from stagewise.platform.runtime.failpoints import failpoint
from stagewise.registry.records import GateResult


# -------------------------------------------------------------------------------------- monitor
def monitor(ctx: RunContext) -> Monitored:
    """Drift of the scored data against the baseline of each version that scored (PSI per feature
    on the baseline's decile bins, KS statistic D; thresholds from the spec's ``drift``). Drift
    over the spec's limit publishes an alert naming the features and their PSI."""
    d = ctx.spec.drift
    scored: Scored = ctx.needs("score")
    reports: dict[str, Any] = {}
    for number, counts in scored.drift_counts.items():
        baseline = ctx.baseline_of(ctx.version(int(number)))
        if baseline is None:
            continue
        report = driftlib.evaluate(counts, baseline, int(number), d.psi_threshold, d.ks_threshold)
        reports[number] = report.to_dict()
    drifted = {v: r for v, r in reports.items() if r["drifted_share"] > d.max_drifted_share}
    if drifted:
        number, worst = max(drifted.items(), key=lambda kv: kv[1]["drifted_share"])
        features = [f for f in worst["features"] if f["drifted"]]
        serving = scored.serving
        rollout_note = (f" A rollout of v{serving['challenger']} is in progress: it will {d.on_rollout} (spec drift.on_rollout)."
                        if serving.get("challenger") else "")
        ctx.send_alert(ctx.alert(
            "drift.detected", f"Data drift: {len(features)} feature(s) shifted vs v{number}'s baseline",
            f"The scored data has drifted from the training baseline of version {number}: "
            f"{worst['drifted_share']:.0%} of features are over the thresholds (PSI > {d.psi_threshold:g} or "
            f"KS > {d.ks_threshold:g}).{rollout_note}",
            "Check the upstream data for the listed features (a pipeline change, a new client, a unit change). If the "
            "shift is real and lasting, retrain on recent data; the champion keeps serving meanwhile.",
            version=int(number), severity="warning",
            numbers={f"{f['feature']} PSI": f"{f['psi']:.3f}" + (f", KS {f['ks']:.3f}" if f["ks"] is not None else "")
                     for f in features[:10]},
        ))
    return Monitored(
        versions={v: {"drifted_share": r["drifted_share"], "top": [(f["feature"], f["psi"]) for f in r["features"][:5]],
                      "drifted": [f["feature"] for f in r["features"] if f["drifted"]]} for v, r in reports.items()},
        alert=bool(drifted), reports=reports,
    )


# -------------------------------------------------------------------------------------- rollout
def rollout(ctx: RunContext) -> RolledOut:
    """The rollout controller: count this scoring run against the rollout in progress, evaluate
    its gates on the challenger's observations, and advance, hold or roll back (alerting on a
    rollback). Idempotent per run id.

    Evidence is only what the challenger did not train on: the score step measured it on its
    routed labelled rows outside its training split. A run over the very data the challenger was
    trained on (same sha256: the run that registered it) is not evidence at all: its rows outside
    training are the holdout already used offline (for a classifier also to choose the threshold),
    so the rollout holds and the run does not count toward the bake (a failed drift gate still
    rolls back)."""
    scored: Scored = ctx.needs("score")
    if scored.rollout_id is None:
        return RolledOut(outcome="no_rollout", serving=scored.serving)
    d = ctx.spec.drift
    challenger = str(scored.serving["challenger"])
    monitored = ctx.results.monitor
    report = monitored.reports.get(challenger) if monitored is not None else None
    extra, hold = (), None
    observations = scored.observations
    trained_on = ctx.version(int(challenger)).lineage.get("data_sha256")
    if trained_on and trained_on == ctx.needs("ingest").data_sha256:
        # the run that registered the challenger (or any run over the same file): its rows outside
        # training are the holdout the version was already evaluated (and its threshold chosen) on
        observations = {}
        hold = (f"this run's input is the data v{challenger} was trained and evaluated on; its rows outside training "
                "are that holdout, not new evidence: the rollout waits for a scoring run on new data")
    if report and report["drifted_share"] > d.max_drifted_share:
        names = ", ".join(f["feature"] for f in report["features"] if f["drifted"])
        if d.on_rollout == "rollback":
            extra = (GateResult(metric="drifted_share", comparator="<=", threshold=d.max_drifted_share,
                                value=report["drifted_share"], samples=report["rows"], min_samples=0, outcome="fail"),)
        else:
            hold = hold or f"data drift in {names}"
    decision = ctx.registry.evaluate_rollout(ctx.spec.name, observations, actor=ctx.actor, run_token=ctx.run_id,
                                             extra_results=extra, hold_reason=hold)
    failpoint("rollout.evaluated")
    before = scored.serving
    if decision.outcome == "rolled_back":
        failed = [g for g in decision.results if g.outcome == "fail"]
        ctx.send_alert(ctx.alert(
            "rollout.rollback", f"Rollout rolled back: v{before['challenger']} failed a gate",
            f"Version {before['challenger']} was serving {before['weight']:g}% of traffic and failed its online gate(s); "
            f"all traffic is back on the champion v{before['champion']}. {decision.reason}",
            "Compare the challenger's scored metrics with the champion's (stagewise registry history), check the "
            "scoring data for drift or label problems, then register a fixed version.",
            version=before["challenger"],
            numbers={f"{g.metric} (need {g.comparator} {g.threshold:g}, {g.samples} samples)": g.value for g in failed},
        ))
    return RolledOut(**decision.to_dict(), before=before)


# -------------------------------------------------------------------------------------- publish
def run_metrics(ctx: RunContext, succeeded: bool) -> list[m.Datum]:
    """The CloudWatch data of a run, from its steps' results, alerts and durations."""
    env, model, res = ctx.settings.environment, ctx.spec.name, ctx.results
    new = m.dimensions(env, model, res.register.version if res.register else None)
    data: list[m.Datum] = []
    val = res.validate
    if val:
        data += [
            m.Datum(m.ROWS_VALIDATED, val.rows, "Count", new),
            m.Datum(m.EXPECTATIONS_FAILED, val.failed, "Count", new),
            m.Datum(m.VALIDATION_SUCCESS, 1.0 if val.success else 0.0, "None", new),
        ]
    metrics = res.evaluate.metrics if res.evaluate else {}
    for key, name in m.HOLDOUT_METRICS.items():
        if key in metrics:
            data.append(m.Datum(name, metrics[key], "None", new))
    scored = res.score
    for number, stats in (scored.versions if scored else {}).items():
        dims = m.dimensions(env, model, number)
        if not stats.get("shadow"):
            data.append(m.Datum(m.ROWS_SCORED, stats["rows"], "Count", dims))
        if stats.get("mean_prediction") is not None:
            data.append(m.Datum(m.MEAN_PREDICTION, stats["mean_prediction"], "None", dims))
        for key, name in m.SCORED_METRICS.items():
            if stats.get(key) is not None:
                data.append(m.Datum(name, stats[key], "None", dims))
    for number, weight in (scored.weights if scored else {}).items():
        data.append(m.Datum(m.TRAFFIC_WEIGHT, weight, "Percent", m.dimensions(env, model, number)))
    run = m.model_dimensions(env, model)
    for number, report in (res.monitor.reports if res.monitor else {}).items():
        dims = m.dimensions(env, model, int(number))
        data.append(m.Datum(m.DRIFTED_FEATURE_SHARE, report["drifted_share"], "None", dims))
        for f in report["features"]:
            data.append(m.Datum(m.FEATURE_PSI, f["psi"], "None", {**dims, "Feature": f["feature"]}))
            if f["ks"] is not None:
                data.append(m.Datum(m.FEATURE_KS, f["ks"], "None", {**dims, "Feature": f["feature"]}))
    if res.monitor is not None and res.monitor.alert:
        data.append(m.Datum(m.DRIFT_ALERTS, 1, "Count", run))
    sent = [a for a in ctx.alerts if "message_id" in a]
    if sent:
        data.append(m.Datum(m.ALERTS_SENT, len(sent), "Count", run))
    if res.rollout is not None and res.rollout.outcome == "rolled_back":
        data.append(m.Datum(m.ROLLBACKS, 1, "Count", run))
    if val and not val.success:
        data.append(m.Datum(m.VALIDATION_FAILED, 1, "Count", run))
    for step, seconds in ctx.durations.items():
        data.append(m.Datum(m.STEP_DURATION, seconds, "Seconds", {**new, "Step": step}))
    data.append(m.Datum(m.PIPELINE_SUCCEEDED if succeeded else m.PIPELINE_FAILED, 1, "Count", run))
    return data


def attempt_metrics(ctx: RunContext) -> list[m.Datum]:
    """The data points of an attempt that failed and may be resumed: ``PipelineFailed`` (1) and
    ``AlertsSent`` (the alerts this attempt published), each per model. Sent every attempt."""
    run = m.model_dimensions(ctx.settings.environment, ctx.spec.name)
    sent = [a for a in ctx.alerts if "message_id" in a]
    return [m.Datum(m.PIPELINE_FAILED, 1, "Count", run)] + ([m.Datum(m.ALERTS_SENT, len(sent), "Count", run)] if sent else [])


def metrics_marker_key(model: str, run_id: str) -> str:
    """The data bucket key whose existence means run ``run_id`` sent its outcome's metrics."""
    return f"metrics/{model}/run={run_id}.json"


def send_run_metrics(ctx: RunContext, data: list[m.Datum]) -> m.PublishResult | None:
    """Send ``data`` (``run_metrics``) unless this run already did: write the marker first
    (``If-None-Match``), then ``PutMetricData``. Returns None when an earlier attempt sent them.

    Raises:
        botocore.exceptions.ClientError: writing the marker or sending failed.
    """
    # unique per attempt: objects.put_new takes an object with the same bytes for this call's own
    # write (a retried write whose response was lost), which another attempt's marker must never be
    marker = json.dumps({"run_id": ctx.run_id, "datapoints": len(data), "attempt": uuid.uuid4().hex}).encode()
    if not ctx.objects.put_new(ctx.data_bucket, metrics_marker_key(ctx.spec.name, ctx.run_id), marker, "application/json"):
        return None
    return m.publish(ctx.clients.client("cloudwatch"), data, ctx.resources.metrics_namespace)


def publish(ctx: RunContext) -> Published:
    """Send the run's metrics to CloudWatch (namespace ``Stagewise``), once per run (see the module)."""
    failpoint("publish.before-metrics")
    result = send_run_metrics(ctx, run_metrics(ctx, succeeded=True))
    failpoint("publish.after-metrics")
    if result is None:
        return Published(namespace=ctx.resources.metrics_namespace, datapoints=0, dropped=0, calls=0, already_sent=True)
    return Published(namespace=ctx.resources.metrics_namespace, datapoints=result.sent, dropped=result.dropped, calls=result.calls)
