"""The model steps: ``train`` (XGBoost on the spec's repeatable split), ``evaluate`` (holdout
metrics, the offline gates, the champion on rows neither version trained on) and ``register`` (an
immutable version with its lineage, and the start of its rollout).

The evidence rules (no metric that decides a rollout on rows the model trained on) are told in the
README's "Evidence" section; ``stagewise.pipeline.splitting`` is the membership function.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import time
from importlib.metadata import version as package_version
from typing import Any

import numpy as np
import pandas as pd

from stagewise.pipeline import modeling, spec_store, splitting
from stagewise.pipeline import training_data as td
from stagewise.pipeline.inputs import is_parquet
from stagewise.pipeline.scoring.plan import rows_per_partition
from stagewise.pipeline.steps.context import GateRejected, RunContext, ValidationFailed
from stagewise.pipeline.steps.results import Evaluated, Ingested, Registered, Trained, Validated
from stagewise.platform.runtime.failpoints import failpoint
from stagewise.platform.runtime.objects import sha256_bytes, sha256_file
from stagewise.registry import gates as gatelib
from stagewise.registry.errors import NotFound
from stagewise.registry.records import Gate, GateResult, VersionRecord
from stagewise.registry.service import RolloutPlan


def split_rows(ctx: RunContext, df: pd.DataFrame) -> tuple[splitting.SplitDefinition, np.ndarray]:
    """The version's split definition and holdout mask (``stagewise.pipeline.splitting``): the
    spec's repeatable split of ``df``, with rows on both sides.

    Raises:
        ValidationFailed: the key or time column is unusable, or one side of the split is empty
            (exit 2, alerted, before anything is fitted).
    """
    try:
        split = splitting.define(ctx.spec, df)
        hold = splitting.holdout_mask(split, df)
        if hold.all() or not hold.any():
            raise splitting.SplitError(
                f"the split ({split.describe()}) puts all {len(df):,} rows in {'the holdout' if hold.all() else 'training'}: "
                "add rows, or change split.holdout_fraction")
    except splitting.SplitError as e:
        raise _unsplittable(ctx, e, len(df)) from e
    return split, hold


def _unsplittable(ctx: RunContext, e: splitting.SplitError, rows: int) -> ValidationFailed:
    """The failure (with its alert) of data the spec's split cannot cut into train and holdout."""
    return ValidationFailed(
        str(e),
        ctx.alert("validation.failed", "Validation failed: the data cannot be split into train and holdout",
                  f"{e}. Nothing was trained, registered or scored; what is served is unchanged.",
                  "Fix the data or the spec's split section and re-run.",
                  numbers={"rows": rows}, links={"input": ctx.needs("ingest").data_uri}),
        Validated(success=False, rows=rows, evaluated=0, failed=1, failed_expectations=[str(e)]),
    )


def train(ctx: RunContext) -> Trained:
    """Fit XGBoost on the train split; upload the model (UBJSON), importance and baseline to S3.

    The split is the spec's repeatable split (``stagewise.pipeline.splitting``): which rows are
    holdout depends on each row's key (or time), never on its position, and the definition goes
    into the version's lineage. How the data is held (``training_data.decide``: in memory, or
    streamed by partition with XGBoost's external memory, or a seeded sample) depends on whether
    the input fits the train task's memory and on the spec's ``training`` section; it goes into
    the lineage too (``lineage["training"]``).

    Raises:
        ValidationFailed: the data cannot be split (exit 2, before anything is fitted).
        RuntimeError: neither the input's bytes nor its frame are in memory (validate runs first).
    """
    spec, w = ctx.spec, ctx.work
    ingested: Ingested = ctx.needs("ingest")
    source, name = w.data, ingested.data_name
    if w.frame is None and source is None:
        raise RuntimeError(f"run {ctx.run_id}: train needs the validated input (validate runs first)")
    streamable = source is not None and is_parquet(source, name)
    parts = td.input_plan(source, name, rows_per_partition(ctx.settings.rows_per_partition)) if streamable else None
    rows = len(w.frame) if w.frame is not None else parts.rows if parts is not None else 0
    how = td.decide(spec, rows, td.bytes_per_row(source, name, spec, w.frame), ctx.settings.task_sizes.train.memory_mib, streamable)
    ctx.progress(0, 1, f"training {how.mode.replace('_', ' ')}: {how.reason}")
    training = how.to_lineage()
    if how.mode == "in_memory":
        if w.frame is None:
            w.frame = td.read_frame(source, name, spec)
        df = w.frame
        X = modeling.feature_matrix(df, spec)
        y = df[spec.target.name].to_numpy(dtype="float64")
        split, hold = split_rows(ctx, df)
        train_idx, hold_idx = np.flatnonzero(~hold), np.flatnonzero(hold)
        t = time.perf_counter()
        model = modeling.train_model(X.iloc[train_idx], y[train_idx], spec, progress=lambda d, t: ctx.progress(d, t, "boosting rounds"))
        fit_seconds = time.perf_counter() - t
        w.features, w.hold_idx, w.holdout, w.holdout_features = X, hold_idx, df.iloc[hold_idx], X.iloc[hold_idx]
        w.holdout_true = y[hold_idx]
        train_rows, baseline_X = int(len(train_idx)), X.iloc[train_idx]
    else:
        assert parts is not None  # decide() streams Parquet only
        try:
            split = td.split_definition(source, name, spec, w.frame)
            champion = _current_champion(ctx)
            known = splitting.SplitDefinition.from_lineage(champion.lineage) if champion is not None else None
            streamed = td.train_streaming(source, name, spec, parts, how, split, ctx.workdir, frame=w.frame,
                                          progress=lambda d, t: ctx.progress(d, t, "boosting rounds"),
                                          extra=(known.column,) if known is not None else ())
        except splitting.SplitError as e:
            raise _unsplittable(ctx, e, rows) from e
        model, fit_seconds = streamed.model, streamed.fit_seconds
        w.holdout, w.holdout_features = streamed.holdout, streamed.holdout_features
        w.holdout_true = streamed.holdout[spec.target.name].to_numpy(dtype="float64")
        train_rows, baseline_X = streamed.fitted_rows, streamed.baseline_sample
        training |= {"batches": streamed.batches, "training_split_rows": streamed.train_rows, "fitted_rows": streamed.fitted_rows,
                     "baseline_rows": len(baseline_X), **streamed.details}
    hold_pred = modeling.predict(model, w.holdout_features, spec)
    w.model, w.holdout_pred = model, hold_pred
    model_path = ctx.workdir / "model.ubj"
    model.save_model(model_path)
    artifact_sha = sha256_file(model_path)
    prefix = f"models/{spec.name}/{artifact_sha}"
    ctx.objects.put_file(ctx.artifact_bucket, f"{prefix}/model.ubj", model_path, "application/ubjson")
    importance = modeling.feature_importance(model)
    baseline = modeling.baseline_statistics(baseline_X, spec, predictions=hold_pred)
    del baseline_X
    ctx.objects.put_bytes(ctx.artifact_bucket, f"{prefix}/feature_importance.json", json.dumps(importance).encode(), "application/json")
    baseline_sha = _write_once(ctx, f"{prefix}/baseline.json", json.dumps(baseline).encode())
    failpoint("train.uploaded")
    return Trained(
        fit_seconds=round(fit_seconds, 3), train_rows=train_rows, holdout_rows=int(len(w.holdout)),
        split=split.to_lineage(), artifact_uri=f"s3://{ctx.artifact_bucket}/{prefix}/model.ubj", artifact_sha256=artifact_sha,
        artifact_prefix=prefix, baseline_uri=f"s3://{ctx.artifact_bucket}/{prefix}/baseline.json",
        baseline_sha256=baseline_sha, top_features=list(importance)[:5], training=training,
    )


def _write_once(ctx: RunContext, key: str, data: bytes) -> str:
    """Write ``data`` to the artifact bucket unless ``key`` exists (the artifact's folder is
    content-addressed: the same model trained again keeps the files registered with it first);
    returns the sha256 of what is stored, which the version records."""
    if ctx.objects.put_new(ctx.artifact_bucket, key, data, "application/json"):
        return sha256_bytes(data)
    return sha256_bytes(ctx.objects.get_bytes(ctx.artifact_bucket, key))


def evaluate(ctx: RunContext) -> Evaluated:
    """Holdout metrics; the spec's offline gates; the champion on rows neither version trained on.

    A classifier's decision threshold is chosen here (``modeling.choose_threshold``: best precision
    at recall >= ``decision.min_recall``) and kept as the metric ``threshold``; its precision and
    recall are at that threshold. The new version must not lose to the champion by more than
    ``rollout.champion_tolerance`` of the spec's primary metric (R², or PR-AUC for a classifier)
    (gate ``r2_vs_champion`` / ``pr_auc_vs_champion``, value = new - champion), measured on
    ``champion_comparison``'s rows: the new version's holdout rows that are also outside the
    champion's training split, so the champion is never scored in-sample. With fewer than
    ``rollout.champion_min_samples`` such rows the comparison is inconclusive and holds the new
    version (registered, not rolled out). No comparison when the champion is this very model (an
    earlier attempt of the run registered it).

    ``metrics.json`` beside the artifact is written once (S3 ``If-None-Match``): the artifact is
    content-addressed, so a re-run that trains the same bytes keeps the evaluation that was
    registered with them.
    """
    spec, w = ctx.spec, ctx.work
    trained: Trained = ctx.needs("train")
    y, p = w.holdout_true, w.holdout_pred
    threshold = modeling.choose_threshold(y, p, spec.decision.min_recall) if spec.task == "classification" else None
    metrics = modeling.holdout_metrics(y, p, spec.task, threshold)
    if threshold is not None:
        metrics["threshold"] = threshold  # stored with the version: scoring decides with it
    samples = int(metrics.pop("samples"))
    gates = modeling.evaluate_gates(spec.gates, metrics, samples)
    holdout = w.holdout
    champion = _current_champion(ctx)
    comparison = None
    if champion is not None and champion.artifact_sha256 != trained.artifact_sha256:
        comparison, gate = champion_comparison(ctx, champion)
        gates.append(gate)
    best = None
    if spec.reference:
        module, func = spec.reference.split(":")
        reference = getattr(importlib.import_module(module), func)
        best = modeling.holdout_metrics(y, np.asarray(reference(holdout), dtype="float64"), spec.task)
        best.pop("samples")
    ctx.objects.put_new(
        ctx.artifact_bucket, f"{trained.artifact_prefix}/metrics.json",
        json.dumps({"holdout": metrics, "samples": samples, "best_achievable": best, "champion": comparison}).encode(),
        "application/json",
    )
    return Evaluated(
        metrics=metrics, samples=samples, gates=gates, gates_passed=bool(gates) and all(g.outcome == "pass" for g in gates),
        gates_held=[g.metric for g in gates if g.outcome == "inconclusive" and g.on_inconclusive == "hold"],
        best_achievable=best, champion=comparison,
    )


def champion_comparison(ctx: RunContext, champion: VersionRecord) -> tuple[dict[str, Any], GateResult]:
    """The new version against the champion on the rows neither trained on.

    Rows: the new version's holdout rows (its split) that are also outside the champion's training
    split (``splitting.in_training`` with the champion's recorded definition). Both versions'
    metrics are computed on exactly those rows. Inconclusive (``on_inconclusive="hold"``) when
    they number fewer than ``rollout.champion_min_samples``, when the champion recorded no split
    definition (registered before repeatable splits, or by hand: which rows it trained on is
    unknown), or when it reads other features than this spec.

    Returns:
        ``(record, gate)``: the record (``version``, ``rows``, ``new`` and ``champion`` metrics on
        those rows, ``note``) kept in ``metrics.json`` and the step summary, and the gate result
        ``<primary>_vs_champion`` (value = new - champion, samples = rows).
    """
    spec = ctx.spec
    primary = spec.primary_metric
    gate = Gate(metric=f"{primary}_vs_champion", comparator=">=", threshold=-spec.rollout.champion_tolerance,
                min_samples=spec.rollout.champion_min_samples, on_inconclusive="hold")
    w = ctx.work
    holdout = w.holdout
    definition = splitting.SplitDefinition.from_lineage(champion.lineage)
    record: dict[str, Any] = {"version": champion.version, "rows": 0, "new": None, "champion": None, "note": ""}
    if champion.lineage.get("features") != spec.feature_names:
        record["note"] = f"v{champion.version} reads other features than this spec: compare them online (promote by hand)"
    elif definition is None:
        record["note"] = (f"v{champion.version} recorded no split definition (registered before repeatable splits, or by hand): "
                          "the rows it trained on are unknown")
    elif definition.column not in holdout.columns:
        record["note"] = f"the data has no {definition.column!r}, the column v{champion.version}'s split reads"
    if record["note"]:
        return record, gatelib.evaluate([gate], {}, {gate.metric: record["note"]})[0]
    try:
        outside = ~splitting.in_training(definition, holdout)
    except splitting.SplitError as e:
        record["note"] = f"v{champion.version}'s split cannot be applied to this data: {e}"
        return record, gatelib.evaluate([gate], {}, {gate.metric: record["note"]})[0]
    rows = np.flatnonzero(outside)
    record["rows"] = int(len(rows))
    value = None
    if len(rows) >= 2:
        y = w.holdout_true[rows]
        champ_pred = modeling.predict(ctx.model_of(champion), w.holdout_features.iloc[rows], spec)
        new = modeling.holdout_metrics(y, w.holdout_pred[rows], spec.task)
        old = modeling.holdout_metrics(y, champ_pred, spec.task)
        record.update(new={k: v for k, v in new.items() if k != "samples"}, champion={k: v for k, v in old.items() if k != "samples"})
        value = new[primary] - old[primary]
    if len(rows) < gate.min_samples:
        record["note"] = (f"{len(rows):,} of the {len(holdout):,} holdout rows are outside v{champion.version}'s training split "
                          f"(split definitions differ); the comparison needs {gate.min_samples:,}")
    if len(rows) < len(holdout) and not record["note"]:
        record["note"] = f"on the {len(rows):,} holdout rows outside v{champion.version}'s training split"
    return record, gatelib.evaluate([gate], {gate.metric: (value, len(rows))}, {gate.metric: record["note"]})[0]


def _current_champion(ctx: RunContext) -> VersionRecord | None:
    try:
        return ctx.registry.champion(ctx.spec.name)
    except NotFound:
        return None


def rollout_plan(ctx: RunContext) -> RolloutPlan:
    """The rollout plan of this model in this environment: the spec's per-environment override or
    the stack's ``rolloutPlan``; the spec's bake or the stack's ``bake``; the spec's online gates."""
    spec, bake = ctx.spec, ctx.spec.rollout.bake
    return RolloutPlan.for_environment(
        ctx.settings, spec.rollout.plan.get(ctx.settings.environment),  # type: ignore[call-overload]
        bake.min_minutes if bake else None, bake.min_scoring_runs if bake else None,
        gates=modeling.registry_gates(spec.rollout.gates))


def register(ctx: RunContext) -> Registered:
    """Register an immutable version with its lineage, and start its rollout if it passed.

    The new version becomes champion (the model's first), challenger at the plan's first step,
    or candidate (another rollout is in progress); when the champion comparison was inconclusive
    it is registered but held (``summary["held"]``: not rolled out until promoted by hand). The
    lineage records the split definition (``lineage["split"]``: which rows it trained on, for any
    later data) and where the spec is kept (``spec_uri``). Idempotent: the token hashes (model,
    data sha256, spec digest, package version, artifact sha256), so re-running the same run
    returns the version it made.

    Raises:
        GateRejected: an offline gate did not pass (the version is recorded as ``rejected``).
    """
    spec = ctx.spec
    ingested: Ingested = ctx.needs("ingest")
    validated: Validated = ctx.needs("validate")
    trained: Trained = ctx.needs("train")
    evaluated: Evaluated = ctx.needs("evaluate")
    pkg = package_version("stagewise")
    lineage = {
        "run_id": ctx.run_id,
        "data_uri": ingested.data_uri,
        "data_sha256": ingested.data_sha256,
        "validation_result_uri": validated.result_uri,
        "validation_success": True,
        "data_docs_uri": validated.data_docs_uri,
        "spec_digest": spec.digest(),
        "task": spec.task,
        "features": spec.feature_names,
        "hyperparameters": dict(spec.xgboost),
        "package_version": pkg,
        "xgboost_version": _version("xgboost"),
        "environment": ctx.settings.environment,
        "account_id": ctx.settings.account_id,
        "rows": {"train": trained.train_rows, "holdout": evaluated.samples},
        "split": trained.split,
        "training": trained.training,
        "spec_uri": spec_store.store_spec(ctx.objects, ctx.artifact_bucket, spec),
        **({"baseline_sha256": trained.baseline_sha256} if trained.baseline_sha256 else {}),
    }
    token = hashlib.sha256(
        "|".join([spec.name, ingested.data_sha256, spec.digest(), pkg, trained.artifact_sha256]).encode()
    ).hexdigest()
    prefix = trained.artifact_prefix
    plan = rollout_plan(ctx)
    reg = ctx.registry.register_version(
        spec.name,
        artifact_uri=f"s3://{ctx.artifact_bucket}/{prefix}/model.ubj",
        artifact_sha256=trained.artifact_sha256,
        metrics=evaluated.metrics,
        gates=evaluated.gates,
        lineage=lineage,
        actor=ctx.actor,
        token=token,
        baseline_uri=f"s3://{ctx.artifact_bucket}/{prefix}/baseline.json",
        description=spec.description,
        rollout=plan,
        online_gates=plan.gates,
    )
    v = reg.version
    failpoint("register.done")
    held = [g for g in v.gates if g.outcome == "inconclusive" and g.on_inconclusive == "hold"]
    failed = [g for g in v.gates if g.outcome == "fail" or (g.outcome == "inconclusive" and g.on_inconclusive == "reject")]
    result = Registered(
        version=v.version, status=v.status, stage=reg.stage,
        held=[g.describe() for g in held] if v.status != "rejected" and reg.stage == "registered" else [],
        **({"failed_gates": [g.describe() for g in failed]} if v.status == "rejected" else {}),
        created=reg.created, champion=reg.champion, serving=reg.model.serving(), plan=list(plan.steps),
        artifact_uri=v.artifact_uri, artifact_sha256=v.artifact_sha256,
    )
    if v.status == "rejected":
        raise GateRejected(
            f"version {v.version} rejected: " + "; ".join(g.describe() for g in failed),
            ctx.alert(
                "gate.failed", f"Offline gate failed: version {v.version} rejected",
                f"Version {v.version} did not pass its offline gates and was recorded as rejected. "
                f"What is served is unchanged (champion: {reg.champion or 'none'}).",
                "Look at the holdout metrics and the data; retrain with more or better data or tuned "
                "hyperparameters in the model spec.",
                version=v.version,
                numbers={f"{g.metric} (need {g.comparator} {g.threshold:g} on >= {g.min_samples} rows, {g.samples} rows)": g.value
                         for g in failed},
                links={"artifact": v.artifact_uri},
            ),
            result,
        )
    return result


def _version(dist: str) -> str:
    try:
        return package_version(dist)
    except Exception:  # a distribution may be installed under another name (xgboost-cpu)
        mod = importlib.import_module(dist)
        return getattr(mod, "__version__", "unknown")
