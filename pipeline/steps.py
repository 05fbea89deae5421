"""The pipeline's steps: ingest, validate, train, evaluate, register, score, publish.

Each step is a function ``step(ctx: RunContext) -> dict`` returning a JSON-ready summary. Steps read
their inputs from and write their outputs to S3 (as they do in their containers on AWS); in-process
they also leave the objects later steps need in ``ctx.memo`` so nothing is read twice.

A step that must stop the pipeline raises ``PipelineStop`` carrying the exit code and the alert to
publish: ``ValidationFailed`` (exit 2: invalid data never reaches training) or ``GateRejected``
(exit 3: the version is recorded as rejected and nothing served changes).

S3 layout (bucket names from ``stagewise.platform.resources``)::

    data bucket      raw/<model>/<data sha256>/<file name>             the input, content-addressed
                     validation/<model>/<run id>/result.json           GE validation result
                     validation/<model>/<run id>/data-docs/...         GE Data Docs (HTML)
                     staging/predictions/<model>/run=<run id>/part-00000.parquet  (until every part is scored)
                     predictions/<model>/run=<run id>/part-00000.parquet, _manifest.json  (published)
    artifact bucket  models/<model>/<artifact sha256>/model.ubj        XGBoost model (UBJSON)
                     models/<model>/<artifact sha256>/metrics.json, feature_importance.json, baseline.json
                     models/<model>/specs/<spec sha256>.json                 the spec a version was trained with
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from stagewise.monitoring import drift as driftlib
from stagewise.monitoring import metrics as m
from stagewise.monitoring.alerts import Alert, publish_alert
from stagewise.pipeline import handover, modeling, spec_store, splitting
from stagewise.pipeline.spec import ModelSpec
from stagewise.platform.runtime.objects import ObjectStore, S3Uri, sha256_bytes, sha256_file
from stagewise.platform.contract import ExitCode
from stagewise.platform.runtime.aws import AwsClients
from stagewise.platform.runtime.failpoints import failpoint
from stagewise.platform.runtime.idhash import read_id_salt
from stagewise.platform.resources import EnvironmentResources
from stagewise.registry import gates as gatelib
from stagewise.registry.dynamodb import DynamoDBRegistryStore
from stagewise.registry.errors import NotFound
from stagewise.registry.records import Gate, GateResult, VersionRecord
from stagewise.registry.service import Registry, RolloutPlan
from stagewise.stacks.settings import EnvironmentSettings

Progress = Callable[[int, int, str], None]


class PipelineStop(Exception):
    """A step decided the run must stop. Carries the process exit code and the alert to publish."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, alert: Alert, summary: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.alert = alert
        self.summary = summary or {}


class ValidationFailed(PipelineStop):
    """The input failed its expectation suite (or could not be read): nothing trains."""

    exit_code = ExitCode.VALIDATION_FAILED


class GateRejected(PipelineStop):
    """The new version failed an offline gate: it is recorded as rejected, nothing served changes."""

    exit_code = ExitCode.GATE_FAILED


@dataclass
class RunContext:
    """Everything a step needs for one run.

    Attributes:
        run_id: unique id of the run (``20261122T041500Z-1a2b3c``).
        data_source: a local file path or an ``s3://`` URI of the input (parquet or CSV).
        workdir: local folder for the run's files (Data Docs copy, model file).
        actor: who runs it (the assumed role's ARN, or ``--actor``).
        memo: objects handed from step to step in-process (frames, the fitted model, results).
        progress: ``progress(done, total, message)`` for long steps.
    """

    run_id: str
    settings: EnvironmentSettings
    resources: EnvironmentResources
    clients: AwsClients
    spec: ModelSpec
    data_source: str
    workdir: Path
    actor: str
    memo: dict[str, Any] = field(default_factory=dict)
    progress: Progress = lambda done, total, message: None
    durations: dict[str, float] = field(default_factory=dict)

    @property
    def objects(self) -> ObjectStore:
        """S3 access for the run."""
        return ObjectStore(self.clients.client("s3"))

    @property
    def registry(self) -> Registry:
        """The environment's registry."""
        return Registry(DynamoDBRegistryStore(self.clients.client("dynamodb"), self.resources.registry_table.name))

    @property
    def data_bucket(self) -> str:
        return self.resources.data_bucket.name

    @property
    def artifact_bucket(self) -> str:
        return self.resources.artifact_bucket.name

    def send_alert(self, alert: Alert) -> dict[str, Any]:
        """Publish ``alert`` to the environment's topic now; the outcome is kept in ``memo["alerts"]``
        (a failure to publish is recorded, never raised over the failure being reported)."""
        entry: dict[str, Any] = {"event": alert.event, "subject": alert.subject, "topic_arn": self.resources.alert_topic_arn}
        try:
            entry["message_id"] = publish_alert(self.clients.client("sns"), self.resources.alert_topic_arn, alert)
        except Exception as e:  # noqa: BLE001
            entry["error"] = f"alert not published: {e}"
        self.memo.setdefault("alerts", []).append(entry)
        return entry

    def alert(self, event: str, title: str, details: str, next_steps: str, **kw: Any) -> Alert:
        """An alert about this run, filled with its environment, model and run id."""
        return Alert(
            event=event, title=title, environment=self.settings.environment, model=self.spec.name,
            details=details, next_steps=next_steps, run_id=self.run_id, **kw,
        )


# --------------------------------------------------------------------------------------- ingest
def ingest(ctx: RunContext) -> dict[str, Any]:
    """Put the input in the data bucket under its content hash (skipped if already there)."""
    src = ctx.data_source
    if src.startswith("s3://"):
        uri = S3Uri.parse(src)
        data = ctx.objects.get_bytes(uri.bucket, uri.key)
        digest = sha256_bytes(data)
        ctx.memo.update(data_uri=str(uri), data_sha256=digest, data_bytes=data, data_name=Path(uri.key).name)
        return {"data_uri": str(uri), "data_sha256": digest, "bytes": len(data), "uploaded": False}
    path = Path(src)
    if not path.is_file():
        raise FileNotFoundError(f"input data {path} does not exist; create it with `stagewise data generate --out {path}`")
    data = path.read_bytes()
    digest = sha256_bytes(data)
    key = f"raw/{ctx.spec.name}/{digest}/{path.name}"
    uploaded = ctx.objects.head_sha256(ctx.data_bucket, key) != digest
    if uploaded:
        ctx.objects.put_bytes(ctx.data_bucket, key, data)
    uri = f"s3://{ctx.data_bucket}/{key}"
    ctx.memo.update(data_uri=uri, data_sha256=digest, data_bytes=data, data_name=path.name)
    return {"data_uri": uri, "data_sha256": digest, "bytes": len(data), "uploaded": uploaded}


def read_table(data: bytes, name: str) -> pd.DataFrame:
    """Parse input bytes as parquet (``.parquet``/``.pq`` or parquet magic bytes) or CSV.

    Raises:
        ValueError: the bytes are empty or not a readable parquet/CSV file (message says which).
    """
    if not data:
        raise ValueError(f"{name} is empty (0 bytes)")
    try:
        if name.endswith((".parquet", ".pq")) or data[:4] == b"PAR1":
            return pd.read_parquet(io.BytesIO(data))
        return pd.read_csv(io.BytesIO(data))
    except Exception as e:  # pandas/pyarrow raise many types for unreadable files
        raise ValueError(f"{name} is not a readable parquet or CSV file: {e}") from e


# ------------------------------------------------------------------------------------- validate
def validate(ctx: RunContext) -> dict[str, Any]:
    """Run the spec's expectation suite (Great Expectations) and publish the result and Data Docs.

    Raises:
        ValidationFailed: the data failed an expectation or could not be read.
    """
    from stagewise.pipeline.validation import validate_frame  # GE import is slow: only when validating

    prefix = f"validation/{ctx.spec.name}/{ctx.run_id}"
    try:
        df = read_table(ctx.memo["data_bytes"], ctx.memo["data_name"])
    except ValueError as e:
        ctx.memo["validation"] = {"success": False, "rows": 0, "evaluated": 0, "failed": 1}
        raise ValidationFailed(
            str(e),
            ctx.alert(
                "validation.failed", "Validation failed: input unreadable", f"The input {ctx.memo['data_uri']} could not be read: {e}",
                "Check the file is a parquet (or CSV) export of the dataset and re-run `stagewise run --data FILE`.",
                numbers={"rows": 0}, links={"input": ctx.memo["data_uri"]},
            ),
            {"failed_expectations": [str(e)]},
        ) from e
    ctx.progress(0, 1, f"validating {len(df):,} rows against {ctx.spec.name!r} suite")
    docs_dir = ctx.workdir / "data-docs"
    ignored = [c for c in ctx.spec.ignored_columns if c in df.columns]  # e.g. another model's label
    df = modeling.conform(df.drop(columns=ignored) if ignored else df, ctx.spec)  # number-coded categories, whole floats
    report = validate_frame(df, ctx.spec, docs_dir, run_name=ctx.run_id)
    result_key = f"{prefix}/result.json"
    ctx.objects.put_bytes(ctx.data_bucket, result_key, json.dumps(report.result, default=str).encode(), "application/json")
    failpoint("validate.result-written")
    docs_files = ctx.objects.upload_dir(ctx.data_bucket, f"{prefix}/data-docs", docs_dir) if docs_dir.exists() else 0
    docs_index = str(report.docs_index) if report.docs_index else None
    summary = {
        "success": report.success,
        "rows": report.row_count,
        "evaluated": report.evaluated,
        "failed": len(report.failed),
        "failed_expectations": [f.description for f in report.failed],
        "result_uri": f"s3://{ctx.data_bucket}/{result_key}",
        "data_docs_uri": f"s3://{ctx.data_bucket}/{prefix}/data-docs/index.html" if docs_files else None,
        "data_docs_local": docs_index,
    }
    ctx.memo["validation"] = summary
    if not report.success:
        raise ValidationFailed(
            f"{len(report.failed)} of {report.evaluated} expectations failed",
            ctx.alert(
                "validation.failed",
                f"Validation failed: {len(report.failed)} of {report.evaluated} expectations",
                "The input failed the expectation suite, so nothing was trained, registered or scored. "
                "What is served is unchanged.\n" + "\n".join(f"  * {f.description}" for f in report.failed),
                "Fix the data (or, if the data is right and the suite is wrong, the spec's features/expectations) "
                "and re-run. Open the Data Docs for the full result.",
                numbers={"rows": report.row_count, "expectations evaluated": report.evaluated, "expectations failed": len(report.failed)},
                links={"input": ctx.memo["data_uri"], "validation result": summary["result_uri"], "data docs": summary["data_docs_uri"] or "-"},
            ),
            summary,
        )
    ctx.memo["frame"] = df
    return summary


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
        raise ValidationFailed(
            str(e),
            ctx.alert("validation.failed", "Validation failed: the data cannot be split into train and holdout",
                      f"{e}. Nothing was trained, registered or scored; what is served is unchanged.",
                      "Fix the data or the spec's split section and re-run.",
                      numbers={"rows": len(df)}, links={"input": ctx.memo["data_uri"]}),
            {"failed_expectations": [str(e)]},
        ) from e
    return split, hold


# ---------------------------------------------------------------------------------------- train
def train(ctx: RunContext) -> dict[str, Any]:
    """Fit XGBoost on the train split; upload the model (UBJSON), importance and baseline to S3.

    The split is the spec's repeatable split (``stagewise.pipeline.splitting``): which rows are
    holdout depends on each row's key (or time), never on its position, and the definition goes
    into the version's lineage.
    """
    df: pd.DataFrame = ctx.memo["frame"]
    spec = ctx.spec
    X = modeling.feature_matrix(df, spec)
    y = df[spec.target.name].to_numpy(dtype="float64")
    split, hold = split_rows(ctx, df)
    train_idx, hold_idx = np.flatnonzero(~hold), np.flatnonzero(hold)
    t = time.perf_counter()
    model = modeling.train_model(X.iloc[train_idx], y[train_idx], spec, progress=lambda d, t: ctx.progress(d, t, "boosting rounds"))
    fit_seconds = time.perf_counter() - t
    hold_pred = modeling.predict(model, X.iloc[hold_idx], spec)
    model_path = ctx.workdir / "model.ubj"
    model.save_model(model_path)
    artifact_sha = sha256_file(model_path)
    prefix = f"models/{spec.name}/{artifact_sha}"
    ctx.objects.put_file(ctx.artifact_bucket, f"{prefix}/model.ubj", model_path, "application/ubjson")
    importance = modeling.feature_importance(model)
    baseline = modeling.baseline_statistics(X.iloc[train_idx], spec, predictions=hold_pred)
    ctx.objects.put_bytes(ctx.artifact_bucket, f"{prefix}/feature_importance.json", json.dumps(importance).encode(), "application/json")
    ctx.objects.put_bytes(ctx.artifact_bucket, f"{prefix}/baseline.json", json.dumps(baseline).encode(), "application/json")
    failpoint("train.uploaded")
    ctx.memo.update(
        model=model, hold_idx=hold_idx, holdout_true=y[hold_idx], holdout_pred=hold_pred, features=X, split=split.to_lineage(),
        artifact_sha256=artifact_sha, artifact_prefix=prefix,
    )
    top = list(importance)[:5]
    return {
        "fit_seconds": round(fit_seconds, 3),
        "train_rows": int(len(train_idx)),
        "holdout_rows": int(len(hold_idx)),
        "split": split.to_lineage(),
        "artifact_uri": f"s3://{ctx.artifact_bucket}/{prefix}/model.ubj",
        "artifact_sha256": artifact_sha,
        "baseline_uri": f"s3://{ctx.artifact_bucket}/{prefix}/baseline.json",
        "top_features": top,
    }


# ------------------------------------------------------------------------------------- evaluate
def evaluate(ctx: RunContext) -> dict[str, Any]:
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
    spec = ctx.spec
    y, p = ctx.memo["holdout_true"], ctx.memo["holdout_pred"]
    threshold = modeling.choose_threshold(y, p, spec.decision.min_recall) if spec.task == "classification" else None
    metrics = modeling.holdout_metrics(y, p, spec.task, threshold)
    if threshold is not None:
        metrics["threshold"] = threshold  # stored with the version: scoring decides with it
    samples = int(metrics.pop("samples"))
    gates = modeling.evaluate_gates(spec.gates, metrics, samples)
    holdout = ctx.memo["frame"].iloc[ctx.memo["hold_idx"]]
    champion = _current_champion(ctx)
    comparison = None
    if champion is not None and champion.artifact_sha256 != ctx.memo["artifact_sha256"]:
        comparison, gate = champion_comparison(ctx, champion)
        gates.append(gate)
    best = None
    if spec.reference:
        module, func = spec.reference.split(":")
        reference = getattr(importlib.import_module(module), func)
        best = modeling.holdout_metrics(ctx.memo["holdout_true"], np.asarray(reference(holdout), dtype="float64"), spec.task)
        best.pop("samples")
    ctx.objects.put_new(
        ctx.artifact_bucket, f"{ctx.memo['artifact_prefix']}/metrics.json",
        json.dumps({"holdout": metrics, "samples": samples, "best_achievable": best, "champion": comparison}).encode(),
        "application/json",
    )
    ctx.memo.update(metrics=metrics, gates=gates, samples=samples, best=best)
    return {
        "metrics": metrics,
        "samples": samples,
        "gates": [g.model_dump() for g in gates],
        "gates_passed": bool(gates) and all(g.outcome == "pass" for g in gates),
        "gates_held": [g.metric for g in gates if g.outcome == "inconclusive" and g.on_inconclusive == "hold"],
        "best_achievable": best,
        "champion": comparison,
    }


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
    frame, hold_idx = ctx.memo["frame"], ctx.memo["hold_idx"]
    definition = splitting.SplitDefinition.from_lineage(champion.lineage)
    record: dict[str, Any] = {"version": champion.version, "rows": 0, "new": None, "champion": None, "note": ""}
    if champion.lineage.get("features") != spec.feature_names:
        record["note"] = f"v{champion.version} reads other features than this spec: compare them online (promote by hand)"
    elif definition is None:
        record["note"] = (f"v{champion.version} recorded no split definition (registered before repeatable splits, or by hand): "
                          "the rows it trained on are unknown")
    elif definition.column not in frame.columns:
        record["note"] = f"the data has no {definition.column!r}, the column v{champion.version}'s split reads"
    if record["note"]:
        return record, gatelib.evaluate([gate], {}, {gate.metric: record["note"]})[0]
    try:
        outside = ~splitting.in_training(definition, frame.iloc[hold_idx])
    except splitting.SplitError as e:
        record["note"] = f"v{champion.version}'s split cannot be applied to this data: {e}"
        return record, gatelib.evaluate([gate], {}, {gate.metric: record["note"]})[0]
    rows = np.flatnonzero(outside)
    record["rows"] = int(len(rows))
    value = None
    if len(rows) >= 2:
        y = ctx.memo["holdout_true"][rows]
        champ_pred = modeling.predict(load_version_model(ctx, champion), ctx.memo["features"].iloc[hold_idx[rows]], spec)
        new = modeling.holdout_metrics(y, ctx.memo["holdout_pred"][rows], spec.task)
        old = modeling.holdout_metrics(y, champ_pred, spec.task)
        record.update(new={k: v for k, v in new.items() if k != "samples"}, champion={k: v for k, v in old.items() if k != "samples"})
        value = new[primary] - old[primary]
    if len(rows) < gate.min_samples:
        record["note"] = (f"{len(rows):,} of the {len(hold_idx):,} holdout rows are outside v{champion.version}'s training split "
                          f"(split definitions differ); the comparison needs {gate.min_samples:,}")
    if len(rows) < len(hold_idx) and not record["note"]:
        record["note"] = f"on the {len(rows):,} holdout rows outside v{champion.version}'s training split"
    return record, gatelib.evaluate([gate], {gate.metric: (value, len(rows))}, {gate.metric: record["note"]})[0]


def _current_champion(ctx: RunContext) -> VersionRecord | None:
    try:
        return ctx.registry.champion(ctx.spec.name)
    except NotFound:
        return None


def version_record(ctx: RunContext, number: int) -> VersionRecord:
    """Version ``number`` of the run's model, read from the registry once per run (versions are
    immutable, so the cached record never goes stale)."""
    cache = ctx.memo.setdefault("version_records", {})
    if number not in cache:
        cache[number] = ctx.registry.get_version(ctx.spec.name, number)
    return cache[number]


def load_version_model(ctx: RunContext, version: VersionRecord) -> Any:
    """The fitted model of a registered version, its artifact's sha256 verified (cached per run).

    Raises:
        StorageError: the artifact is missing or its bytes differ from the registered sha256.
    """
    from stagewise.pipeline.scoring import load_artifact

    cache = ctx.memo.setdefault("models", {})
    if version.artifact_sha256 == ctx.memo.get("artifact_sha256") and "model" in ctx.memo:
        cache.setdefault(version.artifact_sha256, ctx.memo["model"])  # trained in this run: no download
    return load_artifact(ctx.objects, version, cache)


def load_baseline(ctx: RunContext, version: VersionRecord) -> dict[str, Any] | None:
    """The baseline statistics stored with ``version`` (``baseline.json``), cached per run; None if
    the version has none (e.g. registered by hand)."""
    cache = ctx.memo.setdefault("baselines", {})
    if version.version not in cache:
        if not version.baseline_uri:
            cache[version.version] = None
        else:
            uri = S3Uri.parse(version.baseline_uri)
            cache[version.version] = json.loads(ctx.objects.get_bytes(uri.bucket, uri.key))
    return cache[version.version]


# ------------------------------------------------------------------------------------- register
def rollout_plan(ctx: RunContext) -> RolloutPlan:
    """The rollout plan of this model in this environment: the spec's per-environment override or
    the stack's ``rolloutPlan``; the spec's bake or the stack's ``bake``; the spec's online gates."""
    spec, bake = ctx.spec, ctx.spec.rollout.bake
    return RolloutPlan.for_environment(
        ctx.settings, spec.rollout.plan.get(ctx.settings.environment),  # type: ignore[call-overload]
        bake.min_minutes if bake else None, bake.min_scoring_runs if bake else None,
        gates=modeling.registry_gates(spec.rollout.gates))


def register(ctx: RunContext) -> dict[str, Any]:
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
    pkg = package_version("stagewise")
    lineage = {
        "run_id": ctx.run_id,
        "data_uri": ctx.memo["data_uri"],
        "data_sha256": ctx.memo["data_sha256"],
        "validation_result_uri": ctx.memo["validation"]["result_uri"],
        "validation_success": True,
        "data_docs_uri": ctx.memo["validation"]["data_docs_uri"],
        "spec_digest": spec.digest(),
        "task": spec.task,
        "features": spec.feature_names,
        "hyperparameters": dict(spec.xgboost),
        "package_version": pkg,
        "xgboost_version": _version("xgboost"),
        "environment": ctx.settings.environment,
        "account_id": ctx.settings.account_id,
        "rows": {"train": int(len(ctx.memo["frame"]) - ctx.memo["samples"]), "holdout": ctx.memo["samples"]},
        "split": ctx.memo["split"],
        "spec_uri": spec_store.store_spec(ctx.objects, ctx.artifact_bucket, spec),
    }
    token = hashlib.sha256(
        "|".join([spec.name, ctx.memo["data_sha256"], spec.digest(), pkg, ctx.memo["artifact_sha256"]]).encode()
    ).hexdigest()
    prefix = ctx.memo["artifact_prefix"]
    plan = rollout_plan(ctx)
    reg = ctx.registry.register_version(
        spec.name,
        artifact_uri=f"s3://{ctx.artifact_bucket}/{prefix}/model.ubj",
        artifact_sha256=ctx.memo["artifact_sha256"],
        metrics=ctx.memo["metrics"],
        gates=ctx.memo["gates"],
        lineage=lineage,
        actor=ctx.actor,
        token=token,
        baseline_uri=f"s3://{ctx.artifact_bucket}/{prefix}/baseline.json",
        description=spec.description,
        rollout=plan,
        online_gates=plan.gates,
    )
    v = reg.version
    ctx.memo.update(version=v.version, champion=reg.champion)
    failpoint("register.done")
    held = [g for g in v.gates if g.outcome == "inconclusive" and g.on_inconclusive == "hold"]
    summary = {
        "version": v.version,
        "status": v.status,
        "stage": reg.stage,
        "held": [g.describe() for g in held] if v.status != "rejected" and reg.stage == "registered" else [],
        "created": reg.created,
        "champion": reg.champion,
        "serving": reg.model.serving(),
        "plan": list(plan.steps),
        "artifact_uri": v.artifact_uri,
        "artifact_sha256": v.artifact_sha256,
    }
    if v.status == "rejected":
        failed = [g for g in v.gates if g.outcome == "fail" or (g.outcome == "inconclusive" and g.on_inconclusive == "reject")]
        summary["failed_gates"] = [g.describe() for g in failed]
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
            summary,
        )
    return summary


# ---------------------------------------------------------------------------------------- score
def score(ctx: RunContext) -> dict[str, Any]:
    """Score every record as the registry says, partition by partition (``stagewise.pipeline.scoring``).

    One registry read for the model record (routing is frozen for the run); each key routed
    champion/challenger by its sticky hash (shadow mode: the challenger scores every record into
    separate parts but serves none); artifacts' sha256 verified. Stages one
    ``(id, prediction, model_version)`` part per partition in the data bucket; with labels
    present, measures each version's R², RMSE, MAE on the rows it scored.

    Which partitions: ``ctx.memo["partition"] = (index, count)`` (an AWS Map task) scores that
    one and leaves its part staged (the report group publishes them all); otherwise all of them,
    in a process pool of ``min(partitions, cores, scoringConcurrency)`` workers when there is more
    than one, else in-process (reusing the validated frame when it is in memory), and then
    publishes them (``scoring.publish_predictions``: parts to their final keys, the manifest last).

    Idempotent per run id: if the run's predictions are already published (an earlier attempt
    died later on), nothing is scored again; the manifest's hand-over and summary are used.

    Raises:
        RuntimeError: the model has no champion.
        PartitionError: the given count differs from the input's plan (the input changed).
    """
    from stagewise.pipeline import scoring

    spec = ctx.spec
    given = ctx.memo.get("partition")
    if given is None and (done := scoring.read_manifest(ctx.objects, ctx.data_bucket, spec.name, ctx.run_id)):
        # an earlier attempt of this run published: report that scoring, routed as it was then
        # (the rollout controller may have moved since), instead of scoring again
        ctx.memo.update({k: handover.decode(k, v) for k, v in done["memo"].items()})
        scoring.discard_staged(ctx.objects, ctx.data_bucket, spec.name, ctx.run_id)  # if it died before it did
        return {**done["summary"], "already_published": True}
    record = ctx.registry.get_model(spec.name)
    if record.champion is None:
        raise RuntimeError(f"model {spec.name!r} has no champion to score with; run `stagewise run` to train one")
    r = record.rollout
    numbers = sorted({record.champion, *([r.challenger] if r else [])})
    versions = {n: version_record(ctx, n) for n in numbers}
    frame = ctx.memo.get("frame")
    source = _local_source(ctx) if frame is None or "data_bytes" not in ctx.memo else None
    plan = scoring.plan_source(source or ctx.memo["data_bytes"], ctx.memo["data_name"])
    indices = list(range(plan.count)) if given is None else [given[0]]
    if given is not None and given[1] != plan.count:
        raise scoring.PartitionError(
            f"asked for partition {given[0]} of {given[1]}, but the input {ctx.memo['data_uri']} has {plan.count} "
            "partition(s); it changed after validation: start a new run")
    workers = min(len(indices), os.cpu_count() or 1, ctx.settings.scoring_concurrency)
    if workers > 1:  # worker processes read their row groups from a file
        source = source or _local_source(ctx)
    salt = read_id_salt(ctx.clients, ctx.resources)
    job = scoring.ScoringJob(
        target=ctx.clients.target, data_bucket=ctx.data_bucket, spec=spec, run_id=ctx.run_id, record=record,
        versions=versions, baselines={n: load_baseline(ctx, versions[n]) for n in numbers},
        source=str(source or ctx.data_source), source_name=ctx.memo["data_name"], plan=plan, workdir=str(ctx.workdir / "score"),
        id_salt=salt.key,
    )
    ctx.progress(0, len(indices), f"scoring {plan.rows:,} rows in {plan.count} partition(s)"
                 + (f", {r.weight:g}% to v{r.challenger}" if r else ""))
    if workers > 1:
        results = scoring.score_partitions(job, indices, workers, progress=ctx.progress)
    else:
        results = [scoring.score_partition(job, i, ctx.objects, lambda v: load_version_model(ctx, v), frame=frame,
                                           features=ctx.memo.get("features") if frame is not None else None,
                                           progress=ctx.progress) for i in indices]
    merged = scoring.merge_partitions(results)
    per_version = merged["per_version"]
    weights = {record.champion: 100.0 - (r.weight if r else 0.0)}
    if r is not None:
        weights[r.challenger] = r.weight
    ctx.memo.update(rows_scored=merged["rows_scored"], per_version=per_version, weights=weights,
                    observations=challenger_observations(per_version, record.serving()),
                    drift_counts=merged["drift_counts"], rollout_id=r.id if r else None, serving=record.serving())
    summary = {
        "rows_scored": merged["rows_scored"],
        "serving": record.serving(),
        "versions": per_version,
        "partitions": {"count": plan.count, "scored": indices, "processes": max(1, workers)},
        "predict_seconds": round(merged["predict_seconds"], 3),
        "id_hash": {"column": job.id_hash_column, **salt.describe()},
    }
    if given is not None:  # a Map task stages its part; the report group publishes them all
        ctx.memo["review_candidates"] = results[0]["review"]  # the report group merges every partition's
        return summary | {k: results[0][k] for k in ("staged_uri", "staged_shadow_uri", "staged_results")}
    summary |= predictions_summary(ctx.data_bucket, spec.name, ctx.run_id, plan.count, bool(merged["staged_shadow_parts"]))
    queue = review_queue(spec, [r["review"] for r in results])
    if queue is not None:
        summary["review_queue"] = {"rows": len(queue), "uri": summary["manifest_uri"].rsplit("/", 1)[0] + "/review_queue.parquet",
                                   "reasons": queue["reason"].value_counts().to_dict()}
    scoring.publish_predictions(ctx.objects, ctx.data_bucket, spec.name, ctx.run_id, results,
                                handover.encode({k: ctx.memo[k] for k in handover.SCORE_KEYS}), handover.encode(summary),
                                data=input_reference(ctx), review_queue=queue)
    return summary


def review_queue(spec: ModelSpec, candidates: list[list[dict[str, Any]]]) -> pd.DataFrame | None:
    """The run's review queue from each partition's candidates (None when the spec turns it off)."""
    from stagewise.pipeline import review

    if not spec.review.size:
        return None
    return review.merge([pd.DataFrame.from_records(c) for c in candidates if c], spec.review.size)


def input_reference(ctx: RunContext) -> dict[str, Any]:
    """The run's input as a manifest records it: ``uri`` (``s3://``), ``sha256``, ``name``."""
    return {"uri": ctx.memo["data_uri"], "sha256": ctx.memo["data_sha256"], "name": ctx.memo["data_name"]}


def predictions_summary(bucket: str, model: str, run_id: str, parts: int, shadow: bool) -> dict[str, Any]:
    """Where a run's published predictions are: ``predictions_uri`` (the part, or the run's
    prefix when there are several), ``shadow_predictions_uri`` (likewise, or None) and
    ``manifest_uri`` (the manifest that lists them; readers read through it)."""
    from stagewise.pipeline import scoring

    base = f"s3://{bucket}/{scoring.published_prefix(model, run_id)}"
    one = "part-00000.parquet"
    return {
        "predictions_uri": f"{base}/{one}" if parts == 1 else f"{base}/",
        "shadow_predictions_uri": (f"{base}/shadow/{one}" if parts == 1 else f"{base}/shadow/") if shadow else None,
        "manifest_uri": f"{base}/{scoring.MANIFEST}",
    }


def _local_source(ctx: RunContext) -> Path:
    """The input as a local file: the source path of a local run, else a verified download."""
    from stagewise.pipeline.scoring import local_input

    if not ctx.data_source.startswith("s3://") and Path(ctx.data_source).is_file():
        return Path(ctx.data_source)
    return local_input(ctx.objects, ctx.memo["data_uri"], ctx.memo["data_sha256"], ctx.memo["data_name"], ctx.workdir)


def challenger_observations(per_version: dict[Any, dict[str, Any]], serving: dict[str, Any]) -> dict[str, tuple[float | None, int]]:
    """What the rollout gates see for the challenger, as ``metric -> (value, samples)``: its
    realised ``SCORED_KEYS`` metrics on labelled rows (``r2``, ``rmse``, ``mae``; or ``precision``,
    ``recall``, ``logloss``, ``brier``), and ``<r2|precision|recall>_delta_vs_champion`` (its value
    minus the champion's in the same run). Empty when no challenger scored. Keys of
    ``per_version`` may be ints or strings (JSON)."""
    stats = {str(k): v for k, v in per_version.items()}
    ch, champ = serving.get("challenger"), serving.get("champion")
    if ch is None or str(ch) not in stats:
        return {}
    c = stats[str(ch)]
    keys = [k for k in SCORED_KEYS if k in c]
    obs: dict[str, tuple[float | None, int]] = {k: (c.get(k), c["labeled"]) for k in keys}
    base = stats.get(str(champ), {})
    for k in ("r2", "precision", "recall"):
        if c.get(k) is not None and base.get(k) is not None:
            obs[f"{k}_delta_vs_champion"] = (c[k] - base[k], min(c["labeled"], base["labeled"]))
    return obs


SCORED_KEYS = ("r2", "rmse", "mae", "precision", "recall", "logloss", "brier")
"""Metrics measured on scored rows that carry the label (regression: R², RMSE, MAE; classification:
precision and recall at the version's threshold, log loss, Brier score): the online gates' inputs."""


# -------------------------------------------------------------------------------------- monitor
def monitor(ctx: RunContext) -> dict[str, Any]:
    """Drift of the scored data against the baseline of each version that scored (PSI per feature
    on the baseline's decile bins, KS statistic D; thresholds from the spec's ``drift``). Drift
    over the spec's limit publishes an alert naming the features and their PSI."""
    d = ctx.spec.drift
    reports: dict[str, Any] = {}
    for number, counts in ctx.memo.get("drift_counts", {}).items():
        baseline = load_baseline(ctx, version_record(ctx, int(number)))
        if baseline is None:
            continue
        report = driftlib.evaluate(counts, baseline, int(number), d.psi_threshold, d.ks_threshold)
        reports[number] = report.to_dict()
    ctx.memo["drift"] = reports
    drifted = {v: r for v, r in reports.items() if r["drifted_share"] > d.max_drifted_share}
    if drifted:
        number, worst = max(drifted.items(), key=lambda kv: kv[1]["drifted_share"])
        features = [f for f in worst["features"] if f["drifted"]]
        ctx.memo["drift_alert"] = True
        serving = ctx.memo.get("serving") or {}
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
    return {
        "versions": {v: {"drifted_share": r["drifted_share"], "top": [(f["feature"], f["psi"]) for f in r["features"][:5]],
                         "drifted": [f["feature"] for f in r["features"] if f["drifted"]]} for v, r in reports.items()},
        "alert": bool(drifted),
    }


# -------------------------------------------------------------------------------------- rollout
def rollout(ctx: RunContext) -> dict[str, Any]:
    """The rollout controller: count this scoring run against the rollout in progress, evaluate
    its gates on the challenger's observations, and advance, hold or roll back (alerting on a
    rollback). Idempotent per run id.

    Evidence is only what the challenger did not train on: the score step measured it on its
    routed labelled rows outside its training split. A run over the very data the challenger was
    trained on (same sha256: the run that registered it) is not evidence at all: its rows outside
    training are the holdout already used offline (for a classifier also to choose the threshold),
    so the rollout holds and the run does not count toward the bake (a failed drift gate still
    rolls back)."""
    if ctx.memo.get("rollout_id") is None:
        return {"outcome": "no_rollout", "serving": ctx.memo.get("serving")}
    d = ctx.spec.drift
    challenger = str(ctx.memo["serving"]["challenger"])
    report = ctx.memo.get("drift", {}).get(challenger)
    extra, hold = (), None
    observations = ctx.memo["observations"]
    trained_on = version_record(ctx, int(challenger)).lineage.get("data_sha256")
    if trained_on and trained_on == ctx.memo.get("data_sha256"):
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
    ctx.memo["decision"] = decision.outcome
    before = ctx.memo["serving"]
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
    return decision.to_dict() | {"before": before}


# -------------------------------------------------------------------------------------- publish
def run_metrics(ctx: RunContext, succeeded: bool) -> list[m.Datum]:
    """The CloudWatch data of a run, from what its steps left in ``ctx.memo`` and ``ctx.durations``."""
    env, model = ctx.settings.environment, ctx.spec.name
    new = m.dimensions(env, model, ctx.memo.get("version"))
    data: list[m.Datum] = []
    val = ctx.memo.get("validation")
    if val:
        data += [
            m.Datum(m.ROWS_VALIDATED, val["rows"], "Count", new),
            m.Datum(m.EXPECTATIONS_FAILED, val["failed"], "Count", new),
            m.Datum(m.VALIDATION_SUCCESS, 1.0 if val["success"] else 0.0, "None", new),
        ]
    for key, name in m.HOLDOUT_METRICS.items():
        if key in ctx.memo.get("metrics", {}):
            data.append(m.Datum(name, ctx.memo["metrics"][key], "None", new))
    for number, stats in ctx.memo.get("per_version", {}).items():
        dims = m.dimensions(env, model, number)
        if not stats.get("shadow"):
            data.append(m.Datum(m.ROWS_SCORED, stats["rows"], "Count", dims))
        if stats.get("mean_prediction") is not None:
            data.append(m.Datum(m.MEAN_PREDICTION, stats["mean_prediction"], "None", dims))
        for key, name in m.SCORED_METRICS.items():
            if stats.get(key) is not None:
                data.append(m.Datum(name, stats[key], "None", dims))
    for number, weight in ctx.memo.get("weights", {}).items():
        data.append(m.Datum(m.TRAFFIC_WEIGHT, weight, "Percent", m.dimensions(env, model, number)))
    run = m.model_dimensions(env, model)
    for number, report in ctx.memo.get("drift", {}).items():
        dims = m.dimensions(env, model, int(number))
        data.append(m.Datum(m.DRIFTED_FEATURE_SHARE, report["drifted_share"], "None", dims))
        for f in report["features"]:
            data.append(m.Datum(m.FEATURE_PSI, f["psi"], "None", {**dims, "Feature": f["feature"]}))
            if f["ks"] is not None:
                data.append(m.Datum(m.FEATURE_KS, f["ks"], "None", {**dims, "Feature": f["feature"]}))
    if ctx.memo.get("drift_alert"):
        data.append(m.Datum(m.DRIFT_ALERTS, 1, "Count", run))
    sent = [a for a in ctx.memo.get("alerts", []) if "message_id" in a]
    if sent:
        data.append(m.Datum(m.ALERTS_SENT, len(sent), "Count", run))
    if ctx.memo.get("decision") == "rolled_back":
        data.append(m.Datum(m.ROLLBACKS, 1, "Count", run))
    if val and not val["success"]:
        data.append(m.Datum(m.VALIDATION_FAILED, 1, "Count", run))
    for step, seconds in ctx.durations.items():
        data.append(m.Datum(m.STEP_DURATION, seconds, "Seconds", {**new, "Step": step}))
    data.append(m.Datum(m.PIPELINE_SUCCEEDED if succeeded else m.PIPELINE_FAILED, 1, "Count", run))
    return data


def publish(ctx: RunContext) -> dict[str, Any]:
    """Send the run's metrics to CloudWatch (namespace ``Stagewise``)."""
    failpoint("publish.before-metrics")
    result = m.publish(ctx.clients.client("cloudwatch"), run_metrics(ctx, succeeded=True), ctx.resources.metrics_namespace)
    return {"namespace": ctx.resources.metrics_namespace, "datapoints": result.sent, "dropped": result.dropped, "calls": result.calls}


def _version(dist: str) -> str:
    try:
        return package_version(dist)
    except Exception:  # a distribution may be installed under another name (xgboost-cpu)
        mod = importlib.import_module(dist)
        return getattr(mod, "__version__", "unknown")
