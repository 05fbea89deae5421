"""The model code of the pipeline: feature matrix, XGBoost training, holdout metrics, gates,
baseline statistics and scoring. Pure functions on DataFrames; no AWS here.

PII columns never enter this module's outputs: ``feature_matrix`` selects only the spec's
features, and predictions carry only the id column, the prediction and the version.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.metrics import (
    average_precision_score, brier_score_loss, log_loss, mean_absolute_error, mean_squared_error, precision_recall_curve,
    r2_score, roc_auc_score,
)

from stagewise.pipeline.spec import GateSpec, ModelSpec
from stagewise.platform.contract import native_code, sigterm_checkpoint
from stagewise.registry import gates as gatelib
from stagewise.registry.records import Gate, GateResult
BASELINE_QUANTILES = tuple(np.round(np.linspace(0, 1, 11), 2))  # deciles: PSI bins (issue: drift)
BASELINE_SAMPLE = 5_000  # values kept per numeric feature for KS tests


def feature_matrix(df: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The model input: the spec's features in spec order, typed for XGBoost.

    Categorical features become ``pd.Categorical`` with the spec's category list (so codes are the
    same in training and scoring); booleans become int8; integers int64; floats float64.

    Returns:
        DataFrame of ``len(df)`` rows and one column per feature (no id, PII or target).

    Raises:
        KeyError: a feature column is missing.
    """
    out = {}
    for f in spec.features:
        col = df[f.name]
        if f.type == "categorical":
            out[f.name] = _categorical(col, list(f.categories or ()))
        elif f.type == "boolean":
            out[f.name] = col.astype("int8")
        elif f.type == "integer":
            out[f.name] = col.astype("int64")
        else:
            out[f.name] = col.astype("float64")
    return pd.DataFrame(out, index=df.index, copy=False)


def _categorical(col: pd.Series, categories: list[str]) -> pd.Categorical:
    """``pd.Categorical(col, categories=categories)``: values outside the list become NaN."""
    return pd.Categorical.from_codes(category_codes(col, categories), categories=categories)


def category_strings(col: pd.Series) -> pd.Series:
    """A number-coded categorical column as the canonical strings the spec's categories are kept
    in (``stagewise.pipeline.spec.category_string``: ``1`` and ``1.0`` -> ``"1"``, ``2.5`` ->
    ``"2.5"``); nulls stay null. Columns of any other dtype are returned as they are."""
    if pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col):
        return col
    values = col.to_numpy(dtype="float64", na_value=np.nan)
    whole = np.isfinite(values) & (values == np.round(values))
    out = np.where(whole, np.char.mod("%d", np.where(whole, values, 0).astype("int64")).astype(object), None)
    other = np.isfinite(values) & ~whole
    if other.any():
        out[other] = [repr(float(v)) for v in values[other]]
    return pd.Series(out, index=col.index, name=col.name, dtype=object)


def conform(df: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The input read the way the spec declares it, before validation and modelling:

    * a categorical feature stored as numbers (a survey's occupation codes 1-6) becomes the
      canonical strings of its spec categories (``category_strings``);
    * an integer feature stored as floats (a CSV column with ``1.0``, a Parquet double) becomes
      int64 when every value is a whole number and none is null; otherwise it is left for the
      type expectation to report.

    Returns ``df`` itself when nothing changes, else a shallow copy with those columns replaced.
    """
    changed: dict[str, pd.Series] = {}
    for f in spec.features:
        if f.name not in df.columns or isinstance(df[f.name], pd.DataFrame):  # missing or duplicated: validation says so
            continue
        col = df[f.name]
        if f.type == "categorical" and pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            changed[f.name] = category_strings(col)
        elif f.type == "integer" and pd.api.types.is_float_dtype(col):
            values = col.to_numpy(dtype="float64", na_value=np.nan)
            if len(values) and np.isfinite(values).all() and (values == np.round(values)).all() and np.abs(values).max() < 2**53:
                changed[f.name] = pd.Series(values.astype("int64"), index=col.index, name=col.name)
    if not changed:
        return df
    out = df.copy(deep=False)
    for name, col in changed.items():
        out[name] = col
    return out


def prepare(df: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """The input as validation and training read it: the spec's ``ignored_columns`` dropped (e.g.
    another model's label), then ``conform``."""
    ignored = [c for c in spec.ignored_columns if c in df.columns]
    return conform(df.drop(columns=ignored) if ignored else df, spec)


def category_codes(col: pd.Series, categories: list[str]) -> np.ndarray:
    """Position of each value of ``col`` in ``categories``, -1 for nulls and values not in the
    list; shape (n,), int32. Looked up in Arrow (``pyarrow.compute.index_in``, a hash lookup in
    C++) when the column holds strings, ~15x faster than pandas' indexer on a million rows;
    a number-coded column is looked up by its canonical strings (``category_strings``); other
    columns (mixed Python objects, categoricals) go through ``pd.Categorical``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    col = category_strings(col)
    try:
        arr = pa.array(col, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed Python objects: pandas handles them
        arr = None
    if arr is None or not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        return pd.Categorical(col, categories=categories).codes.astype("int32")
    codes = pc.index_in(arr, value_set=pa.array(categories, arr.type)).fill_null(-1)
    return codes.to_numpy(zero_copy_only=False).astype("int32")


class _Rounds(xgb.callback.TrainingCallback):
    """After each boosting round: raise a SIGTERM held while XGBoost ran native code
    (``contract.native_code``), then report progress."""

    def __init__(self, report: Callable[[int, int], None] | None, total: int) -> None:
        self.report, self.total = report, total

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        sigterm_checkpoint()
        if self.report is not None:
            self.report(epoch + 1, self.total)
        return False


def model_class(task: str) -> type:
    """``xgb.XGBClassifier`` for ``classification``, else ``xgb.XGBRegressor``."""
    return xgb.XGBClassifier if task == "classification" else xgb.XGBRegressor


def estimator(spec: ModelSpec, progress: Callable[[int, int], None] | None = None, n_jobs: int | None = None) -> xgb.XGBModel:
    """The unfitted estimator of ``spec``: ``model_class(spec.task)`` with the spec's hyperparameters
    (``tree_method`` defaults to ``hist``), categorical support, the thread limit (the spec's, else
    ``n_jobs``; None: all cores) and a callback that reports ``progress(done_rounds, total_rounds)``
    and raises a held SIGTERM after each boosting round."""
    params = {"tree_method": "hist", **{k: v for k, v in spec.xgboost.items() if k not in ("n_jobs", "nthread")}}
    total = int(params.get("n_estimators", 100))
    return model_class(spec.task)(**params, enable_categorical=True, n_jobs=spec.threads or n_jobs, callbacks=[_Rounds(progress, total)])


def train_model(
    X: pd.DataFrame, y: np.ndarray, spec: ModelSpec, progress: Callable[[int, int], None] | None = None, n_jobs: int | None = None
) -> xgb.XGBModel:
    """Fit an XGBoost regressor (or, for a classification spec, a binary classifier on 0/1 labels)
    with the spec's hyperparameters (``tree_method`` defaults to ``hist``).

    Args:
        X: ``feature_matrix`` output, shape (n, n_features).
        y: target, shape (n,), float.
        progress: called as ``progress(done_rounds, total_rounds)`` after each boosting round.
        n_jobs: threads when the spec sets no limit (``xgboost.n_jobs``; default: all cores).
    """
    model = estimator(spec, progress, n_jobs)
    with native_code():  # building the DMatrix calls back into Python: a SIGTERM waits for the next round
        model.fit(X, y.astype("int64") if spec.task == "classification" else y)
    model.set_params(callbacks=None)
    return model


def predict(model: xgb.XGBModel, X: pd.DataFrame, spec: ModelSpec) -> np.ndarray:
    """Predictions as float64: a regressor's clipped to the target's declared range (e.g. [0, 1]);
    a classifier's probability of the positive class (label 1)."""
    with native_code():  # a SIGTERM during XGBoost's native prediction is raised when it returns
        if spec.task == "classification":
            return model.predict_proba(X)[:, 1].astype("float64")
        pred = model.predict(X).astype("float64")
    lo = spec.target.min if spec.target.min is not None else -np.inf
    hi = spec.target.max if spec.target.max is not None else np.inf
    return np.clip(pred, lo, hi)


def holdout_metrics(y_true: np.ndarray, y_pred: np.ndarray, task: str = "regression",
                    threshold: float | None = None) -> dict[str, float]:
    """Holdout metrics from scikit-learn's metric functions, with ``samples``.

    Regression: ``r2``, ``rmse``, ``mae``. Classification (``y_pred`` the probability of label 1):
    ``pr_auc`` (average precision), ``roc_auc``, ``logloss``, ``brier``; with a ``threshold``
    also ``precision`` and ``recall`` of ``y_pred >= threshold``. (AUCs are NaN-free: a holdout
    with one class only gives 0.0 PR-AUC and 0.5 ROC-AUC.)
    """
    if task == "classification":
        y = np.asarray(y_true).astype("int64")
        both = len(np.unique(y)) == 2
        out = {
            "pr_auc": float(average_precision_score(y, y_pred)) if both else 0.0,
            "roc_auc": float(roc_auc_score(y, y_pred)) if both else 0.5,
            "logloss": float(log_loss(y, np.clip(y_pred, 1e-15, 1 - 1e-15), labels=[0, 1])),
            "brier": float(brier_score_loss(y, y_pred)),
        }
        if threshold is not None:
            out.update(confusion_rates(*confusion(y, y_pred, threshold)))
        return out | {"samples": float(len(y))}
    return {
        "r2": float(r2_score(y_true, y_pred)),
        "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "samples": float(len(y_true)),
    }


def confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """``(tp, fp, fn, tn)`` of the decision ``p >= threshold`` against 0/1 labels ``y``."""
    yes, pos = np.asarray(p) >= threshold, np.asarray(y).astype(bool)
    return int((yes & pos).sum()), int((yes & ~pos).sum()), int((~yes & pos).sum()), int((~yes & ~pos).sum())


def confusion_rates(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """``precision`` = tp / (tp + fp) and ``recall`` = tp / (tp + fn) (0.0 when undefined)."""
    return {"precision": tp / (tp + fp) if tp + fp else 0.0, "recall": tp / (tp + fn) if tp + fn else 0.0}


def choose_threshold(y: np.ndarray, p: np.ndarray, min_recall: float) -> float:
    """The decision threshold with the best precision among those whose recall is at least
    ``min_recall`` (scikit-learn's ``precision_recall_curve`` over the holdout; ties go to the
    higher threshold). When no threshold reaches the recall, the lowest one (flag everything that
    has any probability)."""
    precision, recall, thresholds = precision_recall_curve(np.asarray(y).astype("int64"), p)
    ok = recall[:-1] >= min_recall
    if not ok.any():
        return float(thresholds.min())
    best = np.flatnonzero(ok & (precision[:-1] == precision[:-1][ok].max()))
    return float(thresholds[best.max()])


def registry_gates(gates: tuple[GateSpec, ...]) -> tuple[Gate, ...]:
    """The spec's gates as registry ``Gate`` records (gates are data, stored with the rollout)."""
    return tuple(Gate(**g.model_dump()) for g in gates)


def evaluate_gates(gates: tuple[GateSpec, ...], metrics: dict[str, float], samples: int) -> list[GateResult]:
    """Evaluate offline gates on holdout ``metrics`` computed on ``samples`` rows (see
    ``stagewise.registry.gates.evaluate`` for pass / fail / inconclusive)."""
    return gatelib.evaluate(registry_gates(gates), {k: (v, samples) for k, v in metrics.items()})


def baseline_statistics(X: pd.DataFrame, spec: ModelSpec, predictions: np.ndarray | None = None, seed: int = 0) -> dict[str, Any]:
    """Per-feature statistics of the training data, kept with the version for later drift checks.

    Numeric features: count, null_fraction, mean, std, min, max, decile edges (``quantiles``, the
    PSI bins) and a sample of up to ``BASELINE_SAMPLE`` values (for the two-sample KS statistic).
    Categorical features: count, null_fraction and the share of each category.

    Returns:
        ``{"features": {name: stats}, "rows": n, "predictions": stats-or-None}`` (JSON-ready).
    """
    rng = np.random.default_rng(seed)
    feats: dict[str, Any] = {}
    for f in spec.features:
        col = X[f.name]
        nulls = float(col.isna().mean())
        if f.type == "categorical":
            shares = col.value_counts(normalize=True, dropna=True)
            feats[f.name] = {
                "type": f.type, "count": int(col.notna().sum()), "null_fraction": nulls,
                "shares": {str(k): float(shares.get(k, 0.0)) for k in (f.categories or ())},
            }
        else:
            feats[f.name] = {"type": f.type, "null_fraction": nulls, **_numeric_stats(col.to_numpy(dtype="float64"), rng)}
    out: dict[str, Any] = {"rows": int(len(X)), "features": feats, "predictions": None}
    if predictions is not None:
        out["predictions"] = _numeric_stats(np.asarray(predictions, dtype="float64"), rng)
    return out


def _numeric_stats(values: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return {"count": 0}
    sample = v if v.size <= BASELINE_SAMPLE else rng.choice(v, BASELINE_SAMPLE, replace=False)
    return {
        "count": int(v.size),
        "mean": float(v.mean()),
        "std": float(v.std()),
        "min": float(v.min()),
        "max": float(v.max()),
        "quantiles": [float(q) for q in np.quantile(v, BASELINE_QUANTILES)],
        "sample": [float(x) for x in np.sort(sample)],
    }


def feature_importance(model: xgb.XGBModel) -> dict[str, float]:
    """Total gain per feature, normalised to sum to 1, sorted high to low."""
    gain = model.get_booster().get_score(importance_type="total_gain")
    total = sum(gain.values()) or 1.0
    return dict(sorted(((k, v / total) for k, v in gain.items()), key=lambda kv: -kv[1]))
