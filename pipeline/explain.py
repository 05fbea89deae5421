"""Explain one published prediction: which version made it, and each feature's contribution.

``explain`` finds the row of one entity (a customer, a house: the spec's ``entity``) in a run's
published predictions (by the keyed hash of the id, ``stagewise.platform.runtime.idhash``), reads its
features from the run's input (the manifest names it; streamed to a local cache, sha256
verified), and asks XGBoost for the SHAP contributions of the serving version's model
(``Booster.predict(pred_contribs=True)``: Lundberg et al., "Consistent Individualized Feature
Attribution for Tree Ensembles", 2018 — TreeSHAP, exact for trees). The contributions plus the
bias add up to the model's raw output; the served prediction is that output clipped to the target's
declared range (``modeling.predict``), or for a classifier the logistic function of it (raw output
and contributions are then log-odds) together with the version's decision at its threshold.
Beside each contribution: where the value sits in the version's training data (percentile of the
baseline sample for a numeric feature, the category's training share for a categorical one).
The spec is the one the serving version was trained with (``spec_of``), so a model trained from a
user's own spec file is explained from its registered name alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stagewise.pipeline import modeling, scoring, splitting
from stagewise.pipeline.inputs import is_parquet, local_input
from stagewise.pipeline.spec import ModelSpec
from stagewise.platform.contract import ExitCode, StagewiseError
from stagewise.pipeline.version_files import load_artifact, load_baseline
from stagewise.platform.runtime.objects import ObjectStore
from stagewise.platform.runtime.idhash import hash_ids
from stagewise.registry.records import VersionRecord


class ExplainError(StagewiseError, LookupError):
    """Nothing to explain: the id is not in the run (the message says which). Exit 4."""

    exit_code = ExitCode.BAD_INPUT
    hint = "check the id against the input file (ids as written there); --run RUN_ID explains another run"


class NoPublishedRun(ExplainError):
    """The model (or the run asked for) has no published predictions. Exit 4."""

    hint = "score the model first: stagewise run / stagewise score"


@dataclass(frozen=True)
class Contribution:
    """One feature's share of a prediction.

    Attributes:
        feature: the feature's name.
        value: the row's value (None when missing).
        contribution: the SHAP value, in target units (for engagement: share of days active).
        percentile: numeric features: percent of the version's training sample at or below the value.
        training_share: categorical features: share of training rows in the row's category.
    """

    feature: str
    value: Any
    contribution: float
    percentile: float | None = None
    training_share: float | None = None


@dataclass(frozen=True)
class Explanation:
    """Why one entity got a prediction.

    Attributes:
        model, run_id: what was explained.
        entity, id_column, id: what a row is about (``customer``), the id column and the id given.
        version: the version that served the entity in that run.
        prediction: the published prediction (float).
        raw: the model's raw output, ``bias + sum(contributions)``; ``prediction`` is ``raw`` clipped
            to the target's range (regression) or ``1 / (1 + exp(-raw))`` (classification: log-odds).
        bias: the expected output over the training data (SHAP's base value).
        in_training: the serving version's split put this row on its training side (its
            prediction is not evidence of how the version does on unseen rows).
        threshold, decision: a classifier version's decision threshold and whether the prediction
            is at or above it (None for a regressor).
        contributions: every feature, largest absolute contribution first.
    """

    model: str
    run_id: str
    entity: str
    id_column: str
    id: str
    version: int
    prediction: float
    raw: float
    bias: float
    in_training: bool
    threshold: float | None = None
    decision: bool | None = None
    contributions: list[Contribution] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the id also under the id column's own name, e.g. ``customer_id``)."""
        return {**asdict(self), self.id_column: self.id}


def published_runs(objects: ObjectStore, bucket: str, model: str) -> list[str]:
    """Run ids of ``model`` with published predictions, newest first (run ids sort by time)."""
    prefix = f"predictions/{model}/run="
    runs = []
    for page in objects.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        runs += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
    return sorted(runs, reverse=True)


def latest_manifest(objects: ObjectStore, bucket: str, model: str, run_id: str | None = None) -> dict[str, Any]:
    """The manifest of ``run_id`` or of the newest run that published (one that died before its
    manifest is skipped).

    Raises:
        ExplainError: the run (or the model) has no published predictions.
    """
    for candidate in [run_id] if run_id else published_runs(objects, bucket, model):
        manifest = scoring.read_manifest(objects, bucket, model, candidate)
        if manifest is not None:
            return manifest
    raise NoPublishedRun(f"run {run_id} of {model!r} has no published predictions" if run_id else
                       f"model {model!r} has no published predictions yet: score with `stagewise run` first")


def find_prediction(objects: ObjectStore, bucket: str, manifest: dict[str, Any], id_hash: str, column: str) -> tuple[int, float]:
    """``(version, prediction)`` of the row whose ``column`` is ``id_hash``, reading each part
    with a row filter.

    Raises:
        ExplainError: no row has that hash.
    """
    import io

    import pyarrow.parquet as pq

    for part in manifest["parts"]:
        table = pq.read_table(io.BytesIO(objects.get_bytes(bucket, part["key"])), filters=[(column, "==", id_hash)])
        if table.num_rows:
            row = table.to_pylist()[0]
            return int(row["model_version"]), float(row["prediction"])
    raise ExplainError(f"not in run {manifest['run_id']} of {manifest['model']!r}")


def input_row(objects: ObjectStore, manifest: dict[str, Any], spec: ModelSpec, entity_id: str, cache: Path) -> pd.DataFrame:
    """The entity's row of the run's input (one row, the input's columns, read as the spec
    declares them: ``modeling.conform``).

    Raises:
        ExplainError: the manifest names no input, or the input has no such id.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = manifest.get("data")
    if not data:
        raise ExplainError(f"run {manifest['run_id']} was published before manifests named their input; explain a newer run")
    path = local_input(objects, data["uri"], data["sha256"], data["name"], cache)
    if is_parquet(path, data["name"]):
        kind = pq.read_schema(path).field(spec.id_column).type
        try:
            key: Any = int(entity_id) if pa.types.is_integer(kind) else float(entity_id) if pa.types.is_floating(kind) else entity_id
        except ValueError as e:
            raise ExplainError(f"{spec.id_column} is a number in the input of run {manifest['run_id']}, not {entity_id!r}") from e
        frame = pq.read_table(path, filters=[(spec.id_column, "==", key)]).to_pandas()
    else:
        frame = pd.read_csv(path, dtype={spec.id_column: str})
        frame = frame[frame[spec.id_column] == entity_id]
    if frame.empty:
        raise ExplainError(f"{spec.entity} {entity_id!r} is not in the input of run {manifest['run_id']} ({data['uri']})")
    return modeling.conform(frame.head(1).reset_index(drop=True), spec)


def contributions(model: Any, row: pd.DataFrame, spec: ModelSpec) -> tuple[np.ndarray, float, float]:
    """``(per-feature SHAP values in spec order, bias, raw output)`` of one row (XGBoost TreeSHAP)."""
    import xgboost as xgb

    X = modeling.feature_matrix(row, spec)
    booster = model.get_booster()
    dm = xgb.DMatrix(X, enable_categorical=True)
    contrib = booster.predict(dm, pred_contribs=True)[0].astype("float64")
    raw = float(booster.predict(dm, output_margin=True)[0])
    return contrib[:-1], float(contrib[-1]), raw


def position(baseline: dict[str, Any] | None, feature: str, value: Any) -> dict[str, float | None]:
    """Where ``value`` sits in the version's training data (``percentile`` or ``training_share``)."""
    stats = (baseline or {}).get("features", {}).get(feature)
    if not stats or value is None or (isinstance(value, float) and math.isnan(value)):
        return {}
    if stats.get("type") == "categorical":
        return {"training_share": float(stats["shares"].get(str(value), 0.0))}
    sample = np.asarray(stats.get("sample") or [], dtype="float64")
    if sample.size == 0:
        return {}
    return {"percentile": round(100.0 * np.searchsorted(sample, float(value), side="right") / sample.size, 1)}


def explain(objects: ObjectStore, bucket: str, model: str, spec_of: Any, version_of: Any, salt: bytes, entity_id: str,
            cache: Path, run_id: str | None = None) -> Explanation:
    """Explain the prediction ``model`` published for the row with id ``entity_id`` in ``run_id``
    (default: the newest published run).

    Args:
        spec_of: ``spec_of(version_record) -> ModelSpec``: the spec the serving version was trained
            with (``spec_store.version_spec``, or the spec file the user gave).
        version_of: ``version_of(number) -> VersionRecord`` (the registry's ``get_version``).
        salt: the id hash's salt (``stagewise.platform.runtime.idhash.read_id_salt``).
        cache: folder for the downloaded input.

    Raises:
        ExplainError: no published run, or the id is not in it.
        StorageError: the input is missing or differs from its recorded sha256.
        ChecksumMismatch: the version's artifact or baseline differs from its recorded sha256.
    """
    manifest = latest_manifest(objects, bucket, model, run_id)
    id_hash = str(hash_ids([entity_id], salt)[0])
    column = (manifest.get("summary", {}).get("id_hash") or {}).get("column")
    try:
        number, published = find_prediction(objects, bucket, manifest, id_hash, column or "")
    except ExplainError as e:
        raise ExplainError(f"{entity_id!r}: {e} (ids as written in the input)") from e
    version: VersionRecord = version_of(number)
    spec: ModelSpec = spec_of(version)
    fitted = load_artifact(objects, version, {})
    row = input_row(objects, manifest, spec, entity_id, cache)
    values, bias, raw = contributions(fitted, row, spec)
    baseline = load_baseline(objects, version)
    items = []
    for f, c in zip(spec.features, values):
        v = row.at[0, f.name]
        v = None if v is None or (isinstance(v, float) and math.isnan(v)) else (v.item() if hasattr(v, "item") else v)
        items.append(Contribution(f.name, v, float(c), **position(baseline, f.name, v)))
    items.sort(key=lambda c: -abs(c.contribution))
    trained = bool(splitting.in_training(splitting.SplitDefinition.from_lineage(version.lineage), row)[0])
    threshold = scoring.decision_threshold(version, spec)
    return Explanation(model, manifest["run_id"], spec.entity, spec.id_column, entity_id, number, published, raw, bias, trained,
                       threshold, None if threshold is None else published >= threshold, items)
